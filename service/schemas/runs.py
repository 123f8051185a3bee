"""Run registration and run views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from service.detectors import DetectorConfig, RunPolicy
from service.schemas.common import StorableText, StrictModel
from service.wire import RunSource, RunStatus, Verdict
from service.wire.run import RunInfo, RunSpec, TagKey, TagValue


class RunCreate(RunSpec[DetectorConfig, RunPolicy]):
    source: RunSource = Field(
        RunSource.LIVE,
        description="`live` for a trainer streaming its steps; `imported` for a past run's logs "
        "replayed by `sharpwatch import` (the live page marks it). Set at registration only.",
    )


class RunUpdate(StrictModel):
    """Operator changes to a run. Omitted fields stay as they are."""

    status: RunStatus | None = Field(
        None, description="`finished` or `failed` ends the run; `running` reopens it."
    )
    failure_reason: Annotated[str, StorableText] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Why the run failed (with `status: failed`): shown on the run and its page.",
    )
    detectors: DetectorConfig | None = None
    policy: RunPolicy | None = None
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=64)
    alpha_pinned: bool | None = Field(
        None,
        description="`false` releases an operator's α pin and hands α back to the controller; "
        "`true` pins α where it is (an operator's adjust_alpha command pins it too).",
    )

    @field_validator("failure_reason")
    @classmethod
    def _only_when_failing(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("status") != RunStatus.FAILED:
            raise ValueError('a failure_reason goes with "status": "failed"')
        return value


class RunOut(RunInfo):
    model_config = ConfigDict(from_attributes=True)

    config: dict[str, Any]
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime
    last_step_at: datetime | None = Field(description="When the highest step was received.")
    verdict: Verdict
    alpha_pinned: bool = Field(
        description="An operator pinned α (adjust_alpha command): the α controller sends no "
        'adjust_alpha until an operator releases it with PATCH {"alpha_pinned": false}.'
    )
    model_collapse_step: int | None
    best_step: int | None
    stop_reason: str | None
    failure_reason: str | None = Field(
        description="Why the run failed, as the trainer reported it; null unless it failed."
    )
    finished_at: datetime | None
    source: RunSource = Field(description="`live`, or `imported` by `sharpwatch import`.")
    detectors: dict[str, Any] | None = Field(
        validation_alias="detector_config", description="Rule settings (null = defaults)."
    )
    policy: dict[str, Any] | None


class RunRegistered(RunOut):
    ingest_token: str | None = Field(
        None,
        description="Bearer token for this run's steps and commands (authentication on only). "
        "Shown once; a re-registration issues a new one.",
    )
