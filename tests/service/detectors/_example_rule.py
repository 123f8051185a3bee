"""A detector rule written the way a new one is: this file and nothing else. test_registry.py uses
it as is twice: added to the built-in registry in-process, and copied into a copy of the package
as ``service/detectors/rules_entropy_ceiling.py``."""

from __future__ import annotations

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors.names import Severity
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import RuleSettings

NAME = "entropy_ceiling"


class EntropyCeilingSettings(RuleSettings):
    """``entropy_ceiling``: the newest entropy is above ``ceiling``."""

    severity: Severity = Field(Severity.CRITICAL, strict=False, description="Alert severity.")
    window: int = Field(250, ge=1, le=1000, description="Unused; counts in history_needed.")
    ceiling: float = Field(5.0, gt=0.0, description="Entropy ceiling in nats.")


def entropy_ceiling(ctx: RuleContext, s: EntropyCeilingSettings) -> RuleResult:
    gated = ctx.gate(NAME, s, "entropy")
    if gated is not None:
        return gated
    value = ctx.newest.value("entropy")
    assert value is not None
    if value <= s.ceiling:
        return ctx.clear(NAME, f"entropy {value:g} <= {s.ceiling:g}")
    return ctx.fire(
        NAME,
        observed={"entropy": value},
        thresholds={"ceiling": s.ceiling},
        message=f"entropy {value:g} above {s.ceiling:g}",
        action="check the sampling temperature",
    )


ENTROPY_CEILING_RULE = Rule(
    name=NAME,
    order=15,  # between entropy_floor (10) and entropy_slope (20)
    settings=EntropyCeilingSettings,
    check=entropy_ceiling,
    reads=(("entropy",),),
    doc=RuleDoc(
        signal="`entropy`",
        threshold="> {ceiling:g} nats",
        window="newest step",
        action="check the sampling temperature",
    ),
)
