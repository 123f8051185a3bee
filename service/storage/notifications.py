"""Notification channels and subscriptions (create, list, delete) and the deliveries listing."""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import NotificationChannel, NotificationSubscription, OutboxRow, Run
from service.errors import ConflictError, NotFoundError
from service.schemas.notifications import ChannelCreate, SubscriptionCreate, url_hint
from service.storage._pagination import keyset_page


def create_channel(session: Session, spec: ChannelCreate) -> tuple[NotificationChannel, str | None]:
    """A new channel, and its signing secret when one was generated (to show once)."""
    generated = None
    secret = spec.signing_secret
    if spec.kind == "webhook" and secret is None:
        secret = generated = secrets.token_urlsafe(32)
    if spec.kind != "webhook":
        secret = None
    channel = NotificationChannel(
        name=spec.name,
        kind=spec.kind,
        url=spec.url,
        url_hint=url_hint(spec.url),
        signing_secret=secret,
    )
    session.add(channel)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a channel named {spec.name!r} exists", field="name") from None
    return channel, generated


def list_channels(session: Session) -> list[NotificationChannel]:
    return list(session.scalars(select(NotificationChannel).order_by(NotificationChannel.id)))


def get_channel(session: Session, channel_id: int) -> NotificationChannel:
    channel = session.get(NotificationChannel, channel_id)
    if channel is None:
        raise NotFoundError(f"channel {channel_id} does not exist", field="channel_id")
    return channel


def delete_channel(session: Session, channel_id: int) -> None:
    """Delete a channel with its subscriptions and its undelivered notifications."""
    session.delete(get_channel(session, channel_id))
    session.commit()


def create_subscription(session: Session, spec: SubscriptionCreate) -> NotificationSubscription:
    get_channel(session, spec.channel_id)
    if spec.run_id is not None and session.get(Run, spec.run_id) is None:
        raise NotFoundError(f"run {spec.run_id} does not exist", field="run_id")
    row = NotificationSubscription(
        channel_id=spec.channel_id,
        project=spec.project,
        run_id=spec.run_id,
        severities=list(spec.severities),
        rules=list(spec.rules),
        events=list(spec.events),
    )
    session.add(row)
    session.commit()
    return row


def list_subscriptions(
    session: Session, channel_id: int | None = None
) -> list[NotificationSubscription]:
    query = select(NotificationSubscription).order_by(NotificationSubscription.id)
    if channel_id is not None:
        query = query.where(NotificationSubscription.channel_id == channel_id)
    return list(session.scalars(query))


def delete_subscription(session: Session, subscription_id: int) -> None:
    row = session.get(NotificationSubscription, subscription_id)
    if row is None:
        raise NotFoundError(
            f"subscription {subscription_id} does not exist", field="subscription_id"
        )
    session.delete(row)
    session.commit()


def deliveries(
    session: Session,
    *,
    status: str | None = None,
    run_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> tuple[list[OutboxRow], int | None]:
    query = select(OutboxRow).order_by(OutboxRow.id.desc())
    if status is not None:
        query = query.where(OutboxRow.status == status)
    if run_id is not None:
        query = query.where(OutboxRow.run_id == run_id)
    if before_id is not None:
        query = query.where(OutboxRow.id < before_id)
    return keyset_page(session, query, limit)


def retry(session: Session, row_id: int) -> OutboxRow:
    """Send a dead notification again (a fresh set of tries, due now)."""
    moved = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.status == "dead")
        .values(status="pending", attempts=0, next_attempt_at=utcnow(), locked_until=None)
        .execution_options(synchronize_session=False)
    )
    row = session.scalars(
        select(OutboxRow).where(OutboxRow.id == row_id).execution_options(populate_existing=True)
    ).first()
    if row is None:
        session.rollback()
        raise NotFoundError(f"delivery {row_id} does not exist", field="delivery_id")
    if not moved.rowcount:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError(f"delivery {row_id} is {row.status}; only a dead one is retried")
    session.commit()
    return row
