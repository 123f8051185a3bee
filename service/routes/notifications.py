"""Notification channels, subscriptions and deliveries (issue 20). Channels and subscriptions
need an operator token; deliveries are readable by read and operator tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import Field

from service.body_guard import GuardedRoute
from service.db.models import NotificationChannel
from service.deps import NO_QUERY, FleetReader, Operator, SessionDep
from service.schemas.common import Page
from service.schemas.notifications import (
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    DeliveryOut,
    DeliveryStatus,
    SubscriptionCreate,
    SubscriptionOut,
)
from service.schemas.query import QueryParameters
from service.storage import notifications as store

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"], route_class=GuardedRoute)
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class SubscriptionsQuery(QueryParameters):
    channel_id: int | None = Field(None, ge=1, le=2**31 - 1)


class DeliveriesQuery(QueryParameters):
    status: DeliveryStatus | None = None
    run_id: int | None = Field(None, ge=1, le=2**31 - 1)
    cursor: str | None = Field(None, max_length=18, pattern=r"^\d{1,18}$")
    limit: int = Field(100, ge=1, le=1000)


def _channel(row: NotificationChannel) -> ChannelOut:
    return ChannelOut(
        id=row.id,
        name=row.name,
        kind=row.kind,
        url_hint=row.url_hint,
        signed=row.signing_secret is not None,
        created_at=row.created_at,
    )


@router.post(
    "/channels",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_201_CREATED,
    summary="Add a channel: a signed JSON webhook, Slack or Discord (URL and secret write-only)",
)
def create_channel(body: ChannelCreate, session: SessionDep, _: Operator) -> ChannelCreated:
    row, generated = store.create_channel(session, body)
    return ChannelCreated(**_channel(row).model_dump(), signing_secret=generated)


@router.get("/channels", dependencies=[NO_QUERY], summary="Channels (URLs shown as hints only)")
def list_channels(session: SessionDep, _: Operator) -> Page[ChannelOut]:
    return Page[ChannelOut](items=[_channel(row) for row in store.list_channels(session)])


@router.delete(
    "/channels/{channel_id}",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a channel, its subscriptions and its undelivered notifications",
)
def delete_channel(channel_id: ItemId, session: SessionDep, _: Operator) -> Response:
    store.delete_channel(session, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/subscriptions",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a channel to a project's or a run's events (or every run's)",
)
def create_subscription(
    body: SubscriptionCreate, session: SessionDep, _: Operator
) -> SubscriptionOut:
    return SubscriptionOut.model_validate(store.create_subscription(session, body))


@router.get("/subscriptions", summary="Subscriptions, optionally of one channel")
def list_subscriptions(
    session: SessionDep,
    _: Operator,
    query: Annotated[SubscriptionsQuery, Query()],
) -> Page[SubscriptionOut]:
    rows = store.list_subscriptions(session, query.channel_id)
    return Page[SubscriptionOut].of(rows, None)


@router.delete(
    "/subscriptions/{subscription_id}",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a subscription",
)
def delete_subscription(subscription_id: ItemId, session: SessionDep, _: Operator) -> Response:
    store.delete_subscription(session, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/deliveries",
    summary="Notifications and their delivery state, newest first (`status=dead`: gave up)",
)
def list_deliveries(
    session: SessionDep,
    _: FleetReader,
    query: Annotated[DeliveriesQuery, Query()],
) -> Page[DeliveryOut]:
    rows, next_id = store.deliveries(
        session,
        status=query.status,
        run_id=query.run_id,
        limit=query.limit,
        before_id=int(query.cursor) if query.cursor else None,
    )
    return Page[DeliveryOut].of(rows, next_id)


@router.post(
    "/deliveries/{delivery_id}/retry",
    dependencies=[NO_QUERY],
    summary="Send a dead notification again, with a fresh set of tries",
)
def retry_delivery(delivery_id: ItemId, session: SessionDep, _: Operator) -> DeliveryOut:
    return DeliveryOut.model_validate(store.retry(session, delivery_id))
