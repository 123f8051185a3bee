"""Run registration and run views."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from service.schemas.common import FiniteFloat, StrictModel

RunStatus = Literal["running", "stopped", "finished", "failed"]
MAX_CONFIG_BYTES = 64 * 1024

RunName = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
ProjectName = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256)]


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

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, allow_nan=False).encode())
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"config is {size} bytes serialised; the limit is {MAX_CONFIG_BYTES}")
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
