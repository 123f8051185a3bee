"""The step record of the wire contract: what a trainer sends for one training step (its
``queries`` as rows or as columns: ``service.wire.query``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Generic, TypeVar

from annotated_types import MaxLen
from pydantic import Field, field_validator, model_validator

from service.wire.metrics import STEP_METRICS
from service.wire.query import MAX_QUERIES_PER_STEP, QueryColumns, QueryRow, RowsOrColumns
from service.wire.types import MAX_INT32, FiniteFloat, MetricName, StrictModel, UtcDateTime

__all__ = [
    "MAX_METRICS_PER_STEP",
    "MAX_QUERIES_PER_STEP",
    "MAX_STEPS_PER_BATCH",
    "QUERIES_DOC",
    "STEP_RECORD_FIELDS",
    "StepRecord",
    "check_unique_query_ids",
]

MAX_STEPS_PER_BATCH = 1000
MAX_METRICS_PER_STEP = 256

#: The ``queries`` field's description, in both the wire record and the service's schema.
QUERIES_DOC = (
    "The step's per-query rows (one per query of the batch), in either shape: a list of row "
    "objects, or an object of columns (`query_id`, `group_size`, `successes` required, each "
    "optional measurement's column may be omitted: null for every query), element i of every "
    "column being query i. Columns are smaller and much faster to ingest."
)

_METRICS_DOC = "\n".join(f"- `{m.name}` ({m.unit}): {m.description}" for m in STEP_METRICS)


Row = TypeVar("Row", bound=QueryRow)


def check_unique_query_ids(query_ids: Iterable[str]) -> None:
    """A step has one row per query: ``ValueError`` naming the first id that appears twice."""
    ids = query_ids if isinstance(query_ids, Sequence) else list(query_ids)
    if len(set(ids)) == len(ids):
        return
    seen: set[str] = set()
    for index, query_id in enumerate(ids):
        if query_id in seen:
            raise ValueError(
                f"queries[{index}].query_id {query_id!r} appears twice in the step; "
                "each query has one row per step"
            )
        seen.add(query_id)


class StepRecord(StrictModel, Generic[Row]):
    """One training step: its metrics (non-finite ones as null, named in ``non_finite``) and
    one row per query of the batch (``Row``: :class:`QueryRow`, or a schema's subclass of it)."""

    step: int = Field(ge=0, le=MAX_INT32, description="Training step (≥ 0).")
    time: UtcDateTime | None = Field(
        None, description="When the step finished (ISO-8601; naive times are taken as UTC)."
    )
    metrics: dict[MetricName, FiniteFloat | None] = Field(
        default_factory=dict,
        max_length=MAX_METRICS_PER_STEP,
        description="Step metrics, all optional floats; unknown names are kept as extras. "
        "A metric the trainer saw as NaN/inf is sent as null and named in `non_finite`. "
        "Standard names:\n" + _METRICS_DOC,
    )
    non_finite: list[MetricName] = Field(
        default_factory=list,
        max_length=MAX_METRICS_PER_STEP,
        description="Names of metrics that were NaN or infinite at the trainer (sent as null).",
    )
    queries: Annotated[
        Annotated[list[Row], MaxLen(MAX_QUERIES_PER_STEP)] | QueryColumns, RowsOrColumns()
    ] = Field(
        default_factory=list,
        description=QUERIES_DOC,
    )

    @field_validator("queries")
    @classmethod
    def _unique_queries(cls, queries: list[Row] | QueryColumns) -> list[Row] | QueryColumns:
        if isinstance(queries, list):  # the columns checked their ids themselves
            check_unique_query_ids(query.query_id for query in queries)
        return queries

    @model_validator(mode="after")
    def _consistent(self) -> StepRecord[Row]:
        for name in self.non_finite:
            if self.metrics.get(name) is not None:
                raise ValueError(
                    f"non_finite names {name!r} but metrics[{name!r}] holds a finite value; "
                    "send non-finite metrics as null"
                )
        return self


#: The record's top-level keys.
STEP_RECORD_FIELDS: frozenset[str] = frozenset(StepRecord.model_fields)
