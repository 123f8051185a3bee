"""``/metrics``: run state read from the store at scrape time, bounded cardinality, the finished-run
grace period, a store outage, and several worker processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db.base import utcnow
from service.db.models import Alert, Command, Run
from service.detectors import RULE_NAMES, p_star
from service.query_histograms import LOG_ZPRIME_BOUNDS, SUCCESS_RATE_BOUNDS, summarize
from service.run_metrics import ALL_FAMILIES, COMMAND_KINDS, COMMAND_STATUSES
from service.schemas.steps import QueryIn
from service.settings import Settings
from tests._servers import postgres_url_or_skip, redis_url_or_skip, scratch_postgres_database
from tests.service._helpers import run_body, step_record

RUN_LABEL_NAMES = {"project", "run"}
ENUM_LABELS = {"rule", "severity", "kind", "status", "le"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by client_python's parser, keyed by name + labels."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = sample.value
    return out


def run_series(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("sharpwatch_run_")]


def value(text: str, name: str, **labels: str) -> float:
    parsed = samples(text)
    return parsed[(name, frozenset(labels.items()))]


def post_steps(client: TestClient, run_id: int, records: list[dict[str, Any]]) -> None:
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": records})
    assert response.status_code == 200, response.text


def test_exposition_carries_the_newest_step_of_every_run(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("run-a")).json()["id"]
    records = [
        step_record(s, n_queries=40, entropy=0.3 - 0.01 * s, degenerate_all_fail=0.25)
        for s in range(3)
    ]
    records[-1]["metrics"].update(
        log_zprime_mean=0.2, log_zprime_p90=0.9, zprime_gt1_frac=0.6, reward_accuracy=0.7
    )
    post_steps(client, run_id, records)
    text = client.get("/metrics").text
    run = {"project": "proj", "run": "run-a"}

    assert value(text, "sharpwatch_run_entropy_nats", **run) == pytest.approx(0.28)
    assert value(text, "sharpwatch_run_success_rate_ratio", **run) == pytest.approx(0.4)
    assert value(text, "sharpwatch_run_degenerate_all_fail_ratio", **run) == pytest.approx(0.25)
    assert math.isnan(value(text, "sharpwatch_run_degenerate_all_pass_ratio", **run))
    assert value(text, "sharpwatch_run_log_zprime_p90_nats", **run) == pytest.approx(0.9)
    assert value(text, "sharpwatch_run_zprime_gt1_ratio", **run) == pytest.approx(0.6)
    assert value(text, "sharpwatch_run_reward_accuracy_ratio", **run) == pytest.approx(0.7)
    assert value(text, "sharpwatch_run_p_star_ratio", **run) == pytest.approx(p_star(8))
    assert value(text, "sharpwatch_run_group_size", **run) == 8
    assert value(text, "sharpwatch_run_last_step", **run) == 2
    assert 0 <= value(text, "sharpwatch_run_last_step_age_seconds", **run) < 60
    assert value(text, "sharpwatch_run_alpha", **run) == pytest.approx(1.0)
    assert value(text, "sharpwatch_run_status", **run) == 0
    assert value(text, "sharpwatch_store_up") == 1
    assert value(text, "sharpwatch_exported_runs") == 1

    # The per-query histograms are the newest step's 40 queries, bucketed as at ingest.
    expected = summarize([QueryIn.model_validate(q) for q in records[-1]["queries"]])
    name = "sharpwatch_run_query_success_rate_ratio"
    for bound, count in zip(
        SUCCESS_RATE_BOUNDS, expected["success_rate"]["cumulative"], strict=True
    ):
        assert value(text, f"{name}_bucket", le=repr(bound), **run) == count
    assert value(text, f"{name}_bucket", le="+Inf", **run) == 40
    assert value(text, f"{name}_gcount", **run) == 40
    assert value(text, f"{name}_gsum", **run) == pytest.approx(expected["success_rate"]["sum"])
    name = "sharpwatch_run_query_log_zprime_nats"
    assert value(text, f"{name}_bucket", le="+Inf", **run) == 40
    assert value(text, f"{name}_bucket", le=repr(LOG_ZPRIME_BOUNDS[0]), **run) == 0

    # Every documented family is there, and no per-run series has a label beyond the allowed.
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {family.name for family in ALL_FAMILIES} <= names
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("sharpwatch_run_"):
                assert RUN_LABEL_NAMES <= set(sample.labels) <= RUN_LABEL_NAMES | ENUM_LABELS


def test_histogram_summary_buckets_are_cumulative_and_bounded() -> None:
    rows = [
        QueryIn(query_id=f"q{i}", group_size=8, successes=s, log_zprime=z)
        for i, (s, z) in enumerate([(0, -2.0), (0, 0.0), (8, 0.05), (4, 9.0), (1, None)])
    ]
    summary = summarize(rows)
    success = dict(
        zip(summary["success_rate"]["le"], summary["success_rate"]["cumulative"], strict=True)
    )
    assert success[0.0] == 2  # the all-fail groups
    assert success[0.2] == 3  # + 1/8
    assert success[0.5] == 4  # + 4/8
    assert success[0.999] == 4  # one all-pass group above
    assert summary["success_rate"]["count"] == 5
    zprime = dict(
        zip(summary["log_zprime"]["le"], summary["log_zprime"]["cumulative"], strict=True)
    )
    assert [zprime[-1.0], zprime[0.0], zprime[0.1], zprime[4.0]] == [1, 2, 3, 3]
    assert summary["log_zprime"]["count"] == 4  # the row without log Z' is not counted
    assert summary["log_zprime"]["sum"] == pytest.approx(7.05)


def test_series_stay_flat_as_queries_per_step_grow(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("wide")).json()["id"]
    counts = []
    for step, queries in enumerate((8, 512, 8192)):
        post_steps(client, run_id, [step_record(step, n_queries=queries)])
        counts.append(len(run_series(client.get("/metrics").text)))
    assert counts[0] == counts[1] == counts[2], counts


def test_series_grow_linearly_with_runs(client: TestClient) -> None:
    counts = []
    for n in range(1, 5):
        run_id = client.post("/api/v1/runs", json=run_body(f"run-{n}")).json()["id"]
        post_steps(client, run_id, [step_record(0, n_queries=16)])
        counts.append(len(run_series(client.get("/metrics").text)))
    per_run = counts[0]
    assert counts == [per_run * n for n in range(1, 5)]
    # 21 plain gauges (raw Z' x3 and alpha_pinned among them); enumerations are bounded:
    # 12 rules, 2 x 5 commands, 2 histograms of 12 buckets + 2.
    assert per_run == 21 + len(RULE_NAMES) + len(COMMAND_KINDS) * len(COMMAND_STATUSES) + 2 * 14


def _run(session: Session, name: str, **fields: Any) -> Run:
    run = Run(project="p", name=name, group_size=16, kl_beta=0.0, config={}, tags={}, **fields)
    session.add(run)
    session.commit()
    return run


def test_alerts_commands_verdict_and_collapse_step_come_from_the_store(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        run = _run(session, "r", verdict="critical", model_collapse_step=42, alpha=1.5)
        common: dict[str, Any] = {
            "run_id": run.id,
            "first_step": 1,
            "last_step": 1,
            "message": "m",
            "action": "a",
        }
        session.add_all(
            [
                Alert(rule="probe_decline", severity="warning", status="open", **common),
                Alert(rule="entropy_floor", severity="warning", status="open", **common),
                Alert(rule="zprime_pressure", severity="warning", status="resolved", **common),
            ]
        )
        for kind, status in [("early_stop", "applied"), ("adjust_alpha", "expired")] * 2 + [
            ("adjust_alpha", "pending")
        ]:
            session.add(
                Command(run_id=run.id, kind=kind, status=status, source="detector", reason="r")
            )
        session.commit()
    text = client.get("/metrics").text
    run_labels = {"project": "p", "run": "r"}

    def alerts(rule: str, severity: str) -> float:
        return value(text, "sharpwatch_run_open_alerts", rule=rule, severity=severity, **run_labels)

    assert alerts("probe_decline", "warning") == 1
    assert alerts("zprime_pressure", "warning") == 0  # resolved
    assert alerts("entropy_floor", "warning") == 1  # a per-run severity override is its own series
    assert alerts("entropy_floor", "critical") == 0  # the default severity stays listed
    assert alerts("non_finite", "critical") == 0

    def commands(kind: str, status: str) -> float:
        return value(text, "sharpwatch_run_commands", kind=kind, status=status, **run_labels)

    assert commands("early_stop", "applied") == 2
    assert commands("adjust_alpha", "expired") == 2
    assert commands("adjust_alpha", "pending") == 1
    assert commands("early_stop", "pending") == 0
    assert value(text, "sharpwatch_run_verdict", **run_labels) == 2
    assert value(text, "sharpwatch_run_model_collapse_step", **run_labels) == 42
    assert value(text, "sharpwatch_run_alpha", **run_labels) == 1.5
    # No step yet: the newest-step gauges are NaN, the histograms empty.
    assert math.isnan(value(text, "sharpwatch_run_entropy_nats", **run_labels))
    assert math.isnan(value(text, "sharpwatch_run_last_step_age_seconds", **run_labels))
    assert value(text, "sharpwatch_run_query_success_rate_ratio_gcount", **run_labels) == 0


def test_finished_runs_leave_after_the_grace_period(
    settings: Settings, engine: Any, session_factory: sessionmaker[Session]
) -> None:
    app = create_app(
        settings.model_copy(update={"metrics_finished_run_grace": 600.0}),
        engine=engine,
        session_factory=session_factory,
        registry=CollectorRegistry(),
    )
    now = utcnow()
    with session_factory() as session:
        _run(session, "live")
        _run(session, "just-finished", status="finished", finished_at=now - timedelta(seconds=30))
        _run(session, "long-finished", status="failed", finished_at=now - timedelta(seconds=900))
    with TestClient(app, base_url="http://localhost") as client:
        text = client.get("/metrics").text
    exported = {labels["run"] for labels in _labels(text, "sharpwatch_run_last_step")}
    assert exported == {"live", "just-finished"}
    assert value(text, "sharpwatch_run_status", project="p", run="just-finished") == 2
    assert value(text, "sharpwatch_exported_runs") == 2


def _labels(text: str, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_label_values_are_escaped(client: TestClient) -> None:
    name = 'we"ird\\name\nwith newline'
    run_id = client.post("/api/v1/runs", json=run_body(name)).json()["id"]
    post_steps(client, run_id, [step_record(0)])
    text = client.get("/metrics").text
    assert value(text, "sharpwatch_run_last_step", project="proj", run=name) == 0


def test_store_outage_still_serves_the_process_metrics(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    app = create_app(Settings(database_url=f"sqlite:///{missing}"), registry=CollectorRegistry())
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert value(response.text, "sharpwatch_store_up") == 0
    assert "sharpwatch_http_request_duration_seconds" in response.text
    assert not run_series(response.text)


# -- several worker processes -----------------------------------------------------------------


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        yield url


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_several_workers_expose_the_same_run_state(postgres_database: str, tmp_path: Path) -> None:
    """Two uvicorn workers behind one port: every scrape, whichever worker answers it, shows the
    same run series; with PROMETHEUS_MULTIPROC_DIR the ingest counter is summed over workers."""
    redis_url = redis_url_or_skip()
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {
        **os.environ,
        "SHARPWATCH_DATABASE_URL": postgres_database,
        "SHARPWATCH_REDIS_URL": redis_url,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"]
    log_path = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) as process,
    ):
        try:
            scrapes, steps = _drive(process, base, log_path)
        finally:
            process.terminate()
            process.wait(timeout=30)
    run_states = Counter(
        "\n".join(
            line
            for line in run_series(text)
            if not line.startswith("sharpwatch_run_last_step_age_seconds")
        )
        for text in scrapes
    )
    assert len(run_states) == 1, "workers disagree on the run state"
    for text in scrapes:
        assert value(text, "sharpwatch_run_last_step", project="proj", run="multi") == steps - 1
        assert value(text, "sharpwatch_ingested_steps_total") == steps


def _drive(process: subprocess.Popen[bytes], base: str, log_path: Path) -> tuple[list[str], int]:
    with httpx.Client(base_url=base, timeout=10) as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/healthz").status_code < 500:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "service did not start: " + log_path.read_text()
            time.sleep(0.2)
        run_id = http.post("/api/v1/runs", json=run_body("multi")).json()["id"]
        steps = 24
        for step in range(steps):  # one request each, spread over the workers
            response = http.post(
                f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(step)]}
            )
            assert response.status_code == 200, response.text
        return [http.get("/metrics").text for _ in range(12)], steps


def test_health_route_name_used_above_exists(client: TestClient) -> None:
    assert client.get("/healthz").status_code < 500
    assert re.search(r"^sharpwatch_store_up 1", client.get("/metrics").text, re.M)


def test_every_exported_family_is_documented() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for family in ALL_FAMILIES:
        assert f"`{family.name}`" in documented, family.name
