"""Detection wired into ingest: traces posted through the real API, in batches, produce exactly
the alerts, stop and α commands that the pure replay of the same trace produces."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Command, Run
from service.detectors import ActionKind, replay_detailed
from service.schemas.steps import StepBatchIn
from service.storage import steps as step_store
from tests.service._helpers import run_body
from tests.service.detectors import _traces

TRACES = {
    "healthy": _traces.healthy_run,
    "entropy_collapse": _traces.entropy_collapse,
    "starvation": _traces.starvation,
    "reward_accuracy_collapse": _traces.reward_accuracy_collapse,
    "rise_then_fall": _traces.rise_then_fall,
}


def _post_trace(client: TestClient, run_id: int, trace: list[dict[str, Any]], batch: int) -> None:
    for start in range(0, len(trace), batch):
        chunk = [
            {"step": r["step"], "metrics": r["metrics"], "non_finite": r.get("non_finite", [])}
            for r in trace[start : start + batch]
        ]
        response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": chunk})
        assert response.status_code == 200, response.text


def _all(client: TestClient, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        page = client.get(path, params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("name", list(TRACES))
def test_service_detection_equals_pure_replay(client: TestClient, name: str) -> None:
    trace = TRACES[name]()
    run_id = client.post("/api/v1/runs", json=run_body(name, group_size=8)).json()["id"]
    _post_trace(client, run_id, trace, batch=7)

    expected = replay_detailed(trace, group_size=8, stop_on_auto_stop=False)
    opened = [(a.rule, a.first_step) for a in expected.actions if a.kind is ActionKind.OPEN]
    resolved = {
        (a.rule, a.first_step): a.step for a in expected.actions if a.kind is ActionKind.RESOLVE
    }
    alerts = _all(client, f"/api/v1/runs/{run_id}/alerts")
    got = sorted((a["rule"], a["first_step"], a["resolved_step"]) for a in alerts)
    assert got == sorted((rule, first, resolved.get((rule, first))) for rule, first in opened)
    if name == "healthy":
        assert alerts == []

    commands = _all(client, f"/api/v1/runs/{run_id}/commands/history")
    stops = [c for c in commands if c["kind"] == "early_stop"]
    if expected.stopped_at is None:
        assert stops == []
    else:
        assert [(c["issued_step"], c["source"]) for c in stops] == [
            (expected.stopped_at, "detector")
        ]
        assert sorted(stops[0]["rules"]) == sorted(expected.stop_rules)
    alphas = sorted((c["issued_step"], c["alpha"]) for c in commands if c["kind"] == "adjust_alpha")
    assert alphas == [(d.step, pytest.approx(d.new_alpha)) for d in expected.alpha_changes]
    decisions = client.get(f"/api/v1/runs/{run_id}/alpha-decisions").json()
    assert len(decisions) == len(expected.alpha_changes)
    assert all(d["reason"] for d in decisions)

    summary = client.get(f"/api/v1/runs/{run_id}/collapse").json()
    assert summary["model_collapse_step"] == expected.state.model_collapse_step
    assert summary["verdict"] == (
        "stopped" if expected.stopped_at is not None else expected.verdict.value
    )
    assert summary["latest"]["entropy"]["step"] == trace[-1]["step"]


def test_reward_accuracy_collapse_records_the_step_and_stops(client: TestClient) -> None:
    trace = _traces.reward_accuracy_collapse()
    first_below = next(r["step"] for r in trace if r["metrics"]["reward_accuracy"] < 0.01)
    run_id = client.post("/api/v1/runs", json=run_body("mcs")).json()["id"]
    _post_trace(client, run_id, trace, batch=25)
    summary = client.get(f"/api/v1/runs/{run_id}/collapse").json()
    assert summary["model_collapse_step"] == first_below
    assert summary["collapse_threshold"] == 0.01
    assert summary["verdict"] == "stopped"
    alert = client.get(
        "/api/v1/alerts", params={"run_id": run_id, "rule": "model_collapse_step"}
    ).json()["items"][0]
    assert alert["severity"] == "critical"
    assert alert["first_step"] == first_below
    assert alert["thresholds"]["threshold"] == 0.01
    assert alert["observed"]["reward_accuracy"] < 0.01
    assert alert["action"]


def test_non_finite_is_critical_at_once_and_requests_a_stop(client: TestClient) -> None:
    run_id = client.post("/api/v1/runs", json=run_body("nan")).json()["id"]
    record = {"step": 0, "metrics": {"entropy": 0.5, "loss": None}, "non_finite": ["loss"]}
    client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]})
    alerts = client.get(f"/api/v1/runs/{run_id}/alerts").json()["items"]
    assert [(a["rule"], a["severity"], a["first_step"]) for a in alerts] == [
        ("non_finite", "critical", 0)
    ]
    pending = client.get(f"/api/v1/runs/{run_id}/commands").json()
    assert [c["kind"] for c in pending] == ["early_stop"]
    assert pending[0]["rules"] == ["non_finite"]


def test_fleet_alert_filters(client: TestClient) -> None:
    a = client.post("/api/v1/runs", json=run_body("a", project="p1")).json()["id"]
    b = client.post("/api/v1/runs", json=run_body("b", project="p2")).json()["id"]
    bad = {"step": 0, "metrics": {"loss": None}, "non_finite": ["loss"]}
    for run_id in (a, b):
        client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [bad]})
    assert len(client.get("/api/v1/alerts").json()["items"]) == 2
    only_p1 = client.get("/api/v1/alerts", params={"project": "p1"}).json()["items"]
    assert [x["run_id"] for x in only_p1] == [a]
    assert client.get("/api/v1/alerts", params={"severity": "warning"}).json()["items"] == []
    assert client.get("/api/v1/alerts", params={"status": "resolved"}).json()["items"] == []
    assert (
        len(client.get("/api/v1/alerts", params={"since": "2000-01-01T00:00:00Z"}).json()["items"])
        == 2
    )
    assert (
        client.get("/api/v1/alerts", params={"since": "2999-01-01T00:00:00Z"}).json()["items"] == []
    )
    unknown = client.get("/api/v1/alerts", params={"rule": "nope"})
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "rule"


def test_per_run_detector_settings_apply(client: TestClient) -> None:
    body = run_body("strict", detectors={"entropy_floor": {"floor": 0.6, "window": 2}})
    run_id = client.post("/api/v1/runs", json=body).json()["id"]
    steps = [{"step": s, "metrics": {"entropy": 0.5}} for s in range(3)]
    client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": steps})
    rules = [a["rule"] for a in client.get(f"/api/v1/runs/{run_id}/alerts").json()["items"]]
    assert "entropy_floor" in rules
    bad = client.post(
        "/api/v1/runs", json=run_body("x", detectors={"entropy_floor": {"floor": -1}})
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"].startswith("detectors.entropy_floor.floor")


def test_resolve_after_holds_a_flapping_alert_across_batches(client: TestClient) -> None:
    # Below the floor from 10, clear at 16 and 20-21 (flapping), clear for good from 26; posted
    # in batches of 3, so the clear streak has to survive in the stored detector state.
    detectors = {"entropy_floor": {"window": 1, "cooldown_steps": 0, "resolve_after": 3}}
    policy = {"auto_stop_rules": []}
    body = run_body("flappy", group_size=8, detectors=detectors, policy=policy)
    run_id = client.post("/api/v1/runs", json=body).json()["id"]

    def entropy(s: int) -> float:
        return 0.5 if s < 10 or s in (16, 20, 21) or s >= 26 else 0.05

    trace = [{"step": s, "metrics": {"entropy": entropy(s)}} for s in range(32)]
    _post_trace(client, run_id, trace, batch=3)
    alerts = client.get(f"/api/v1/runs/{run_id}/alerts", params={"rule": "entropy_floor"}).json()
    assert [(a["first_step"], a["resolved_step"]) for a in alerts["items"]] == [(10, 28)]
    assert (
        client.get(f"/api/v1/runs/{run_id}").json()["detectors"]["entropy_floor"]["resolve_after"]
        == 3
    )


def test_triage_ranks_by_entropy(client: TestClient) -> None:
    body = {
        "group_size": 8,
        "candidates": [
            {"name": "sft-3ep", "entropy": 0.15, "pass_at_1": 0.40},
            {"name": "sft-1ep", "entropy": 0.60, "pass_at_1": 0.30},
            {"name": "sft-0ep", "entropy": 0.90, "pass_at_1": 0.05},
        ],
    }
    response = client.post("/api/v1/triage", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    ranking = [c["name"] for c in sorted(result["candidates"], key=lambda c: c["rank"])]
    assert ranking == ["sft-0ep", "sft-1ep", "sft-3ep"]
    flags = {c["name"]: c["flags"] for c in result["candidates"]}
    assert "below_p_star" in flags["sft-0ep"]  # 0.05 < p*(8) = 0.083


def test_no_alpha_commands_to_a_trainer_that_reports_iac_off(client: TestClient) -> None:
    trace = _traces.entropy_collapse()
    with_iac = client.post("/api/v1/runs", json=run_body("iac-on")).json()["id"]
    without = client.post("/api/v1/runs", json=run_body("iac-off")).json()["id"]
    _post_trace(client, with_iac, trace, batch=20)
    off = [r | {"metrics": r["metrics"] | {"iac": 0.0}} for r in trace]
    _post_trace(client, without, off, batch=20)
    kinds_on = [c["kind"] for c in _all(client, f"/api/v1/runs/{with_iac}/commands/history")]
    kinds_off = [c["kind"] for c in _all(client, f"/api/v1/runs/{without}/commands/history")]
    assert "adjust_alpha" in kinds_on
    assert "adjust_alpha" not in kinds_off
    assert "early_stop" in kinds_off  # the stop path is unaffected


def test_detection_catches_up_on_steps_stored_without_it(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """Steps committed but never evaluated (a detection that failed) are evaluated by the
    run's next ingest: the outcome equals the replay of the whole trace."""
    trace = _traces.entropy_collapse()
    run_id = client.post("/api/v1/runs", json=run_body("catch-up")).json()["id"]
    half = len(trace) // 2
    with session_factory() as session:
        steps = [{"step": r["step"], "metrics": r["metrics"]} for r in trace[:half]]
        step_store.ingest(session, run_id, StepBatchIn.model_validate({"steps": steps}))
        session.commit()
    assert client.get(f"/api/v1/runs/{run_id}/alerts").json()["items"] == []
    _post_trace(client, run_id, trace[half:], batch=7)
    expected = replay_detailed(trace, group_size=8, stop_on_auto_stop=False)
    opened = sorted((a.rule, a.first_step) for a in expected.actions if a.kind is ActionKind.OPEN)
    alerts = _all(client, f"/api/v1/runs/{run_id}/alerts")
    assert sorted((a["rule"], a["first_step"]) for a in alerts) == opened


def test_a_stop_acknowledged_mid_pass_is_not_requested_twice(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """The interleaving behind a duplicate early_stop: detection read the run while it was still
    'running', the trainer's ack of the stop committed, then detection read no outstanding stop.
    The run's verdict records the requested stop, so no second one is issued."""
    trace = _traces.entropy_collapse()
    run_id = client.post("/api/v1/runs", json=run_body("one-stop")).json()["id"]
    expected = replay_detailed(trace, group_size=8, stop_on_auto_stop=False)
    assert expected.stopped_at is not None
    cut = trace.index(next(r for r in trace if r["step"] == expected.stopped_at)) + 1
    _post_trace(client, run_id, trace[:cut], batch=10)
    with session_factory() as session:
        stop = session.scalars(
            select(Command).where(Command.run_id == run_id, Command.kind == "early_stop")
        ).one()
        stop.status = "applied"  # acknowledged, but the run row read earlier still says running
        session.commit()
        run = session.get(Run, run_id)
        assert run is not None
        assert (run.status, run.verdict) == ("running", "stopped")
    _post_trace(client, run_id, trace[cut:], batch=10)
    kinds = [c["kind"] for c in _all(client, f"/api/v1/runs/{run_id}/commands/history")]
    assert kinds.count("early_stop") == 1


def test_the_run_its_stop_and_its_alert_name_one_best_step(client: TestClient) -> None:
    """The page used to say "best step –" while the entropy alert and the automatic stop both
    said 23: the run's best_step is the stop's."""
    trace = _traces.entropy_collapse()
    run_id = client.post("/api/v1/runs", json=run_body("best", group_size=8)).json()["id"]
    _post_trace(client, run_id, trace, batch=10)
    stops = [
        c
        for c in client.get(f"/api/v1/runs/{run_id}/commands/history").json()["items"]
        if c["kind"] == "early_stop"
    ]
    assert len(stops) == 1
    assert stops[0]["best_step"] is not None
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["best_step"] == stops[0]["best_step"]
    assert client.get(f"/api/v1/runs/{run_id}/collapse").json()["best_step"] == run["best_step"]
    alert = client.get("/api/v1/alerts", params={"run_id": run_id, "rule": "entropy_floor"}).json()[
        "items"
    ][0]
    assert alert["rollback_step"] == run["best_step"]
