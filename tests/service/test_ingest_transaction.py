"""One transaction per ingest: the steps and the detection pass commit together, the pass inside a
savepoint. A pass that fails (an exception, an SQL error after it wrote) is rolled back to its
savepoint and the steps still commit and are acknowledged; the run's next ingest catches up, to
the outcome of a run whose passes never failed. A commit that fails stores and acknowledges
nothing and leaves the history cache as it was. Concurrent ingests into one run each commit once.
Real databases, real commits (pooled sessions)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from service import ingest
from service.app import create_app
from service.db.engine import make_engine
from service.db.models import Alert, Command, Run, Step
from service.detectors import ActionKind
from service.detectors.catch_up import PassDecisions
from service.detectors.replay import replay_detailed
from service.settings import Settings
from service.storage import _history_cache as history_cache
from service.storage import detection as detection_store
from service.storage._history_cache import HistoryCache
from tests._servers import ServerThread
from tests.service._helpers import run_body
from tests.service.detectors import _traces
from tests.service.test_command_races import CONNECTIONS, _concurrently

BATCH = 5


class Pooled:
    def __init__(self, client: TestClient, engine: Engine, registry: CollectorRegistry) -> None:
        self.client = client
        self.engine = engine
        self.registry = registry

    def failures(self) -> float:
        value = self.registry.get_sample_value("sharpwatch_detector_failures_total")
        return 0.0 if value is None else value


@pytest.fixture
def pooled(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pooled]:
    """The app on its own pooled sessions: every commit is a real one."""
    monkeypatch.setattr(history_cache, "CACHE", HistoryCache())
    engine = make_engine(database_url)
    registry = CollectorRegistry()
    app = create_app(Settings(database_url=database_url), engine=engine, registry=registry)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        yield Pooled(client, engine, registry)
    engine.dispose()


def _chunks(trace: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [
        [{"step": r["step"], "metrics": r["metrics"]} for r in trace[i : i + BATCH]]
        for i in range(0, len(trace), BATCH)
    ]


def _post(client: TestClient, run_id: int, chunk: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": chunk})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _outcome(engine: Engine, run_id: int) -> tuple[Any, ...]:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        alerts = session.execute(
            select(Alert.rule, Alert.first_step, Alert.last_step, Alert.resolved_step, Alert.status)
            .where(Alert.run_id == run_id)
            .order_by(Alert.rule, Alert.first_step)
        ).all()
        commands = session.execute(
            select(Command.kind, Command.issued_step, Command.alpha, Command.status)
            .where(Command.run_id == run_id)
            .order_by(Command.id)
        ).all()
        steps = session.scalars(select(Step.step).where(Step.run_id == run_id)).all()
        return (
            run.detector_state,
            run.verdict,
            run.best_step,
            [tuple(a) for a in alerts],
            [tuple(c) for c in commands],
            sorted(steps),
        )


def _raise_in_decide(_snapshot: Any) -> PassDecisions:
    raise RuntimeError("injected detector failure")


_real_save = detection_store.save


def _sql_error_after_writing(session: Session, pending: Any, decisions: PassDecisions) -> int:
    """The real save, flushed to the database, then a statement the database refuses
    (OperationalError on SQLite: retried, then deferred; ProgrammingError on PostgreSQL, which
    aborts the transaction until the rollback to the savepoint)."""
    _real_save(session, pending, decisions)
    session.flush()
    session.execute(text("SELECT * FROM no_such_table"))
    raise AssertionError("unreachable")


FAILURES: dict[str, tuple[str, Callable[..., Any]]] = {
    "exception in decide_pass": ("decide_pass", _raise_in_decide),
    "sql error after the pass wrote": ("save", _sql_error_after_writing),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_pass_keeps_the_steps_and_the_next_ingest_catches_up(
    pooled: Pooled, failure: str
) -> None:
    trace = _traces.entropy_collapse()
    chunks = _chunks(trace)
    expected = replay_detailed(trace, group_size=8, stop_on_auto_stop=False)
    first_open = min(a.step for a in expected.actions if a.kind is ActionKind.OPEN)
    # Fail the passes of the batches from a little before the first alert opens, so that the
    # failed passes would have written alerts (and, for "save", did write them before failing).
    failing = range(first_open // BATCH - 2, first_open // BATCH + 3)
    assert failing.start > 0
    assert failing.stop < len(chunks)
    client = pooled.client
    control = client.post("/api/v1/runs", json=run_body("control")).json()["id"]
    for chunk in chunks:
        _post(client, control, chunk)

    run_id = client.post("/api/v1/runs", json=run_body(failure)).json()["id"]
    name, replacement = FAILURES[failure]
    target = ingest if name == "decide_pass" else detection_store
    before: tuple[Any, ...] = ()
    with pytest.MonkeyPatch.context() as patch:
        for index, chunk in enumerate(chunks):
            if index == failing.start:
                before = _outcome(pooled.engine, run_id)
                patch.setattr(target, name, replacement)
            if index == failing.stop:
                patch.undo()
            failures = pooled.failures()
            body = _post(client, run_id, chunk)
            # Acknowledged and stored, whether or not its pass failed.
            assert body == {"accepted": [r["step"] for r in chunk], "duplicates": []}
            if index not in failing:
                assert pooled.failures() == failures
                continue
            assert pooled.failures() == failures + 1
            state, verdict, best, alerts, commands, steps = _outcome(pooled.engine, run_id)
            # Nothing of the failed passes was kept: the detectors are where they were.
            assert (state, verdict, best, alerts, commands) == before[:5]
            assert steps[-BATCH:] == [r["step"] for r in chunk]
    assert before[3] == []  # the alerts the failed passes would have opened ...
    # ... were opened by the catch-up: the run ends as if no pass had failed.
    assert _outcome(pooled.engine, run_id)[:5] == _outcome(pooled.engine, control)[:5]
    assert _outcome(pooled.engine, run_id)[5] == [r["step"] for r in trace]
    again = _post(client, run_id, chunks[failing.start])  # re-sent: duplicates
    assert again == {"accepted": [], "duplicates": [r["step"] for r in chunks[failing.start]]}


def test_a_failed_commit_stores_and_acknowledges_nothing_and_the_cache_is_unchanged(
    pooled: Pooled,
) -> None:
    trace = _traces.healthy_run(n=20)
    chunks = _chunks(trace)
    client = pooled.client
    run_id = client.post("/api/v1/runs", json=run_body("commit-fails")).json()["id"]
    _post(client, run_id, chunks[0])
    with Session(pooled.engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        created_at, epoch = run.created_at, run.epoch
    database = pooled.engine.url.render_as_string(hide_password=True)
    cached = history_cache.CACHE.lookup(database, run_id, created_at, epoch)
    assert cached is not None
    assert [r.step for r in cached[0]] == [0, 1, 2, 3, 4]

    def mark(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO steps "):
            connection.info["wrote steps"] = True

    dialect = pooled.engine.dialect
    dbapi_error = dialect.loaded_dbapi.OperationalError

    def refuse(connection: Any) -> None:
        """The database refuses the commit and ends the transaction (as PostgreSQL does with a
        failing COMMIT, SQLite with an I/O error)."""
        if connection.info.pop("wrote steps", False):
            connection.rollback()
            raise dbapi_error("injected: the commit failed")
        real_commit(connection)

    real_commit = dialect.do_commit
    event.listen(pooled.engine, "before_cursor_execute", mark)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dialect, "do_commit", refuse)
            response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": chunks[1]})
    finally:
        event.remove(pooled.engine, "before_cursor_execute", mark)
    assert response.status_code in {500, 503}, response.text
    steps, epoch_after = _steps_and_epoch(pooled.engine, run_id)
    assert steps == [0, 1, 2, 3, 4]
    assert epoch_after == epoch
    assert history_cache.CACHE.lookup(database, run_id, created_at, epoch) == cached
    # Not acknowledged, so the client re-sends it: stored now, not a duplicate.
    assert _post(client, run_id, chunks[1])["accepted"] == [5, 6, 7, 8, 9]
    steps, epoch_after = _steps_and_epoch(pooled.engine, run_id)
    assert steps == list(range(10))
    assert epoch_after == epoch + 1
    cached = history_cache.CACHE.lookup(database, run_id, created_at, epoch + 1)
    assert cached is not None
    assert [r.step for r in cached[0]][-5:] == [5, 6, 7, 8, 9]


def _steps_and_epoch(engine: Engine, run_id: int) -> tuple[list[int], int]:
    with Session(engine) as session:
        steps = session.scalars(
            select(Step.step).where(Step.run_id == run_id).order_by(Step.step)
        ).all()
        epoch = session.scalar(select(Run.epoch).where(Run.id == run_id))
        assert epoch is not None
        return list(steps), epoch


def test_concurrent_ingests_of_one_run_each_commit_once(
    server: ServerThread, database_url: str
) -> None:
    """Sixteen connections ingest into one run at once (the run row is locked from the epoch
    bump to the commit; SQLite's writers wait for the write lock): every request is answered 200,
    every step is stored once, no detection pass is deferred or fails, and the same batch sent
    on every connection at once is accepted by one and a duplicate for the others."""
    run_id = httpx.post(f"{server.url}/api/v1/runs", json=run_body("concurrent")).json()["id"]
    steps_url = f"{server.url}/api/v1/runs/{run_id}/steps"
    trace = _traces.healthy_run(n=CONNECTIONS * BATCH + BATCH)
    chunks = _chunks(trace)

    def post(chunk: list[dict[str, Any]]) -> Callable[[httpx.Client], httpx.Response]:
        return lambda client: client.post(steps_url, json={"steps": chunk})

    distinct = _concurrently([post(chunk) for chunk in chunks[:CONNECTIONS]])
    assert [r.status_code for r in distinct] == [200] * CONNECTIONS, [r.text for r in distinct]
    same = _concurrently([post(chunks[CONNECTIONS])] * CONNECTIONS)
    assert [r.status_code for r in same] == [200] * CONNECTIONS, [r.text for r in same]
    last = [r["step"] for r in chunks[CONNECTIONS]]
    answers = sorted((r.json()["accepted"], r.json()["duplicates"]) for r in same)
    assert answers == [([], last)] * (CONNECTIONS - 1) + [(last, [])]

    engine = make_engine(database_url)
    try:
        steps, epoch = _steps_and_epoch(engine, run_id)
    finally:
        engine.dispose()
    assert steps == [r["step"] for r in trace]
    assert epoch == CONNECTIONS + 1  # one write of steps per accepted batch
    metrics = httpx.get(f"{server.url}/metrics").text
    failures = [
        line
        for line in metrics.splitlines()
        if line.startswith("sharpwatch_detector_failures_total")
    ]
    assert failures == ["sharpwatch_detector_failures_total 0.0"], failures
