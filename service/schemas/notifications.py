"""Notification channels, subscriptions and deliveries (issue 20).

A channel's ``url`` and ``signing_secret`` are write-only: no answer carries them after the one
that created the channel (which returns a generated signing secret once, as ``sharpwatch tokens
create`` returns a token once); lists show ``url_hint``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.detectors import RULE_NAMES
from service.notifications.events import EventKind
from service.schemas.common import MAX_INT32, StorableText, StrictModel
from service.wire import Severity

ChannelKind = Literal["webhook", "slack", "discord"]
DeliveryStatus = Literal["pending", "sent", "dead"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), StorableText]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=256), StorableText]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048), StorableText]


def url_hint(url: str) -> str:
    """What may be shown of a secret URL: its scheme and host (the path holds the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"


class ChannelCreate(StrictModel):
    name: Name = Field(description="A unique name, e.g. `ml-oncall-slack`.")
    kind: ChannelKind = Field(
        description="`webhook` (signed JSON), `slack` (incoming webhook) or `discord` (webhook)."
    )
    url: Url = Field(description="Where to POST. Write-only: never returned.")
    signing_secret: Secret | None = Field(
        None,
        description="HMAC-SHA256 key of a `webhook` channel (16+ characters); generated and "
        "returned once when omitted. Write-only.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class ChannelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: ChannelKind
    url_hint: str = Field(description="Scheme and host of the URL; the rest is secret.")
    signed: bool = Field(description="Whether requests carry an HMAC signature.")
    created_at: datetime


class ChannelCreated(ChannelOut):
    signing_secret: str | None = Field(
        None,
        description="The generated signing secret, shown this once (null when you gave one or "
        "the channel is not a webhook).",
    )


class SubscriptionCreate(StrictModel):
    channel_id: int = Field(ge=1, le=MAX_INT32)
    project: Name | None = Field(None, description="Only this project's runs.")
    run_id: int | None = Field(None, ge=1, le=MAX_INT32, description="Only this run.")
    severities: list[Severity] = Field(
        default_factory=list,
        max_length=2,
        description="Alert severities to hear of (alert events only); empty = all.",
    )
    rules: list[str] = Field(
        default_factory=list, max_length=64, description="Rules to hear of; empty = all."
    )
    events: list[EventKind] = Field(
        default_factory=list, max_length=16, description="Event kinds to hear of; empty = all."
    )

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        for rule in value:
            if rule not in RULE_NAMES:
                raise ValueError(f"{rule!r} is not a rule; known rules: {', '.join(RULE_NAMES)}")
        return value


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel_id: int
    project: str | None
    run_id: int | None
    severities: list[str]
    rules: list[str]
    events: list[str]
    created_at: datetime


class DeliveryOut(BaseModel):
    """One notification to one channel, as the outbox holds it."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The outbox id, sent as the `Idempotency-Key` header.")
    channel_id: int
    run_id: int | None
    event: str
    status: DeliveryStatus = Field(description="`pending`, `sent`, or `dead` (gave up).")
    attempts: int
    last_error: str | None = Field(description="`HTTP <status>` or the error's type.")
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
