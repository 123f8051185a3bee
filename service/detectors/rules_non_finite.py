"""``non_finite``: any metric of the newest step is NaN/inf → critical at once."""

from __future__ import annotations

from service.detectors._context import RuleContext
from service.detectors.names import NON_FINITE
from service.detectors.results import RuleResult

__all__ = ["non_finite"]


def non_finite(ctx: RuleContext) -> RuleResult:
    s = ctx.config.non_finite
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
