"""``RunPolicy``: what the service does on its own when rules fire — stop the run, adjust IAC α."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.detectors.registry import RuleName
from service.detectors.rule_settings import MetricName

__all__ = ["RunPolicy"]


class RunPolicy(BaseModel):
    """Per-run automatic-action policy. α defaults follow science.md §3/§5 (range [0, 2])."""

    # Strict like every request body (``true`` is not 1); the rule sets are read from JSON
    # arrays, and storage reads a stored policy back with ``strict=False``.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    auto_stop_rules: frozenset[RuleName] = Field(
        frozenset({"model_collapse_step", "entropy_floor", "non_finite"}),
        strict=False,
        description="A firing of any of these rules requests a stop (whatever its severity); "
        "their alerts ignore cooldown. entropy_floor is already 'sustained' (its window).",
    )
    auto_alpha: bool = Field(True, description="Let the α controller send alpha-adjust commands.")
    alpha_min: float = Field(0.0, ge=0.0, le=10.0, description="Lower bound for α.")
    alpha_max: float = Field(2.0, ge=0.0, le=10.0, description="Upper bound for α.")
    alpha_step: float = Field(0.25, gt=0.0, le=10.0, description="Size of one adjustment.")
    alpha_cooldown_steps: int = Field(
        20, ge=0, le=10_000_000, description="Steps between two adjustments (at most one per)."
    )
    alpha_raise_on: frozenset[RuleName] = Field(
        frozenset({"zprime_pressure", "entropy_slope", "entropy_floor"}),
        strict=False,
        description="Raise α while any of these rules fires (over-sharpening or entropy decline).",
    )
    alpha_lower_blocked_by: frozenset[RuleName] = Field(
        frozenset({"signal_starvation", "degenerate_groups"}),
        strict=False,
        description="Never lower α while any of these fires: a success drop from task difficulty "
        "(starvation) is not a sign that α is too high.",
    )
    alpha_lower_metric: MetricName = Field(
        "success_rate", description="Success signal whose decline (with healthy entropy) lowers α."
    )
    alpha_lower_window: int = Field(
        20, ge=3, le=1000, description="Observations for the lower-α slope and entropy mean."
    )
    alpha_lower_slope: float = Field(
        0.002, gt=0.0, le=1e6, description="Per-step decline of alpha_lower_metric that lowers α."
    )
    alpha_relax_zprime_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="α relaxes back toward its baseline only while the window mean of the raw "
        "Z'>1 share (zprime_raw_gt1_frac) is at or below this, with entropy healthy; between it "
        "and zprime_pressure's max_fraction α holds (the dead band that lets it settle).",
    )
    alpha_healthy_entropy_factor: float = Field(
        2.0,
        ge=1.0,
        le=1000.0,
        description="Entropy is 'healthy' when its window mean >= entropy floor × this "
        "(default 0.2 nats: seed 002's healthy IAC range 0.20–0.24).",
    )

    @field_validator("auto_stop_rules", "alpha_raise_on", "alpha_lower_blocked_by", mode="before")
    @classmethod
    def _no_repeats(cls, value: Any) -> Any:
        # A set on the wire is a list with uniqueItems (as documented): a repeat is a mistake
        # to report, not to drop silently.
        if isinstance(value, list | tuple):
            seen: set[Any] = set()
            for item in value:
                if not isinstance(item, str):
                    continue  # the type check reports it
                if item in seen:
                    raise ValueError(f"{item!r} is listed twice; list each rule once")
                seen.add(item)
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.alpha_min > self.alpha_max:
            raise ValueError("alpha_min must be <= alpha_max")
        return self
