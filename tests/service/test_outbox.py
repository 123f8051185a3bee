"""The outbox's claims, leases and retry schedule, on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.db.base import utcnow
from service.db.engine import make_engine, make_session_factory
from service.db.models import NotificationChannel, NotificationSubscription, OutboxRow, Run
from service.notifications.events import alert_event
from service.storage import outbox


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine: Engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _seed(factory: sessionmaker[Session], count: int) -> None:
    with factory() as session:
        run = Run(project="p", name="r", group_size=8, kl_beta=0.0, config={}, tags={})
        channel = NotificationChannel(
            name="c", kind="webhook", url="http://127.0.0.1:9/x", url_hint="h"
        )
        session.add_all([run, channel])
        session.flush()
        session.add(
            NotificationSubscription(channel_id=channel.id, severities=[], rules=[], events=[])
        )
        session.flush()
        for step in range(count):
            event = alert_event(
                "alert_opened",
                run.id,
                rule="entropy_floor",
                severity="critical",
                step=step,
                observed={"entropy": 0.01},
                thresholds={"entropy": 0.05},
                message="m",
                action="a",
                best_step=None,
            )
            assert outbox.enqueue(session, event) == 1
        session.commit()


def test_a_claimed_row_is_not_claimed_again_until_its_lease_expires(
    factory: sessionmaker[Session],
) -> None:
    _seed(factory, 5)
    with factory() as first, factory() as second:
        mine = outbox.claim_due(first, limit=3, lease=60)
        theirs = outbox.claim_due(second, limit=10, lease=60)
        assert len(mine) == 3
        assert len(theirs) == 2
        assert not {c.id for c in mine} & {c.id for c in theirs}
        assert outbox.claim_due(second, limit=10, lease=60) == []
    with factory() as session:  # the first worker "died": its lease runs out
        session.execute(
            OutboxRow.__table__.update()
            .where(OutboxRow.id.in_([c.id for c in mine]))
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
        session.commit()
        again = outbox.claim_due(session, limit=10, lease=60)
    assert sorted(c.id for c in again) == sorted(c.id for c in mine)
    assert {c.attempts for c in again} == {2}
    with factory() as session:  # the old claim cannot settle a row someone else now holds
        assert not outbox.mark_sent(session, mine[0].id, mine[0].claim)
        assert outbox.mark_sent(session, again[0].id, again[0].claim)
        assert session.get(OutboxRow, again[0].id).status == "sent"  # type: ignore[union-attr]


def test_backoff_doubles_to_its_cap_then_the_row_is_dead(factory: sessionmaker[Session]) -> None:
    _seed(factory, 1)
    delays = []
    status = "pending"
    for _ in range(5):
        with factory() as session:
            session.execute(OutboxRow.__table__.update().values(next_attempt_at=utcnow()))
            session.commit()
            (claimed,) = outbox.claim_due(session, limit=1, lease=60)
            before = utcnow()
            status = outbox.mark_failed(
                session,
                claimed.id,
                claimed.claim,
                attempts=claimed.attempts,
                error="HTTP 503",
                max_attempts=5,
                backoff_base=2.0,
                backoff_max=10.0,
            )
            row = session.scalars(select(OutboxRow)).one()
            delays.append(round((row.next_attempt_at - before).total_seconds()))
    assert delays[:4] == [2, 4, 8, 10]
    assert status == "dead"
    with factory() as session:
        row = session.scalars(select(OutboxRow)).one()
        assert (row.status, row.attempts, row.last_error) == ("dead", 5, "HTTP 503")
        assert outbox.claim_due(session, limit=1, lease=60) == []


def test_old_sent_rows_are_purged_and_dead_ones_kept(factory: sessionmaker[Session]) -> None:
    _seed(factory, 4)
    now = utcnow()
    with factory() as session:
        ids = sorted(session.scalars(select(OutboxRow.id)))
        ages = {ids[0]: 40, ids[1]: 10}  # days since sent
        for row_id, days in ages.items():
            session.execute(
                OutboxRow.__table__.update()
                .where(OutboxRow.id == row_id)
                .values(status="sent", sent_at=now - timedelta(days=days))
            )
        session.execute(
            OutboxRow.__table__.update().where(OutboxRow.id == ids[2]).values(status="dead")
        )
        session.commit()
        assert outbox.purge_sent(session, older_than=now - timedelta(days=30)) == 1
        left = dict(session.execute(select(OutboxRow.id, OutboxRow.status)).all())
    assert left == {ids[1]: "sent", ids[2]: "dead", ids[3]: "pending"}
