"""``sharpwatch dashboards push`` against a recording stand-in of the Grafana HTTP API on
127.0.0.1 (no real Grafana here): the exact calls, their paths and payloads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.grafana_push import (
    FOLDER_UID,
    POSTGRES_UID,
    PROMETHEUS_UID,
    dashboards_dir,
    load_dashboards,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeGrafana:
    """Records every request; answers like Grafana for the endpoints the push uses."""

    folders: set[str] = field(default_factory=set)
    datasources: set[str] = field(default_factory=set)
    fail_dashboards_with: int | None = None
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    authorizations: set[str] = field(default_factory=set)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, {"uid": uid}) if uid in self.folders else (404, {"message": "nf"})
        if method == "POST" and path == "/api/folders":
            self.folders.add(body["uid"])
            return 200, {"uid": body["uid"], "title": body["title"]}
        if method == "GET" and path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            found = uid in self.datasources
            return (200, {"uid": uid}) if found else (404, {"message": "Data source not found"})
        if method == "POST" and path == "/api/datasources":
            self.datasources.add(body["uid"])
            return 200, {"message": "Datasource added", "datasource": body}
        if method == "PUT" and path.startswith("/api/datasources/uid/"):
            return 200, {"message": "Datasource updated"}
        if method == "POST" and path == "/api/dashboards/db":
            if self.fail_dashboards_with:
                return self.fail_dashboards_with, {"message": "denied"}
            return 200, {"status": "success", "uid": body["dashboard"]["uid"], "version": 1}
        return 404, {"message": f"unexpected {method} {path}"}


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            fake.authorizations.add(self.headers.get("authorization", ""))
            status, payload = fake.handle(self.command, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve  # noqa: N815  (http.server names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _push(url: str, *extra: str) -> int:
    return main(
        ["dashboards", "push", "--grafana-url", url, "--token", "sa-token", *extra],
    )


def test_first_push_creates_folder_and_data_sources_then_overwrites_dashboards(
    grafana: tuple[str, FakeGrafana], capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = grafana
    assert _push(url, "--postgres-password", "reader-secret") == 0
    dashboards = load_dashboards(REPO / "dashboards")
    uids = [d["uid"] for d in dashboards]
    assert uids == ["sharpwatch-fleet", "sharpwatch-query-drilldown", "sharpwatch-run-health"]

    calls = [(method, path) for method, path, _ in fake.requests]
    assert calls == [
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("POST", "/api/folders"),
        ("GET", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("POST", "/api/datasources"),
        ("GET", f"/api/datasources/uid/{POSTGRES_UID}"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]
    assert fake.authorizations == {"Bearer sa-token"}
    bodies = [body for _, _, body in fake.requests]
    assert bodies[1] == {"title": "sharpwatch", "uid": FOLDER_UID}
    prometheus, postgres = bodies[3], bodies[5]
    assert prometheus["uid"] == PROMETHEUS_UID
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert postgres["uid"] == POSTGRES_UID
    assert postgres["type"] == "grafana-postgresql-datasource"
    assert postgres["jsonData"]["database"] == "sharpwatch"
    assert postgres["secureJsonData"] == {"password": "reader-secret"}
    for body, dashboard in zip(bodies[6:], dashboards, strict=True):
        assert body["overwrite"] is True
        assert body["folderUid"] == FOLDER_UID
        assert body["dashboard"]["uid"] == dashboard["uid"]
        assert body["dashboard"]["id"] is None
        assert body["dashboard"]["panels"] == dashboard["panels"]
    assert "dashboards ['sharpwatch-fleet'" in capsys.readouterr().out


def test_second_push_updates_in_place(grafana: tuple[str, FakeGrafana]) -> None:
    url, fake = grafana
    fake.folders.add(FOLDER_UID)
    fake.datasources.update({PROMETHEUS_UID, POSTGRES_UID})
    assert _push(url, "--prometheus-url", "http://prom.internal:9090") == 0
    calls = [(method, path) for method, path, _ in fake.requests]
    assert calls == [
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("GET", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("PUT", f"/api/datasources/uid/{PROMETHEUS_UID}"),
        ("GET", f"/api/datasources/uid/{POSTGRES_UID}"),
        ("PUT", f"/api/datasources/uid/{POSTGRES_UID}"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]
    assert fake.requests[2][2]["url"] == "http://prom.internal:9090"
    # No password given: the update keeps the one Grafana holds.
    assert "secureJsonData" not in fake.requests[4][2]


def test_skip_datasources_pushes_only_dashboards(grafana: tuple[str, FakeGrafana]) -> None:
    url, fake = grafana
    assert _push(url, "--skip-datasources", "--folder-uid", "team-rl") == 0
    calls = [(method, path) for method, path, _ in fake.requests]
    assert calls == [
        ("GET", "/api/folders/team-rl"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 3,
    ]
    assert {body["folderUid"] for _, _, body in fake.requests[2:]} == {"team-rl"}


def test_refusal_is_reported_not_raised(
    grafana: tuple[str, FakeGrafana], capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = grafana
    fake.fail_dashboards_with = 403
    assert _push(url) == 1
    assert "Grafana push failed" in capsys.readouterr().err


def test_token_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert main(["dashboards", "push", "--grafana-url", "http://127.0.0.1:9"]) == 2


def test_shipped_dashboards_are_found() -> None:
    assert dashboards_dir().resolve() == (REPO / "dashboards").resolve()
