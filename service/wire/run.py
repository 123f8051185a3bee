"""The run as both sides see it: the spec a trainer registers and the service's view of a run
that the trainer reads back."""

from __future__ import annotations

import json
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field, StringConstraints, field_validator

from service.wire.enums import RunStatus
from service.wire.types import FiniteFloat, StorableText, StrictModel, storable_text

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "ProjectName",
    "RunInfo",
    "RunName",
    "RunSpec",
    "TagKey",
    "TagValue",
]

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


Detectors = TypeVar("Detectors")
Policy = TypeVar("Policy")


class RunSpec(StrictModel, Generic[Detectors, Policy]):
    """What a trainer registers a run with (``POST /api/v1/runs``). ``Detectors`` and
    ``Policy``: the rule settings' and the policy's models (the service's
    ``service.schemas.runs.RunCreate``) or plain JSON objects (a trainer's)."""

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
    detectors: Detectors | None = Field(
        None, description="Per-run rule settings; omitted rules keep the defaults (science §5)."
    )
    policy: Policy | None = Field(
        None, description="Automatic actions: which rules stop the run, the α controller."
    )

    @field_validator("config")
    @classmethod
    def _config_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_config_node(value, "config", 1)
        size = len(json.dumps(value, allow_nan=False).encode())
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"config is {size} bytes serialised; the limit is {MAX_CONFIG_BYTES}")
        return value


class RunInfo(BaseModel):
    """The service's view of a registered run, the part a trainer reads back."""

    id: int
    name: str
    project: str
    group_size: int
    kl_beta: float
    status: RunStatus
    last_step: int | None = Field(None, description="Highest step stored.")
    alpha: float | None = Field(
        None,
        description="IAC α in effect: the α of the trainer's last acknowledged adjust_alpha, else "
        "what the newest step reports.",
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
