"""The notification outbox: rows written in the event's own transaction, claimed and settled by
the delivery worker (service.notifications.worker).

Claiming is a lease: a worker sets ``locked_until`` and its ``claim`` token on due rows, commits,
delivers, then settles each row only if its claim still holds. On PostgreSQL the due rows are
picked with ``FOR UPDATE SKIP LOCKED`` (workers never wait on each other); on SQLite each row is
claimed by a compare-and-set ``UPDATE ... WHERE id = ? AND <still due>``. A worker that dies
leaves its lease to expire, and the row is due again: delivery is at least once, and never twice
at the same time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import NotificationChannel, NotificationSubscription, OutboxRow, Run
from service.notifications.events import SEVERITY_EVENTS, Event


def _matches(subscription: NotificationSubscription, event: Event) -> bool:
    if subscription.events and event.kind not in subscription.events:
        return False
    if (
        subscription.severities
        and event.kind in SEVERITY_EVENTS
        and event.severity not in subscription.severities
    ):
        return False
    return not subscription.rules or any(rule in subscription.rules for rule in event.rules)


def enqueue(session: Session, event: Event) -> int:
    """Add (not commit) one outbox row per channel subscribed to the event; the caller's commit
    writes them with the event. Returns how many. One indexed query when nobody subscribes."""
    subscriptions = list(
        session.scalars(
            select(NotificationSubscription).where(
                or_(
                    NotificationSubscription.run_id.is_(None),
                    NotificationSubscription.run_id == event.run_id,
                )
            )
        )
    )
    if not subscriptions:
        return 0
    run = session.get(Run, event.run_id)
    if run is None:
        return 0
    channels = sorted(
        {
            s.channel_id
            for s in subscriptions
            if (s.project is None or s.project == run.project) and _matches(s, event)
        }
    )
    payload = event.payload(run.project, run.name)
    payload["occurred_at"] = utcnow().isoformat()
    for channel_id in channels:
        session.add(
            OutboxRow(
                channel_id=channel_id,
                run_id=event.run_id,
                event=event.kind,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )
    return len(channels)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed row with what delivering it needs (read while the claim was taken)."""

    id: int
    claim: str
    attempts: int
    event: str
    payload: dict[str, Any]
    channel_kind: str
    url: str
    signing_secret: str | None


def _due(now: datetime) -> Any:
    return and_(
        OutboxRow.status == "pending",
        OutboxRow.next_attempt_at <= now,
        or_(OutboxRow.locked_until.is_(None), OutboxRow.locked_until < now),
    )


def claim_due(session: Session, *, limit: int, lease: float) -> list[Claimed]:
    """Claim up to ``limit`` due rows for ``lease`` seconds and commit the claim."""
    now = utcnow()
    token = uuid.uuid4().hex
    until = now + timedelta(seconds=lease)
    query = select(OutboxRow.id).where(_due(now)).order_by(OutboxRow.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.scalars(query.with_for_update(skip_locked=True)))
        if ids:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids))
                .values(locked_until=until, claim=token, attempts=OutboxRow.attempts + 1)
                .execution_options(synchronize_session=False)
            )
    else:
        ids = []
        for candidate in list(session.scalars(query)):
            moved = session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == candidate, _due(now))
                .values(locked_until=until, claim=token, attempts=OutboxRow.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                ids.append(candidate)
    if not ids:
        session.rollback()
        return []
    rows = session.execute(
        select(
            OutboxRow.id,
            OutboxRow.attempts,
            OutboxRow.event,
            OutboxRow.payload,
            NotificationChannel.kind,
            NotificationChannel.url,
            NotificationChannel.signing_secret,
        )
        .join(NotificationChannel, NotificationChannel.id == OutboxRow.channel_id)
        .where(OutboxRow.id.in_(ids), OutboxRow.claim == token)
        .order_by(OutboxRow.id)
    ).all()
    session.commit()
    return [Claimed(r[0], token, r[1], r[2], dict(r[3]), r[4], r[5], r[6]) for r in rows]


def mark_sent(session: Session, row_id: int, claim: str) -> bool:
    """Settle a delivered row, if this worker's claim still holds."""
    now = utcnow()
    moved = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.claim == claim, OutboxRow.status == "pending")
        .values(status="sent", sent_at=now, locked_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(moved.rowcount)  # type: ignore[attr-defined]


def mark_failed(
    session: Session,
    row_id: int,
    claim: str,
    *,
    attempts: int,
    error: str,
    max_attempts: int,
    backoff_base: float,
    backoff_max: float,
) -> str:
    """Record a failed try: due again after ``backoff_base * 2**(attempts-1)`` seconds (capped at
    ``backoff_max``), or dead after ``max_attempts`` tries. Returns the new status."""
    now = utcnow()
    dead = attempts >= max_attempts
    delay = min(backoff_max, backoff_base * 2 ** max(0, attempts - 1))
    status = "dead" if dead else "pending"
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.claim == claim, OutboxRow.status == "pending")
        .values(
            status=status,
            locked_until=None,
            last_error=error[:512],
            next_attempt_at=now + timedelta(seconds=delay),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return status


def purge_sent(session: Session, *, older_than: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` rows sent before ``older_than`` (dead ones stay, for the API and
    the run page); returns how many."""
    ids = list(
        session.scalars(
            select(OutboxRow.id)
            .where(OutboxRow.status == "sent", OutboxRow.sent_at < older_than)
            .order_by(OutboxRow.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(delete(OutboxRow).where(OutboxRow.id.in_(ids)))
    session.commit()
    return len(ids)
