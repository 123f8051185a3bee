"""The Host allow-list (issue 14, failure 8): with authentication off on loopback, a page
served from a DNS-rebinding name (it resolves to 127.0.0.1) must not read or stop runs."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from service.trusted_hosts import HostPolicy, host_name
from tests._servers import ServerThread
from tests.service._helpers import run_body


def test_a_rebinding_host_is_refused_before_anything_runs(sqlite_server: ServerThread) -> None:
    url = sqlite_server.url
    run = httpx.post(f"{url}/api/v1/runs", json=run_body("victim")).json()
    evil = {"host": f"attacker.example:{sqlite_server.port}"}
    read = httpx.get(f"{url}/api/v1/runs", headers=evil)
    assert read.status_code == 400
    assert read.json()["field"] == "host"
    assert "SHARPWATCH_TRUSTED_HOSTS" in read.json()["detail"]
    stop = httpx.post(
        f"{url}/api/v1/runs/{run['id']}/commands",
        json={"kind": "early_stop", "reason": "rebinding"},
        headers=evil,
    )
    assert stop.status_code == 400
    history = httpx.get(f"{url}/api/v1/runs/{run['id']}/commands/history").json()
    assert history["items"] == []  # nothing was issued
    assert httpx.get(f"{url}/", headers=evil).status_code == 400  # the page itself too
    assert httpx.get(f"{url}/metrics", headers=evil).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]"])
def test_loopback_names_are_allowed_by_default(sqlite_server: ServerThread, host: str) -> None:
    headers = {"host": f"{host}:{sqlite_server.port}"}
    assert httpx.get(f"{sqlite_server.url}/api/v1/runs", headers=headers).status_code == 200


def test_health_probes_answer_any_host(sqlite_server: ServerThread) -> None:
    headers = {"host": "10.0.0.7:8000"}
    assert httpx.get(f"{sqlite_server.url}/healthz", headers=headers).status_code == 200


def test_a_deployment_names_its_hosts(tmp_path: object) -> None:
    settings = Settings(
        database_url="sqlite:///:memory:",
        trusted_hosts="sharpwatch.example.org, *.internal",  # type: ignore[arg-type]
    )
    assert settings.trusted_hosts == ("sharpwatch.example.org", "*.internal")
    policy = HostPolicy(settings.allowed_hosts)
    assert policy.allows("sharpwatch.example.org")
    assert policy.allows("a.b.internal")
    assert not policy.allows("internal")
    assert not policy.allows("localhost")  # replaced, not added to
    assert HostPolicy(["*"]).allows("anything")
    bound = Settings(database_url="sqlite:///:memory:", host="10.1.2.3", auth=True)
    assert "10.1.2.3" in bound.allowed_hosts  # the address it binds to
    with pytest.raises(ValueError, match="at least one host"):
        Settings(database_url="sqlite:///:memory:", trusted_hosts="")  # type: ignore[arg-type]


def test_a_configured_name_is_served(tmp_path: object) -> None:
    app = create_app(
        Settings(database_url="sqlite:///:memory:", trusted_hosts=("sw.example",)),
        registry=CollectorRegistry(),
    )
    with ServerThread(app) as server:
        ok = httpx.get(f"{server.url}/healthz", headers={"host": "sw.example"})
        assert ok.status_code == 200
        assert httpx.get(f"{server.url}/", headers={"host": "sw.example:80"}).status_code == 200
        # The bound address (127.0.0.1) stays allowed; the other loopback names are replaced.
        assert httpx.get(f"{server.url}/").status_code == 200
        assert httpx.get(f"{server.url}/", headers={"host": "localhost"}).status_code == 400


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LocalHost:8000", "localhost"),
        ("[::1]:8000", "::1"),
        ("::1", "::1"),
        ("example.org.", "example.org"),
        ("", ""),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name
