"""Run registration and run views."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from service.detectors import DetectorConfig, RunPolicy
from service.schemas.common import FiniteFloat, StorableText, StrictModel, storable_text
from service.wire import RunSource, RunStatus, Verdict

MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 32

RunName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True), StorableText
]
ProjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True), StorableText
]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64), StorableText]
TagValue = Annotated[str, StringConstraints(max_length=256), StorableText]


class RunCreate(StrictModel):
    name: RunName = Field(description="Run name, unique within the project.")
    project: ProjectName = Field("default", description="Project the run belongs to.")
    group_size: int = Field(
        ge=1, le=65536, description="G, responses sampled per query (count, 1..65536)."
    )
    kl_beta: FiniteFloat = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="β, the KL coefficient towards π_ref (0 when the run trains without KL).",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form run configuration (JSON object, at most 64 KiB serialised). "
        "`reference_beta` supplies the β used for Z'(q) when kl_beta is 0 (science.md §2).",
    )
    tags: dict[TagKey, TagValue] = Field(
        default_factory=dict, max_length=64, description="String labels, at most 64."
    )

    detectors: DetectorConfig | None = Field(
        None, description="Per-run rule settings; omitted rules keep the defaults (science §5)."
    )
    policy: RunPolicy | None = Field(
        None, description="Automatic actions: which rules stop the run, the α controller."
    )
    source: RunSource = Field(
        RunSource.LIVE,
        description="`live` for a trainer streaming its steps; `imported` for a past run's logs "
        "replayed by `sharpwatch import` (the live page marks it). Set at registration only.",
    )

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_config_node(value, "config", 1)
        size = len(json.dumps(value, allow_nan=False).encode())
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"config is {size} bytes serialised; the limit is {MAX_CONFIG_BYTES}")
        return value


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


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    project: str
    group_size: int
    kl_beta: float
    config: dict[str, Any]
    tags: dict[str, str]
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    last_step: int | None = Field(description="Highest step stored.")
    last_step_at: datetime | None = Field(description="When the highest step was received.")
    verdict: Verdict
    alpha: float | None = Field(description="IAC α in effect, as the trainer last reported it.")
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


def _check_config_node(node: Any, path: str, depth: int) -> None:
    """Config is free-form JSON, but bounded: nested at most ``MAX_CONFIG_DEPTH`` levels, and
    every key and string storable as text (no NUL, no lone surrogates)."""
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"{path} is nested deeper than {MAX_CONFIG_DEPTH} levels")
    if isinstance(node, str):
        try:
            storable_text(node)
        except ValueError as exc:
            raise ValueError(f"{path} {exc}") from None
    elif isinstance(node, dict):
        for key, child in node.items():
            try:
                storable_text(key)
            except ValueError as exc:
                raise ValueError(f"a key of {path} {exc}") from None
            _check_config_node(child, f"{path}.{key}", depth + 1)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_config_node(child, f"{path}[{index}]", depth + 1)
