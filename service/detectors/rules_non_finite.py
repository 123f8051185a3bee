"""``non_finite``: any metric of the newest step is NaN/inf → critical at once."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors.names import Severity
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import MAX_STEPS, RuleSettings

__all__ = ["NON_FINITE_RULE", "NonFiniteSettings", "non_finite"]

NON_FINITE: Final = "non_finite"


class NonFiniteSettings(RuleSettings):
    """``non_finite``: the newest step reports any metric as NaN/inf."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    window: int = Field(1, ge=1, le=1, description="Always the newest step.")
    cooldown_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Steps before reopening.")


def non_finite(ctx: RuleContext, s: NonFiniteSettings) -> RuleResult:
    gated = ctx.gate(NON_FINITE, s)
    if gated is not None:
        return gated
    names = ctx.newest.non_finite_names()
    if not names:
        return ctx.clear(NON_FINITE, "all reported metrics finite")
    listed = ", ".join(names)
    return ctx.fire(
        NON_FINITE,
        observed={"non_finite_count": len(names), **{f"{n}_non_finite": 1 for n in names}},
        thresholds={"max_non_finite": 0},
        message=f"non-finite metrics at step {ctx.step}: {listed}",
        action=(
            f"stop the run ({listed} became NaN/inf); roll back to the last finite checkpoint "
            "and lower the learning rate"
        ),
    )


NON_FINITE_RULE: Final = Rule(
    name=NON_FINITE,
    order=120,
    settings=NonFiniteSettings,
    check=non_finite,
    reads=(),  # every metric the step reports
    doc=RuleDoc(
        signal="`non_finite` list, or a NaN/inf value",
        threshold="any",
        window="newest step",
        action="stop, roll back to the last finite checkpoint, lower LR",
    ),
)
