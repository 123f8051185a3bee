"""Per-project retention of per-query rows (``PUT /api/v1/projects/{project}/retention``) and
what ``sharpwatch gc`` did."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import MAX_INT32, StrictModel


class RetentionIn(StrictModel):
    full_steps: int = Field(
        ge=1,
        le=MAX_INT32,
        description="A run's newest N step numbers keep every per-query row "
        "(steps > last_step − N).",
    )
    keep_every: int = Field(
        ge=0,
        le=MAX_INT32,
        description="Older steps keep their per-query rows only when step % keep_every == 0 "
        "(1 keeps all, 0 keeps none). Steps, step series and per-step histograms are kept.",
    )


class RetentionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    project: str
    full_steps: int
    keep_every: int
    updated_at: datetime


class RunCollected(BaseModel):
    """One run's share of a ``sharpwatch gc`` pass."""

    run_id: int
    project: str
    cutoff_step: int = Field(description="Steps ≤ this are past the full-resolution window.")
    rows_deleted: int = Field(description="Per-query rows deleted (or, dry run, to delete).")
