"""Live end-to-end: the paper's toy experiment runs with the hooks against a real service.
The collapsing configuration is stopped automatically; the IAC configuration receives alpha
adjustments and applies them from the next step. On SQLite with one worker (in-process broker)
and on PostgreSQL + Redis with two `sharpwatch serve` worker processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._servers import ServerThread
from tests.reliability._procs import ServiceProcess
from trainer_hooks import StepResult, watch
from trainer_hooks._toy import ToyConfig, run_toy

STEP_SECONDS = 0.01  # a real step takes seconds; the toy's take microseconds
COLLAPSING = ToyConfig(advantage="raw", optimizer="momentum", steps=400)
CALIBRATED = ToyConfig(advantage="raw", optimizer="momentum", steps=400, iac=True)


def _pace(_step: int, _result: StepResult) -> None:
    time.sleep(STEP_SECONDS)


def _run(url: str, name: str, cfg: ToyConfig) -> tuple[int, int]:
    """Run the toy through watch(); return (run id, steps the loop ran)."""
    with watch(
        url,
        name=name,
        project="live-toy",
        poll_wait=10,
        **cfg.monitor_options(),
    ) as run:
        result = run_toy(cfg, seed=0, monitor=run, on_step=_pace)
        assert run.run is not None
        return run.run.id, result.probs.shape[0] - 1


def _get(url: str, path: str, **params: Any) -> Any:
    return httpx.get(f"{url}/api/v1{path}", params=params, timeout=30).json()


def _check_collapsing_run_stopped(url: str) -> None:
    run_id, ran = _run(url, "collapsing", COLLAPSING)
    assert ran < COLLAPSING.steps, "the loop should have been stopped by an early_stop"
    run = _get(url, f"/runs/{run_id}")
    assert (run["status"], run["verdict"]) == ("stopped", "stopped")
    commands = _get(url, f"/runs/{run_id}/commands/history")["items"]
    stops = [c for c in commands if c["kind"] == "early_stop"]
    assert len(stops) == 1
    stop = stops[0]
    assert (stop["source"], stop["status"]) == ("detector", "applied")
    assert "entropy_floor" in stop["rules"]
    assert stop["issued_step"] <= stop["applied_step"] <= ran
    rules = {a["rule"] for a in _get(url, f"/runs/{run_id}/alerts")["items"]}
    assert "entropy_floor" in rules
    stored = _get(url, f"/runs/{run_id}/steps", limit=10000)["items"]
    assert [s["step"] for s in stored] == list(range(ran))  # every step, exactly once


def _check_calibrated_run_gets_alpha(url: str) -> None:
    run_id, _ran = _run(url, "calibrated", CALIBRATED)
    commands = _get(url, f"/runs/{run_id}/commands/history")["items"]
    applied = [c for c in commands if c["kind"] == "adjust_alpha" and c["status"] == "applied"]
    assert applied, f"expected applied alpha adjustments, got {commands}"
    first = min(applied, key=lambda c: c["applied_step"])
    assert first["applied_step"] > first["issued_step"]  # from the next step on, never the same
    stored = {
        s["step"]: s["metrics"]["alpha"]
        for s in _get(url, f"/runs/{run_id}/steps", metrics="alpha", limit=10000)["items"]
    }
    assert stored[first["applied_step"] - 1] == CALIBRATED.alpha
    assert stored[first["applied_step"]] == pytest.approx(first["alpha"])
    decisions = _get(url, f"/runs/{run_id}/alpha-decisions")
    assert len(decisions) >= len(applied)
    assert all(d["reason"] for d in decisions)


@pytest.mark.slow
def test_live_toy_sqlite_one_worker(sqlite_server: ServerThread) -> None:
    _check_collapsing_run_stopped(sqlite_server.url)
    _check_calibrated_run_gets_alpha(sqlite_server.url)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_live_toy_postgres_redis_two_workers(
    postgres_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    service = ServiceProcess(
        postgres_database_url, workers=2, redis_url=redis_url, log_path=tmp_path / "serve.log"
    ).start()
    try:
        _check_collapsing_run_stopped(service.url)
        _check_calibrated_run_gets_alpha(service.url)
    finally:
        service.stop()
