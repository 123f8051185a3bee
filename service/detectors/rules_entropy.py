"""Entropy rules: ``entropy_floor``, ``entropy_slope`` (science.md §1(b), §2, §5) and the two §4
failure signatures ``length_collapse`` and ``repetition_collapse``."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors._stats import (
    exact_fraction,
    finite,
    last_pairs,
    last_values,
    line,
    mean,
    slope,
)
from service.detectors.names import Severity
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import MAX_STEPS, RuleSettings, Slope, TrendSettings

__all__ = [
    "ENTROPY_FLOOR_RULE",
    "ENTROPY_SLOPE_RULE",
    "LENGTH_COLLAPSE_RULE",
    "REPETITION_COLLAPSE_RULE",
    "EntropyFloorSettings",
    "EntropySlopeSettings",
    "LengthCollapseSettings",
    "RepetitionCollapseSettings",
    "entropy_floor",
    "entropy_slope",
    "length_collapse",
    "repetition_collapse",
]

ENTROPY_FLOOR: Final = "entropy_floor"
ENTROPY_SLOPE: Final = "entropy_slope"
LENGTH_COLLAPSE: Final = "length_collapse"
REPETITION_COLLAPSE: Final = "repetition_collapse"


class EntropyFloorSettings(RuleSettings):
    """``entropy_floor``: each of the last ``window`` entropy observations is below ``floor``."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    floor: float = Field(
        0.10,
        gt=0.0,
        le=50.0,
        description="Entropy floor in nats (science.md §5; also used by "
        "entropy_slope and the α controller).",
    )


def entropy_floor(ctx: RuleContext, s: EntropyFloorSettings) -> RuleResult:
    gated = ctx.gate(ENTROPY_FLOOR, s, "entropy")
    if gated is not None:
        return gated
    steps, vals = last_values(ctx.history, "entropy", s.window)
    if len(vals) < s.window:
        return ctx.too_few(ENTROPY_FLOOR, "entropy", len(vals), s.window)
    top = max(vals)
    if top >= s.floor:
        return ctx.clear(ENTROPY_FLOOR, f"entropy window max {top:.4f} >= floor {s.floor:g}")
    healthy: int | None = None
    for rec in reversed(ctx.history):
        v = rec.value("entropy")
        if v is not None and v >= s.floor:
            healthy = rec.step
            break
    where = (
        f"roll back to step {healthy} (last entropy >= floor)"
        if healthy is not None
        else "roll back to a checkpoint from before the collapse"
    )
    return ctx.fire(
        ENTROPY_FLOOR,
        observed={"entropy": vals[-1], "entropy_window_max": top, "window_start_step": steps[0]},
        thresholds={"floor": s.floor, "window": s.window},
        message=(
            f"entropy collapsed: {vals[-1]:.4f} nats, below the {s.floor:g}-nat floor on the "
            f"last {s.window} observations (since step {steps[0]})"
        ),
        action=f"stop the run, {where} and resume with a higher IAC alpha or DLC",
        rollback_step=healthy,
    )


ENTROPY_FLOOR_RULE: Final = Rule(
    name=ENTROPY_FLOOR,
    order=10,
    settings=EntropyFloorSettings,
    check=entropy_floor,
    reads=(("entropy",),),
    doc=RuleDoc(
        signal="`entropy`",
        threshold="< {floor:.2f} nats on every observation of the window",
        window="{window} obs",
        action="stop the run, roll back to the last step with entropy ≥ floor, resume with higher "
        "IAC α or DLC",
        science="§1(b), §3, §5",
    ),
)


class EntropySlopeSettings(TrendSettings):
    """``entropy_slope``: entropy slope < 0 and the fitted line reaches the floor within
    ``horizon_steps`` steps of the newest step (already at/below the floor counts as 0 steps)."""

    horizon_steps: int = Field(
        100, ge=1, le=MAX_STEPS, description="Early-warning horizon H in steps."
    )


def entropy_slope(ctx: RuleContext, s: EntropySlopeSettings) -> RuleResult:
    floor = ctx.config.settings(ENTROPY_FLOOR_RULE).floor
    gated = ctx.gate(ENTROPY_SLOPE, s, "entropy")
    if gated is not None:
        return gated
    steps, vals = last_values(ctx.history, "entropy", s.window)
    if len(vals) < s.window:
        return ctx.too_few(ENTROPY_SLOPE, "entropy", len(vals), s.window)
    b = slope(steps, vals)
    fitted = mean(vals) + b * (steps[-1] - mean(steps))
    if not finite(b, fitted):
        return ctx.overflow(ENTROPY_SLOPE)
    if b >= 0.0:
        return ctx.clear(ENTROPY_SLOPE, f"entropy slope {b:.3g}/step is not negative")
    to_floor = 0.0 if fitted <= floor else (fitted - floor) / -b
    if not finite(to_floor):
        return ctx.clear(ENTROPY_SLOPE, "entropy slope too small to project a crossing")
    if to_floor > s.horizon_steps:
        return ctx.clear(
            ENTROPY_SLOPE,
            f"entropy reaches the floor in ~{to_floor:.0f} steps > horizon {s.horizon_steps}",
        )
    at = ctx.step + round(to_floor)
    return ctx.fire(
        ENTROPY_SLOPE,
        observed={
            "entropy": vals[-1],
            "entropy_fitted": fitted,
            "entropy_slope": b,
            "steps_to_floor": to_floor,
        },
        thresholds={"floor": floor, "horizon_steps": s.horizon_steps, "window": s.window},
        message=(
            f"entropy falling {b:.3g} nats/step; projected to reach the {floor:g}-nat floor "
            f"by step {at} (within {s.horizon_steps} steps)"
        ),
        action=(
            "raise IAC alpha (or enable DLC) now; early in the run, stop and restart from a "
            "higher-entropy checkpoint (pre-RL triage)"
        ),
    )


ENTROPY_SLOPE_RULE: Final = Rule(
    name=ENTROPY_SLOPE,
    order=20,
    settings=EntropySlopeSettings,
    check=entropy_slope,
    reads=(("entropy",),),
    doc=RuleDoc(
        signal="least-squares slope of `entropy`",
        threshold="slope < 0 and fitted line reaches 0.10 within H = {horizon_steps} steps",
        window="{window} obs",
        action="raise IAC α (or enable DLC); early in the run, restart from a higher-entropy "
        "checkpoint",
        science="§1(b)",
    ),
)


class LengthCollapseSettings(TrendSettings):
    """``length_collapse``: over the last ``window`` steps carrying both, the relative slopes
    (slope / window mean) of response_length and of entropy are both
    <= −``min_relative_decline``."""

    min_relative_decline: Slope = Field(
        0.005, description="Relative fall per step (0.005 = 0.5 %/step) of both signals."
    )


def length_collapse(ctx: RuleContext, s: LengthCollapseSettings) -> RuleResult:
    gated = ctx.gate(LENGTH_COLLAPSE, s, "response_length")
    if gated is not None:
        return gated
    if ctx.newest.value("entropy") is None:
        return ctx.missing(LENGTH_COLLAPSE, "entropy")
    steps, lengths, ents = last_pairs(ctx.history, "response_length", "entropy", s.window)
    if len(steps) < s.window:
        return ctx.too_few(LENGTH_COLLAPSE, "response_length+entropy", len(steps), s.window)
    ml, me = mean(lengths), mean(ents)
    if not finite(ml, me):
        return ctx.overflow(LENGTH_COLLAPSE)
    if ml <= 0.0 or me <= 0.0:
        return ctx.clear(LENGTH_COLLAPSE, "window mean length or entropy is not positive")
    rl = slope(steps, lengths) / ml
    re = slope(steps, ents) / me
    if not finite(ml, me, rl, re):
        return ctx.overflow(LENGTH_COLLAPSE)
    limit = -s.min_relative_decline
    if rl > limit or re > limit:
        return ctx.clear(
            LENGTH_COLLAPSE,
            f"relative slopes length {rl:.3g}/step, entropy {re:.3g}/step (fire at <= {limit:g})",
        )
    return ctx.fire(
        LENGTH_COLLAPSE,
        observed={
            "response_length": lengths[-1],
            "entropy": ents[-1],
            "length_relative_slope": rl,
            "entropy_relative_slope": re,
        },
        thresholds={"max_relative_slope": limit, "window": s.window},
        message=(
            f"length collapse: response length ({rl * 100:.2f} %/step) falling with entropy "
            f"({re * 100:.2f} %/step) over {s.window} steps"
        ),
        action=(
            "stop or roll back; move away from sequence-probability rewards or add a "
            "minimum-length constraint"
        ),
    )


LENGTH_COLLAPSE_RULE: Final = Rule(
    name=LENGTH_COLLAPSE,
    order=100,
    settings=LengthCollapseSettings,
    check=length_collapse,
    reads=(("response_length",), ("entropy",)),
    doc=RuleDoc(
        signal="relative slopes of `response_length` and `entropy`",
        threshold="both ≤ −0.5 %/step",
        window="{window} obs (both present)",
        action="stop or roll back; move away from probability rewards, add a length floor",
        science="§4",
    ),
)


class RepetitionCollapseSettings(TrendSettings):
    """``repetition_collapse``: slope(repetition_rate) >= ``min_rise`` per step and the newest value
    >= ``min_level``."""

    min_rise: Slope = Field(0.005, description="Repetition-rate rise per step.")
    min_level: float = Field(0.2, ge=0.0, le=1.0, description="Fires only above this level.")


def repetition_collapse(ctx: RuleContext, s: RepetitionCollapseSettings) -> RuleResult:
    gated = ctx.gate(REPETITION_COLLAPSE, s, "repetition_rate")
    if gated is not None:
        return gated
    steps, vals = last_values(ctx.history, "repetition_rate", s.window)
    if len(vals) < s.window:
        return ctx.too_few(REPETITION_COLLAPSE, "repetition_rate", len(vals), s.window)
    b = slope(steps, vals)
    if not finite(b):
        return ctx.overflow(REPETITION_COLLAPSE)
    if b < s.min_rise or exact_fraction(vals[-1]) < line(s.min_level):
        return ctx.clear(REPETITION_COLLAPSE, f"repetition rate {vals[-1]:.3f}, slope {b:.3g}/step")
    return ctx.fire(
        REPETITION_COLLAPSE,
        observed={"repetition_rate": vals[-1], "repetition_slope": b},
        thresholds={"min_rise": s.min_rise, "min_level": s.min_level, "window": s.window},
        message=(
            f"repetition collapse: repetition rate {vals[-1]:.3f} rising {b:.3g}/step over "
            f"{s.window} steps"
        ),
        action="stop or roll back; add a repetition penalty or move away from entropy rewards",
    )


REPETITION_COLLAPSE_RULE: Final = Rule(
    name=REPETITION_COLLAPSE,
    order=110,
    settings=RepetitionCollapseSettings,
    check=repetition_collapse,
    reads=(("repetition_rate",),),
    doc=RuleDoc(
        signal="slope and level of `repetition_rate`",
        threshold="slope ≥ {min_rise:g}/step and latest ≥ {min_level:g}",
        window="{window} obs",
        action="stop or roll back; repetition penalty or other reward",
        science="§4",
    ),
)
