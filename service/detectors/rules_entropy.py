"""Entropy rules: ``entropy_floor``, ``entropy_slope`` (science.md §1(b), §2, §5) and the two §4
failure signatures ``length_collapse`` and ``repetition_collapse``."""

from __future__ import annotations

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
from service.detectors.names import (
    ENTROPY_FLOOR,
    ENTROPY_SLOPE,
    LENGTH_COLLAPSE,
    REPETITION_COLLAPSE,
)
from service.detectors.results import RuleResult

__all__ = ["entropy_floor", "entropy_slope", "length_collapse", "repetition_collapse"]


def entropy_floor(ctx: RuleContext) -> RuleResult:
    s = ctx.config.entropy_floor
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


def entropy_slope(ctx: RuleContext) -> RuleResult:
    s = ctx.config.entropy_slope
    floor = ctx.config.entropy_floor.floor
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


def length_collapse(ctx: RuleContext) -> RuleResult:
    s = ctx.config.length_collapse
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


def repetition_collapse(ctx: RuleContext) -> RuleResult:
    s = ctx.config.repetition_collapse
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
