"""The whole Alertmanager path (issue 20): a real Prometheus evaluates the repository's rule file
against a real service, and a real Alertmanager, started by docker/alertmanager/render.sh with
the repository's alertmanager.yml and its receiver from the environment, delivers the alert to a
local HTTP receiver within a bounded time.

Debian's ``prometheus`` and ``prometheus-alertmanager`` binaries (.ci/system-packages), on
127.0.0.1 with ephemeral ports; skipped when absent unless SHARPWATCH_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import ServerThread, unavailable
from tests.service._receiver import Receiver

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docker" / "prometheus" / "rules.yml"
RENDER = REPO / "docker" / "alertmanager" / "render.sh"
DEADLINE = 90.0  # scrape 1 s + evaluation 1 s + the config's group_wait 10 s, on a loaded machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(name, f"Debian package {package} (.ci/system-packages)")
    assert path is not None
    return path


@contextmanager
def _process(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_firing_rule_reaches_the_receiver_through_alertmanager(tmp_path: Path) -> None:
    prometheus = _binary("prometheus", "prometheus")
    alertmanager = _binary("prometheus-alertmanager", "prometheus-alertmanager")
    database = f"sqlite:///{tmp_path / 'am.db'}"
    engine = make_engine(database)
    upgrade(engine)
    engine.dispose()
    app = create_app(Settings(database_url=database), registry=CollectorRegistry())
    am_port, prom_port = _free_port(), _free_port()
    with Receiver() as receiver, ServerThread(app) as service:
        http = httpx.Client(base_url=service.url, timeout=30)
        run = http.post(
            "/api/v1/runs",
            json={"name": "am-run", "project": "am-proj", "group_size": 8, "kl_beta": 0.04},
        ).json()
        record = {"step": 0, "metrics": {"entropy": 0.5, "loss": None}, "non_finite": ["loss"]}
        assert http.post(f"/api/v1/runs/{run['id']}/steps", json={"steps": [record]}).is_success
        http.close()

        env = {
            **os.environ,
            "ALERTMANAGER_WEBHOOK_URL": receiver.url,
            "ALERTMANAGER_BIN": alertmanager,
            "ALERTMANAGER_RENDER_DIR": str(tmp_path / "am-render"),
        }
        am_args = [
            "sh",
            str(RENDER),
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "sharpwatch",
                    "static_configs": [{"targets": [service.url.removeprefix("http://")]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        prom_args = [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ]
        start = time.monotonic()
        with (
            _process(am_args, tmp_path / "alertmanager.log", env),
            _process(prom_args, tmp_path / "prometheus.log"),
        ):
            alerts: list[dict[str, object]] = []
            while time.monotonic() - start < DEADLINE:
                alerts = [
                    alert
                    for request in receiver.received()
                    for alert in request.json()["alerts"]
                    if alert["labels"]["alertname"] == "SharpwatchNonFinite"
                ]
                if alerts:
                    break
                time.sleep(0.5)
            logs = (tmp_path / "alertmanager.log").read_text(errors="replace")
            assert alerts, f"no alert within {DEADLINE} s; alertmanager log:\n{logs}"
            assert _ready(f"http://127.0.0.1:{am_port}/-/ready")
    labels = alerts[0]["labels"]
    assert isinstance(labels, dict)
    assert labels["project"] == "am-proj"
    assert labels["run"] == "am-run"
    assert labels["severity"] == "critical"
    assert alerts[0]["status"] == "firing"
    # The rendered config holds the receiver; the committed one keeps its placeholder.
    assert receiver.url in (tmp_path / "am-render" / "alertmanager.yml").read_text()
    assert receiver.url not in (REPO / "docker" / "alertmanager" / "alertmanager.yml").read_text()
