"""A real Prometheus scrapes a real service fed by a real run, and every PromQL expression of
every dashboard (variables resolved to that run) returns data through Prometheus's HTTP API.

Prometheus is Debian's ``prometheus`` binary (.ci/system-packages), run here on 127.0.0.1 with an
ephemeral port, a temporary storage directory, a 1 s scrape interval and the repository's alert
rules; skipped when absent unless SHARPWATCH_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests._servers import ServerThread, unavailable
from tests.dashboards._grafana import dashboards, promql, substitute, targets
from trainer_hooks import SharpwatchClient

pytestmark = pytest.mark.slow

PROJECT = "e2e-proj"
RUN = "e2e-run"
GROUP = 8
QUERIES = 16
RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "rules.yml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(step: int, steps: int) -> dict[str, Any]:
    t = step / steps
    successes = [(step + 3 * i) % (GROUP + 1) for i in range(QUERIES)]
    return {
        "step": step,
        "metrics": {
            "entropy": 0.6 - 0.5 * t,
            "success_rate": sum(successes) / (GROUP * QUERIES),
            "degenerate_all_fail": sum(s == 0 for s in successes) / QUERIES,
            "degenerate_all_pass": sum(s == GROUP for s in successes) / QUERIES,
            "log_zprime_mean": 0.05 + 0.2 * t,
            "log_zprime_p90": 0.2 + 0.5 * t,
            "zprime_gt1_frac": 0.3 + 0.4 * t,
            "log_zprime_raw_mean": 0.02 + 0.1 * t,
            "log_zprime_raw_p90": 0.1 + 0.3 * t,
            "zprime_raw_gt1_frac": 0.2 + 0.3 * t,
            "reward_accuracy": 0.9 - 0.9 * t if step < steps - 1 else 0.005,
            "alpha": 1.0,
        },
        "queries": [
            {
                "query_id": f"q{i}",
                "group_size": GROUP,
                "successes": s,
                "entropy": 0.5 - 0.01 * i,
                "log_zprime": -0.3 + 0.05 * i,
            }
            for i, s in enumerate(successes)
        ],
    }


@pytest.fixture
def service_url(settings: Settings) -> Iterator[str]:
    app = create_app(settings, registry=CollectorRegistry())
    with ServerThread(app) as server:
        client = SharpwatchClient(server.url)
        client.register_run(RUN, project=PROJECT, group_size=GROUP, kl_beta=0.04)
        steps = 30
        with client:
            for step in range(steps):
                client.submit(_record(step, steps))
            assert client.flush(timeout=30)
        assert client.sent == steps
        yield server.url


@pytest.fixture
def prometheus(service_url: str, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        unavailable("Prometheus", "no prometheus binary (Debian package prometheus)")
    assert binary is not None
    target = service_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "sharpwatch", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = _free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    if process.returncode not in (0, -15):
        print(log_path.read_text())


def _query(http: httpx.Client, expr: str) -> list[dict[str, Any]]:
    response = http.get("/api/v1/query", params={"query": expr})
    assert response.status_code == 200, (expr, response.text)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _query_until_data(http: httpx.Client, expr: str, timeout: float = 20) -> list[dict[str, Any]]:
    """The expression's result once it has data: on a loaded machine a scrape can time out, and
    Prometheus then marks the target's series stale until the next good scrape."""
    deadline = time.monotonic() + timeout
    while True:
        result = _query(http, expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _wait_for_scrapes(http: httpx.Client, scrapes: int = 4, timeout: float = 60) -> None:
    """Until Prometheus has scraped the service successfully ``scrapes`` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = _query(http, 'sum_over_time(up{job="sharpwatch"}[1m])')
            if result and float(result[0]["value"][1]) >= scrapes:
                return
        except (httpx.TransportError, AssertionError):
            pass
        time.sleep(0.5)
    pytest.fail("Prometheus did not scrape the service in time")


def test_every_dashboard_promql_expression_returns_data(prometheus: str) -> None:
    with httpx.Client(base_url=prometheus, timeout=10) as http:
        _wait_for_scrapes(http)
        checked = 0
        for name, dashboard in dashboards().items():
            for where, target in targets(dashboard):
                if target["datasource"]["type"] != "prometheus":
                    continue
                expr = target["expr"]
                if target.get("variable"):
                    _check_variable(http, expr)
                    continue
                resolved = promql(expr, PROJECT, RUN)
                result = _query_until_data(http, resolved)
                assert result, f"{name} {where}: no data for {resolved}"
                checked += 1
        assert checked >= 40

        # The values are the run's: the newest step's entropy and the 16 queries of its histogram.
        run = f'project="{PROJECT}",run="{RUN}"'
        entropy_result = _query_until_data(http, f"sharpwatch_run_entropy_nats{{{run}}}")
        entropy = float(entropy_result[0]["value"][1])
        assert entropy == pytest.approx(0.6 - 0.5 * 29 / 30)
        buckets = _query_until_data(
            http, f"sharpwatch_run_query_success_rate_ratio_bucket{{{run}}}"
        )
        assert len(buckets) == 12
        inf = next(b for b in buckets if b["metric"]["le"] == "+Inf")
        assert float(inf["value"][1]) == QUERIES
        p_star_result = _query_until_data(http, f"sharpwatch_run_p_star_ratio{{{run}}}")
        p_star = float(p_star_result[0]["value"][1])
        assert p_star == pytest.approx(1 - 2 ** (-1 / GROUP))

        # The alert rules load and evaluate against these series without errors.
        groups = http.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == 7
        assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules


def _check_variable(http: httpx.Client, definition: str) -> None:
    """``label_values(metric{...}, label)`` as Grafana resolves it: the series API."""
    resolved = substitute(definition, {"project": PROJECT})
    inner = resolved.removeprefix("label_values(").removesuffix(")")
    metric, _, label = inner.rpartition(",")
    response = http.get(f"/api/v1/label/{label.strip()}/values", params={"match[]": metric.strip()})
    values = response.json()["data"]
    assert (PROJECT if label.strip() == "project" else RUN) in values, (definition, values)
    assert not any(isinstance(v, float) and math.isnan(v) for v in values)
