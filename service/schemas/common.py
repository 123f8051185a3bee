"""Shared field types and the page envelope."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Self, TypeVar

from pydantic import BaseModel, Field

# The field types live with the wire contract (service.wire.types); re-exported for the schemas.
from service.wire.types import MAX_INT32 as MAX_INT32
from service.wire.types import FiniteFloat as FiniteFloat
from service.wire.types import MetricName as MetricName
from service.wire.types import StorableText as StorableText
from service.wire.types import StrictModel as StrictModel
from service.wire.types import UtcDateTime as UtcDateTime
from service.wire.types import storable_text as storable_text

T = TypeVar("T")


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
