"""Step records: what trainers send each step, and how series read back."""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from service.schemas.common import Page, StrictModel
from service.schemas.query_rows import QueryRows
from service.wire.query import QueryId as QueryId
from service.wire.query import QueryMeasures, QueryRow
from service.wire.step import MAX_METRICS_PER_STEP as MAX_METRICS_PER_STEP
from service.wire.step import MAX_QUERIES_PER_STEP as MAX_QUERIES_PER_STEP
from service.wire.step import MAX_STEPS_PER_BATCH as MAX_STEPS_PER_BATCH
from service.wire.step import QUERIES_DOC, StepRecord, check_unique_query_ids


class QueryIn(QueryRow):
    """One query's group at this step."""


class StepIn(StepRecord[QueryIn]):
    """One step's record (the rows are ``QueryIn``: the name the OpenAPI document and the
    validation errors show)."""

    # Each row is validated as a ``QueryIn``, then the step's rows are held by column: a model
    # per row would hold ~4x the body's size (issue 14; service.schemas.query_rows).
    queries: QueryRows = Field(  # type: ignore[assignment]
        default_factory=QueryRows, description=QUERIES_DOC
    )

    @field_validator("queries")
    @classmethod
    def _unique_queries(cls, queries: QueryRows) -> QueryRows:  # type: ignore[override]
        check_unique_query_ids(queries.query_ids)  # the ids column: no row is built
        return queries

    def content_hash(self) -> str:
        """Digest of the content, whatever shape ``queries`` came in: an identical re-send has
        the same digest. Version 2: the non-query fields' canonical JSON, then each packed
        column's bytes (fixed item size and byte order; the ids joined by NUL, which no id
        holds). Steps stored before it carry :meth:`legacy_content_hash`."""
        digest = hashlib.sha256(_DIGEST_V2)
        content = self.model_dump(mode="json", exclude={"queries"})
        digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
        digest.update(len(self.queries).to_bytes(8, "little"))
        for column, _ in self.queries.packed():
            if isinstance(column, array):
                digest.update(_fixed_bytes(column))
            else:
                digest.update(b"\0".join(query_id.encode() for query_id in column))
        return digest.hexdigest()

    def legacy_content_hash(self) -> str:
        """The digest before version 2 (the canonical JSON of the whole record, rows as
        objects): what steps stored by earlier versions carry, compared before a 409."""
        # == model_dump(mode="json"); the rows' dump is JSON-safe as it is, and pydantic's pass
        # over it in JSON mode cost more than building it.
        content = self.model_dump(mode="json", exclude={"queries"})
        content["queries"] = self.queries.dump()
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_DIGEST_V2 = b"sharpwatch step content v2\0"


def _fixed_bytes(column: array[Any]) -> bytes | array[Any]:
    """A packed column as 8-byte little-endian items (``array('l')`` is 4 bytes on some
    platforms; the digest must not depend on the server's)."""
    if column.itemsize != 8:
        column = array("q", column)
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column


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


class QueryOut(QueryRow):
    """A stored query row."""


class StepDetail(StepOut):
    queries: list[QueryOut]


class _QueryAtStep(BaseModel):
    step: int
    group_size: int
    successes: int
    success_rate: float = Field(description="successes / group_size")


class QueryPoint(QueryMeasures, _QueryAtStep):
    """One query's row at one step of its history."""


class QueryHistory(BaseModel):
    run_id: int
    query_id: str
    points: list[QueryPoint]
