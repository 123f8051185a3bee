"""The detectors' per-process history cache (``runs.epoch``): detection gives the same result
with no cache, one worker's cache, or two workers' caches written alternately (out-of-order
steps included); a current entry spares the history read; a stale one is never used."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Alert, Command, Run
from service.detectors import StepRecord
from service.schemas.steps import StepIn
from service.storage import _history_cache as history_cache
from service.storage._history_cache import HistoryCache, record_of
from service.storage.detection import _plan_from_cache
from tests.service._helpers import run_body
from tests.service.detectors import _traces


def _batches(trace: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    chunks = [
        [
            {"step": r["step"], "metrics": r["metrics"], "non_finite": r.get("non_finite", [])}
            for r in trace[i : i + size]
        ]
        for i in range(0, len(trace), size)
    ]
    chunks[3], chunks[4] = chunks[4], chunks[3]  # one batch arrives late: out of order
    return chunks


def _outcome(session: Session, run_id: int) -> tuple[Any, ...]:
    run = session.get(Run, run_id)
    assert run is not None
    session.refresh(run)
    alerts = session.execute(
        select(Alert.rule, Alert.first_step, Alert.last_step, Alert.resolved_step, Alert.status)
        .where(Alert.run_id == run_id)
        .order_by(Alert.id)
    ).all()
    commands = session.execute(
        select(Command.kind, Command.issued_step, Command.alpha, Command.status)
        .where(Command.run_id == run_id)
        .order_by(Command.id)
    ).all()
    return (
        run.detector_state,
        run.verdict,
        run.best_step,
        run.model_collapse_step,
        [tuple(a) for a in alerts],
        [tuple(c) for c in commands],
    )


@pytest.mark.parametrize("trace_name", ["entropy_collapse", "rise_then_fall", "starvation"])
def test_detection_is_the_same_with_or_without_caches(
    client: TestClient,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    trace_name: str,
) -> None:
    trace = getattr(_traces, trace_name)()
    batches = _batches(trace, 5)
    off, single, worker_a, worker_b = (
        HistoryCache(max_runs=0),
        HistoryCache(),
        HistoryCache(),
        HistoryCache(),
    )
    plans: dict[str, list[HistoryCache]] = {
        "no cache": [off],
        "one worker": [single],
        "two workers": [worker_a, worker_b],
    }
    outcomes = {}
    for label, caches in plans.items():
        run_id = client.post("/api/v1/runs", json=run_body(label)).json()["id"]
        for index, batch in enumerate(batches):
            monkeypatch.setattr(history_cache, "CACHE", caches[index % len(caches)])
            response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": batch})
            assert response.status_code == 200, response.text
        with session_factory() as session:
            outcomes[label] = _outcome(session, run_id)
    assert outcomes["no cache"][0] is not None
    assert outcomes["one worker"] == outcomes["no cache"]
    assert outcomes["two workers"] == outcomes["no cache"]


def test_a_current_entry_spares_the_history_read_and_a_stale_one_is_not_used(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    history_reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "steps.extras" in statement:
            history_reads.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        mine, other = HistoryCache(), HistoryCache()
        monkeypatch.setattr(history_cache, "CACHE", mine)
        trace = _traces.healthy_run()
        run_id = client.post("/api/v1/runs", json=run_body("cached")).json()["id"]
        steps = [{"step": r["step"], "metrics": r["metrics"]} for r in trace]

        def post(i: int) -> None:
            response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [steps[i]]})
            assert response.status_code == 200, response.text

        for i in range(4):
            post(i)
        assert history_reads == []  # the first ingest filled the entry; every pass hit it
        monkeypatch.setattr(history_cache, "CACHE", other)
        post(4)  # another worker: its own cache is empty, it reads the history
        assert len(history_reads) == 1
        monkeypatch.setattr(history_cache, "CACHE", mine)
        post(5)  # mine is one epoch behind: stale, so it reads the database
        assert len(history_reads) == 2
        post(6)  # and is current again
        assert len(history_reads) == 2
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _rec(step: int) -> StepRecord:
    return StepRecord(step=step, metrics={"entropy": 1.0})


def test_cache_entries_need_the_epoch_and_the_run_they_were_filled_for() -> None:
    cache = HistoryCache()
    born = datetime(2026, 1, 1, tzinfo=UTC)
    cache.noted_ingest("db", 1, born, 1, [_rec(0), _rec(1)])
    assert cache.lookup("db", 1, born, 1) == ([_rec(0), _rec(1)], True)
    assert cache.lookup("db", 1, born, 2) is None
    assert cache.lookup("db", 1, datetime(2026, 1, 2, tzinfo=UTC), 1) is None  # id reused
    assert cache.lookup("other-db", 1, born, 1) is None
    cache.noted_ingest("db", 1, born, 2, [_rec(2)])
    assert cache.lookup("db", 1, born, 2) == ([_rec(0), _rec(1), _rec(2)], True)
    cache.noted_ingest("db", 1, born, 3, [_rec(1)])  # out of order: the entry goes
    assert cache.lookup("db", 1, born, 3) is None
    assert cache.lookup("db", 1, born, 2) is None
    cache.store("db", 1, born, 5, [_rec(s) for s in range(10)], complete=True, keep=4)
    assert cache.lookup("db", 1, born, 5) == ([_rec(s) for s in range(6, 10)], False)
    cache.noted_ingest("db", 1, born, 7, [_rec(10)])  # skipped epoch 6: the entry goes
    assert cache.lookup("db", 1, born, 7) is None


def test_plans_from_an_entry_fall_back_when_history_may_be_missing() -> None:
    records = [_rec(s) for s in range(5, 10)]
    assert _plan_from_cache(records, False, 4, 2) is None  # steps before 5 may be unseen
    assert _plan_from_cache(records, False, 6, 4) is None  # needs 3 steps before step 7
    assert _plan_from_cache(records, False, 7, 4) == ([8, 9], records, False)
    assert _plan_from_cache(records, True, None, 50) == ([5, 6, 7, 8, 9], records, True)
    assert _plan_from_cache(records, True, 9, 50) == ([], records, True)


def test_an_ingested_step_is_the_record_detection_reads_back() -> None:
    step = StepIn.model_validate(
        {
            "step": 3,
            "metrics": {"zeta": 2.0, "entropy": 0.5, "alpha": None, "custom": 1},
            "non_finite": ["loss"],
        }
    )
    record = record_of(step)
    assert list(record.metrics.items()) == [("entropy", 0.5), ("zeta", 2.0), ("custom", 1.0)]
    assert record.non_finite == frozenset({"loss"})
