"""The field types every wire model is built from: strict models, finite floats, metric names,
ISO-8601 date-times and text a database column can hold."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

__all__ = [
    "MAX_INT32",
    "FiniteFloat",
    "MetricName",
    "StorableText",
    "StrictModel",
    "UtcDateTime",
    "storable_text",
]

MAX_INT32 = 2**31 - 1


def storable_text(value: str) -> str:
    """Reject what a text column cannot hold: NUL characters (PostgreSQL refuses them) and lone
    surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


StorableText = AfterValidator(storable_text)


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range once converted to UTC") from exc


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: Any) -> Any:
    """Only ISO-8601 text: pydantic would otherwise read numbers (and numeric strings such as
    ``"0.5"``) as Unix timestamps."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO-8601 date-time string, e.g. 2026-11-23T10:00:00Z")
    return value


# A date-time: ISO-8601 text on the wire (never a number), naive taken as UTC, stored as UTC.
UtcDateTime = Annotated[
    datetime, BeforeValidator(_iso_text), Field(strict=False), AfterValidator(_to_utc)
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MetricName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$"),
]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, so a typo is a 422, not silently dropped;
    types are strict (no ``"5"`` → 5, no ``true`` → 1: JSON types must match the schema, except
    that an integer is a valid float and date-times are ISO-8601 strings)."""

    model_config = ConfigDict(extra="forbid", strict=True)
