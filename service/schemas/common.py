"""Shared field types and the page envelope."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

T = TypeVar("T")


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
MAX_INT32 = 2**31 - 1


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, so a typo is a 422, not silently dropped;
    types are strict (no ``"5"`` → 5, no ``true`` → 1: JSON types must match the schema, except
    that an integer is a valid float and date-times are ISO-8601 strings)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )

    @classmethod
    def of(cls, rows: Iterable[object], next_id: int | None) -> Self:
        """A page from stored rows (validated into ``T`` from their attributes) and the storage
        layer's continuation id."""
        return cls.model_validate(
            {"items": list(rows), "next_cursor": None if next_id is None else str(next_id)},
            from_attributes=True,
        )


class FieldError(BaseModel):
    field: str = Field(
        description="The field, as a path such as `steps[0].queries[3].successes`; `body` for "
        "the body as a whole."
    )
    reason: str
    type: str = Field(description="Machine-readable kind of error.")


class ValidationProblem(BaseModel):
    """The 422 answer: every invalid field, named."""

    detail: str = Field(description="Every error as `field: reason`, joined by `; `.")
    errors: list[FieldError]
    field: str | None = Field(
        None, description="The field at fault, when one rule names a single field."
    )


class Problem(BaseModel):
    """Every other error answer (401, 403, 404, 409, 413, 415, 503)."""

    detail: str
    field: str | None = Field(description="The field, parameter or header at fault, if one is.")
