"""Unsupervised-RLVR rules (science.md §4): ``model_collapse_step``,
``reward_accuracy_divergence`` and ``rise_then_fall``."""

from __future__ import annotations

from service.detectors._context import RuleContext
from service.detectors._stats import (
    count_below,
    exact_fraction,
    finite,
    last_pairs,
    last_values,
    line,
    mean,
    slope,
)
from service.detectors.names import MODEL_COLLAPSE_STEP, REWARD_ACCURACY_DIVERGENCE, RISE_THEN_FALL
from service.detectors.records import StepRecord
from service.detectors.results import RuleResult, Value

__all__ = ["model_collapse_step", "reward_accuracy_divergence", "rise_then_fall"]


def _below(rec: StepRecord, threshold: float) -> bool:
    """Reward accuracy strictly below ``threshold`` (science.md §7: on the counts when the
    record carries them, ``agree·100 < total``; else on the ratio read back as counts)."""
    agree = rec.value("reward_accuracy_agree")
    total = rec.value("reward_accuracy_total")
    if agree is not None and total is not None and total > 0:
        return count_below(agree, total, threshold)
    acc = rec.value("reward_accuracy")
    return acc is not None and exact_fraction(acc) < line(threshold)


def collapse_window(ctx: RuleContext) -> tuple[list[int], list[float]] | None:
    """The last ``window`` reward-accuracy observations when all are below the threshold."""
    s = ctx.config.model_collapse_step
    steps: list[int] = []
    vals: list[float] = []
    for rec in reversed(ctx.history):
        v = rec.value("reward_accuracy")
        if v is None:
            continue
        if not _below(rec, s.threshold):
            return None
        steps.append(rec.step)
        vals.append(v)
        if len(vals) >= s.window:
            break
    if len(vals) < s.window:
        return None
    steps.reverse()
    vals.reverse()
    return steps, vals


def _rollback_before(ctx: RuleContext, step: int) -> int | None:
    peak = ctx.state.peak
    if peak is not None and peak.step < step:
        return peak.step
    return None


def model_collapse_step(ctx: RuleContext) -> RuleResult:
    s = ctx.config.model_collapse_step
    gated = ctx.gate(MODEL_COLLAPSE_STEP, s, "reward_accuracy")
    if gated is not None:
        return gated
    window = collapse_window(ctx)
    acc = ctx.newest.value("reward_accuracy")
    assert acc is not None  # gate checked it
    if window is None:
        return ctx.clear(
            MODEL_COLLAPSE_STEP, f"reward accuracy {acc:.4f} >= {s.threshold:g} in the window"
        )
    mcs = ctx.state.model_collapse_step
    first = mcs if mcs is not None else window[0][0]
    rollback = _rollback_before(ctx, first)
    where = (
        f"step {rollback}" if rollback is not None else f"the last checkpoint before step {first}"
    )
    return ctx.fire(
        MODEL_COLLAPSE_STEP,
        observed={"reward_accuracy": acc, "model_collapse_step": first},
        thresholds={"threshold": s.threshold, "window": s.window},
        message=(
            f"Model Collapse Step {first}: reward accuracy {acc:.4f} < {s.threshold:g}; the "
            "pseudo-reward no longer agrees with the oracle"
        ),
        action=f"stop the run and roll back to {where}",
        rollback_step=rollback,
    )


def reward_accuracy_divergence(ctx: RuleContext) -> RuleResult:
    s = ctx.config.reward_accuracy_divergence
    gated = ctx.gate(REWARD_ACCURACY_DIVERGENCE, s, "proxy_reward")
    if gated is not None:
        return gated
    if ctx.newest.value("reward_accuracy") is None:
        return ctx.missing(REWARD_ACCURACY_DIVERGENCE, "reward_accuracy")
    steps, proxy, acc = last_pairs(ctx.history, "proxy_reward", "reward_accuracy", s.window)
    if len(steps) < s.window:
        return ctx.too_few(
            REWARD_ACCURACY_DIVERGENCE, "proxy_reward+reward_accuracy", len(steps), s.window
        )
    bp = slope(steps, proxy)
    ba = slope(steps, acc)
    if not finite(bp, ba):
        return ctx.overflow(REWARD_ACCURACY_DIVERGENCE)
    if bp < s.min_proxy_slope or ba > -s.min_accuracy_decline:
        return ctx.clear(
            REWARD_ACCURACY_DIVERGENCE,
            f"proxy-reward slope {bp:.3g}/step, reward-accuracy slope {ba:.3g}/step",
        )
    peak = ctx.state.peak
    rollback = peak.step if peak is not None else None
    tail = f"; best {peak.metric} at step {peak.step}" if peak is not None else ""
    return ctx.fire(
        REWARD_ACCURACY_DIVERGENCE,
        observed={
            "proxy_reward": proxy[-1],
            "reward_accuracy": acc[-1],
            "proxy_reward_slope": bp,
            "reward_accuracy_slope": ba,
        },
        thresholds={
            "min_proxy_slope": s.min_proxy_slope,
            "min_accuracy_decline": s.min_accuracy_decline,
            "window": s.window,
        },
        message=(
            f"proxy reward rising ({bp:+.3g}/step) while reward accuracy falls ({ba:+.3g}/step) "
            f"over {s.window} steps: early sign of model collapse{tail}"
        ),
        action=(
            "lower the learning rate or change the intrinsic reward now; prepare to roll back "
            + (f"to step {rollback}" if rollback is not None else "to a recent checkpoint")
        ),
        rollback_step=rollback,
    )


def smoothed(ctx: RuleContext) -> float | None:
    """Mean of the last ``window`` observations of the rise-then-fall metric (None if too few)."""
    s = ctx.config.rise_then_fall
    _, vals = last_values(ctx.history, s.metric, s.window)
    if len(vals) < s.window:
        return None
    m = mean(vals)
    return m if finite(m) else None


def rise_then_fall(ctx: RuleContext) -> RuleResult:
    s = ctx.config.rise_then_fall
    gated = ctx.gate(RISE_THEN_FALL, s, s.metric)
    if gated is not None:
        return gated
    current = smoothed(ctx)
    peak = ctx.state.peak
    if current is None or peak is None or peak.metric != s.metric:
        return ctx.too_few(RISE_THEN_FALL, s.metric, 0 if current is None else 1, s.window)
    since = ctx.step - peak.step
    drop = peak.value - current
    if drop < s.margin or since < s.patience_steps:
        return ctx.clear(
            RISE_THEN_FALL,
            f"{s.metric} {current:.4f}, peak {peak.value:.4f} at step {peak.step} "
            f"({since} steps ago)",
        )
    observed: dict[str, Value] = {
        s.metric: current,
        "peak": peak.value,
        "best_step": peak.step,
        "drop": drop,
        "steps_since_peak": since,
    }
    return ctx.fire(
        RISE_THEN_FALL,
        observed=observed,
        thresholds={"margin": s.margin, "patience_steps": s.patience_steps, "window": s.window},
        message=(
            f"rise-then-fall: {s.metric} {current:.4f} is {drop:.4f} below its peak "
            f"{peak.value:.4f} at step {peak.step} ({since} steps ago)"
        ),
        action=f"stop the run and roll back to step {peak.step} (best {s.metric})",
        rollback_step=peak.step,
    )
