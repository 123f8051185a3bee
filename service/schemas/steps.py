"""Step records: what trainers send each step, and how series read back."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from service.metric_names import QUERY_FIELDS, STEP_METRICS
from service.schemas.common import (
    MAX_INT32,
    FiniteFloat,
    MetricName,
    Page,
    StrictModel,
    UtcDateTime,
)

MAX_STEPS_PER_BATCH = 1000
MAX_QUERIES_PER_STEP = 65536
MAX_METRICS_PER_STEP = 256

# No NUL (a text column cannot hold it); a pattern, not a Python validator: 512 ids a step.
QueryId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]

_METRICS_DOC = "\n".join(f"- `{m.name}` ({m.unit}): {m.description}" for m in STEP_METRICS)
_QUERY_DOC = {m.name: f"{m.description} ({m.unit})" for m in QUERY_FIELDS}


class QueryIn(StrictModel):
    """One query's group at this step."""

    query_id: QueryId = Field(description="Stable id of the query (prompt) across steps.")
    group_size: int = Field(ge=1, le=65536, description="Responses sampled for this query (count).")
    successes: int = Field(ge=0, le=65536, description="S+, correct responses (0..group_size).")
    entropy: FiniteFloat | None = Field(None, ge=0.0, le=1e4, description=_QUERY_DOC["entropy"])
    log_zprime: FiniteFloat | None = Field(
        None, ge=-1e6, le=1e6, description=_QUERY_DOC["log_zprime"]
    )
    log_zprime_raw: FiniteFloat | None = Field(
        None, ge=-1e6, le=1e6, description=_QUERY_DOC["log_zprime_raw"]
    )
    n_modes: int | None = Field(None, ge=0, le=65536, description=_QUERY_DOC["n_modes"])
    reward_accuracy: FiniteFloat | None = Field(
        None, ge=0.0, le=1.0, description=_QUERY_DOC["reward_accuracy"]
    )
    response_length: FiniteFloat | None = Field(
        None, ge=0.0, le=1e9, description=_QUERY_DOC["response_length"]
    )

    @model_validator(mode="after")
    def _successes_within_group(self) -> QueryIn:
        if self.successes > self.group_size:
            raise ValueError(
                f"successes ({self.successes}) must not exceed group_size ({self.group_size})"
            )
        return self


class StepIn(StrictModel):
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
    queries: list[QueryIn] = Field(
        default_factory=list,
        max_length=MAX_QUERIES_PER_STEP,
        description="Per-query rows (one per query of the batch).",
    )

    @field_validator("queries")
    @classmethod
    def _unique_queries(cls, queries: list[QueryIn]) -> list[QueryIn]:
        seen: set[str] = set()
        for index, query in enumerate(queries):
            if query.query_id in seen:
                raise ValueError(
                    f"queries[{index}].query_id {query.query_id!r} appears twice in the step; "
                    "each query has one row per step"
                )
            seen.add(query.query_id)
        return queries

    @model_validator(mode="after")
    def _consistent(self) -> StepIn:
        for name in self.non_finite:
            if self.metrics.get(name) is not None:
                raise ValueError(
                    f"non_finite names {name!r} but metrics[{name!r}] holds a finite value; "
                    "send non-finite metrics as null"
                )
        return self

    def content_hash(self) -> str:
        """Digest of the canonical content; an identical re-send has the same digest."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class StepBatchIn(StrictModel):
    steps: list[StepIn] = Field(
        min_length=1, max_length=MAX_STEPS_PER_BATCH, description="1..1000 step records."
    )

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, steps: list[StepIn]) -> list[StepIn]:
        seen: set[int] = set()
        for index, record in enumerate(steps):
            if record.step in seen:
                raise ValueError(f"steps[{index}].step {record.step} appears twice in the batch")
            seen.add(record.step)
        return steps


class StepBatchResult(BaseModel):
    accepted: list[int] = Field(description="Steps stored by this request.")
    duplicates: list[int] = Field(description="Steps already stored with identical content.")


class StepOut(BaseModel):
    step: int
    time: datetime | None
    received_at: datetime
    metrics: dict[str, float | None] = Field(description="Standard metrics and extras.")
    non_finite: list[str]
    n_queries: int


class StepSeries(Page[StepOut]):
    """A page of a run's steps in step order, in the paging shape of every listing (`items`,
    `next_cursor`); the cursor is the next step number."""

    run_id: int


class QueryOut(BaseModel):
    query_id: str
    group_size: int
    successes: int
    entropy: float | None
    log_zprime: float | None
    log_zprime_raw: float | None
    n_modes: int | None
    reward_accuracy: float | None
    response_length: float | None


class StepDetail(StepOut):
    queries: list[QueryOut]


class QueryPoint(BaseModel):
    step: int
    group_size: int
    successes: int
    success_rate: float = Field(description="successes / group_size")
    entropy: float | None
    log_zprime: float | None
    log_zprime_raw: float | None
    n_modes: int | None
    reward_accuracy: float | None
    response_length: float | None


class QueryHistory(BaseModel):
    run_id: int
    query_id: str
    points: list[QueryPoint]
