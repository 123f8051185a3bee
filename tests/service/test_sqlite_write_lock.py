"""Two writers on one SQLite file wait for each other; neither is refused "database is locked".

SQLite refuses at once, without the busy timeout, a transaction that has read and then asks to
write while another connection writes or has committed since its read. A request and the
notification worker (its own connection) writing at the same time must both succeed: the engine
opens every writing transaction with ``BEGIN IMMEDIATE`` (service.db.sqlite_transactions),
including one a savepoint opens (a nested transaction, a session joined to a connection).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.settings import Settings
from tests.service._helpers import run_body
from tests.service._receiver import Receiver
from tests.service.detectors import _traces

OpenSession = Callable[[], Session]


@pytest.fixture
def marks_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'marks.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE marks (id INTEGER PRIMARY KEY, who TEXT)")
    yield engine
    engine.dispose()


@contextmanager
def _joined(engine: Engine) -> Iterator[OpenSession]:
    """Sessions joined by a savepoint to one connection's transaction (the tests' fixture)."""
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    yield factory
    outer.rollback()
    connection.close()


@contextmanager
def _nested(engine: Engine) -> Iterator[OpenSession]:
    """The service's own sessions, each opening its transaction with ``begin_nested``."""
    factory = make_session_factory(engine)

    def open_nested() -> Session:
        session = factory()
        session.begin_nested()
        return session

    yield open_nested


SESSION_KINDS = {"joined": _joined, "nested": _nested}


def _insert(connection: Connection | Session, who: str) -> None:
    connection.execute(text("INSERT INTO marks (who) VALUES (:who)"), {"who": who})


def _marks(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.scalars(text("SELECT who FROM marks")))


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_a_pass_that_reads_then_writes_waits_for_a_concurrent_writer(
    marks_engine: Engine, kind: str
) -> None:
    """The pass reads, another connection writes meanwhile, the pass writes: both are stored.
    On a deferred transaction the pass's write is refused at once (its read is stale)."""
    other_done = threading.Event()
    errors: list[BaseException] = []

    def other_writer() -> None:  # the notification worker's claim, on its own connection
        try:
            with marks_engine.begin() as connection:
                _insert(connection, "worker")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        other_done.set()

    with SESSION_KINDS[kind](marks_engine) as open_session:
        session = open_session()
        try:
            session.execute(text("SELECT count(*) FROM marks")).scalar_one()
            writer = threading.Thread(target=other_writer)
            writer.start()
            # Room for the other writer to commit between the read and the write, as it does
            # when nothing makes it wait; with the fix it waits (busy timeout) for the commit.
            other_done.wait(timeout=1.0)
            _insert(session, "request")
            session.commit()
        finally:
            session.close()
        writer.join(timeout=60)
    assert not writer.is_alive()
    assert errors == []
    assert _marks(marks_engine) == ["request", "worker"]


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_a_read_only_session_leaves_no_snapshot_behind(marks_engine: Engine, kind: str) -> None:
    """A session that only read and rolled back leaves no transaction open: a later commit by
    another connection does not make the next session's write stale."""
    with SESSION_KINDS[kind](marks_engine) as open_session:
        with open_session() as session:
            session.execute(text("SELECT count(*) FROM marks")).scalar_one()
        with marks_engine.begin() as connection:
            _insert(connection, "worker")
        with open_session() as session:
            session.execute(text("SELECT count(*) FROM marks")).scalar_one()
            _insert(session, "request")
            session.commit()
        assert _marks(marks_engine) == ["request", "worker"]  # committed, seen from outside


FAST_WORKER: dict[str, Any] = {
    "notify_poll_interval": 0.005,
    "notify_backoff_base": 0.01,
    "notify_backoff_max": 0.05,
    "notify_max_attempts": 100,
    "notify_timeout": 2.0,
}


def test_requests_never_503_while_the_worker_writes(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """Every request of a trace succeeds while the delivery worker claims and settles rows as
    fast as it can (a receiver that fails keeps it writing); on both backends."""
    app = create_app(
        Settings(database_url=database_url, **FAST_WORKER),
        engine=engine,
        session_factory=session_factory,
        registry=CollectorRegistry(),
    )
    failures: list[str] = []
    with (
        Receiver(fail_first=10**6) as receiver,
        TestClient(app, base_url="http://localhost") as client,
    ):
        for name in ("hook", "second"):
            channel = client.post(
                "/api/v1/notifications/channels",
                json={"name": name, "kind": "webhook", "url": receiver.url},
            )
            assert channel.status_code == 201, channel.text
            subscribed = client.post(
                "/api/v1/notifications/subscriptions", json={"channel_id": channel.json()["id"]}
            )
            assert subscribed.status_code == 201, subscribed.text
        for trace_name in ("entropy_collapse", "rise_then_fall"):
            created = client.post("/api/v1/runs", json=run_body(trace_name))
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            trace = getattr(_traces, trace_name)()
            for start in range(0, len(trace), 4):
                chunk = [
                    {"step": r["step"], "metrics": r["metrics"]} for r in trace[start : start + 4]
                ]
                response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": chunk})
                if not response.is_success:
                    failures.append(f"{response.request.url.path}: {response.status_code}")
    assert failures == []
