"""Shared field types and the page envelope."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MetricName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$"),
]
MAX_INT32 = 2**31 - 1


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, so a typo is a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )
