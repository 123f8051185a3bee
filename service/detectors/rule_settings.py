"""What every rule's settings model has (:class:`RuleSettings`), the trend variant, and the field
types rules share. Each rule's own settings model lives beside the rule (``rules_*.py``).

Windows count *observations of the rule's metric* (records where it is present and finite), so
sparse metrics (``probe_*``, ``gt_reward``) work with the same settings; warm-up compares the newest
step number with ``warmup_steps``; cooldown counts steps after a resolve before the rule may reopen.
Defaults follow science.md §5; every other default is a documented heuristic. Every field is
bounded; unknown fields are rejected.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from service.detectors.names import Severity

__all__ = ["MAX_STEPS", "MAX_WINDOW", "MetricName", "RuleSettings", "Slope", "TrendSettings"]

MAX_STEPS: Final = 10_000_000
MAX_WINDOW: Final = 1000

MetricName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,99}$", description="A step metric name.")
]
Slope = Annotated[float, Field(ge=0.0, le=1e6)]


class RuleSettings(BaseModel):
    """Settings every rule has."""

    # Strict like every request body (``true`` is not 1); the severity alone is read from its
    # string value, and storage reads stored settings back with ``strict=False``.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = Field(True, description="Evaluate this rule. Disabling resolves its alert.")
    severity: Severity = Field(
        Severity.WARNING, strict=False, description="Severity of the alert it opens."
    )
    warmup_steps: int = Field(
        0, ge=0, le=MAX_STEPS, description="Not evaluated while the newest step < this."
    )
    window: int = Field(
        5, ge=1, le=MAX_WINDOW, description="Observations of the metric the rule looks at."
    )
    cooldown_steps: int = Field(
        10,
        ge=0,
        le=MAX_STEPS,
        description="After a resolve at step s the rule may reopen only at step >= s + this "
        "(ignored for rules in the policy's auto_stop_rules).",
    )
    resolve_after: int = Field(
        1,
        ge=1,
        le=MAX_WINDOW,
        description="Clear evaluations in a row before an open alert resolves (1: at the first). "
        "Raise it for a rule that flaps near its threshold; disabling the rule still resolves "
        "at once.",
    )


class TrendSettings(RuleSettings):
    """A rule that fits a least-squares slope needs at least 3 observations."""

    window: int = Field(
        20, ge=3, le=MAX_WINDOW, description="Observations the least-squares slope is fitted on."
    )
