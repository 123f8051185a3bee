"""Unsupervised-RLVR rules (science.md §4): ``model_collapse_step``,
``reward_accuracy_divergence`` and ``rise_then_fall``."""

from __future__ import annotations

from typing import Final

from pydantic import Field

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
from service.detectors.names import Severity
from service.detectors.records import StepRecord
from service.detectors.results import RuleResult, Value
from service.detectors.rule import Groups, Rule, RuleDoc
from service.detectors.rule_settings import (
    MAX_STEPS,
    MAX_WINDOW,
    MetricName,
    RuleSettings,
    Slope,
    TrendSettings,
)

__all__ = [
    "MODEL_COLLAPSE_STEP_RULE",
    "REWARD_ACCURACY_DIVERGENCE_RULE",
    "RISE_THEN_FALL_RULE",
    "ModelCollapseSettings",
    "RewardAccuracyDivergenceSettings",
    "RiseThenFallSettings",
    "collapse_window",
    "model_collapse_step",
    "reward_accuracy_divergence",
    "rise_then_fall",
    "smoothed",
]

MODEL_COLLAPSE_STEP: Final = "model_collapse_step"
REWARD_ACCURACY_DIVERGENCE: Final = "reward_accuracy_divergence"
RISE_THEN_FALL: Final = "rise_then_fall"


class ModelCollapseSettings(RuleSettings):
    """``model_collapse_step``: reward accuracy < ``threshold`` on each of the last ``window``
    observations; the first such step is recorded in the state as the Model Collapse Step."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    window: int = Field(1, ge=1, le=MAX_WINDOW, description="1 = the definition of §4.")
    threshold: float = Field(
        0.01, gt=0.0, le=1.0, description="Reward-accuracy threshold (science.md §4/§5)."
    )
    cooldown_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Steps before reopening.")


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
    s = ctx.config.settings(MODEL_COLLAPSE_STEP_RULE)
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


def model_collapse_step(ctx: RuleContext, s: ModelCollapseSettings) -> RuleResult:
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


MODEL_COLLAPSE_STEP_RULE: Final = Rule(
    name=MODEL_COLLAPSE_STEP,
    order=60,
    settings=ModelCollapseSettings,
    check=model_collapse_step,
    reads=(("reward_accuracy",),),
    doc=RuleDoc(
        signal="`reward_accuracy`; on the counts `reward_accuracy_agree` / `reward_accuracy_total` "
        "when the step carries them",
        threshold="< {threshold:g} (agree·100 < total); first such step recorded in state",
        window="{window} obs",
        action="stop the run and roll back to the best gt_reward step before it",
        science="§4, §5",
    ),
)


class RewardAccuracyDivergenceSettings(TrendSettings):
    """``reward_accuracy_divergence``: over the last ``window`` steps carrying both metrics,
    slope(proxy_reward) >= ``min_proxy_slope`` and
    slope(reward_accuracy) <= −``min_accuracy_decline``."""

    min_proxy_slope: Slope = Field(0.002, description="Proxy-reward rise per step that counts.")
    min_accuracy_decline: Slope = Field(
        0.002, description="Reward-accuracy fall per step that counts."
    )


def reward_accuracy_divergence(ctx: RuleContext, s: RewardAccuracyDivergenceSettings) -> RuleResult:
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


REWARD_ACCURACY_DIVERGENCE_RULE: Final = Rule(
    name=REWARD_ACCURACY_DIVERGENCE,
    order=70,
    settings=RewardAccuracyDivergenceSettings,
    check=reward_accuracy_divergence,
    reads=(("proxy_reward",), ("reward_accuracy",)),
    doc=RuleDoc(
        signal="slopes of `proxy_reward` and `reward_accuracy`",
        threshold="proxy ≥ +{min_proxy_slope:g}/step and accuracy ≤ −{min_accuracy_decline:g}/step",
        window="{window} obs (both present)",
        action="lower LR or change the intrinsic reward; prepare to roll back to the best step",
        science="§4",
    ),
)


class RiseThenFallSettings(RuleSettings):
    """``rise_then_fall``: smoothed ``metric`` (mean of the last ``window`` observations) <= running
    peak of the smoothed metric − ``margin``, at least ``patience_steps`` after the peak step."""

    window: int = Field(3, ge=1, le=MAX_WINDOW, description="Smoothing window (observations).")
    cooldown_steps: int = Field(20, ge=0, le=MAX_STEPS, description="Steps before reopening.")
    metric: MetricName = Field("gt_reward", description="Validation metric to track.")
    margin: float = Field(0.05, gt=0.0, le=1e6, description="Absolute drop below the peak.")
    patience_steps: int = Field(
        10, ge=0, le=MAX_STEPS, description="Steps after the peak before it may fire."
    )


def smoothed(ctx: RuleContext) -> float | None:
    """Mean of the last ``window`` observations of the rise-then-fall metric (None if too few)."""
    s = ctx.config.settings(RISE_THEN_FALL_RULE)
    _, vals = last_values(ctx.history, s.metric, s.window)
    if len(vals) < s.window:
        return None
    m = mean(vals)
    return m if finite(m) else None


def rise_then_fall(ctx: RuleContext, s: RiseThenFallSettings) -> RuleResult:
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


def _tracked_metric(s: RiseThenFallSettings) -> Groups:
    return ((s.metric,),)


RISE_THEN_FALL_RULE: Final = Rule(
    name=RISE_THEN_FALL,
    order=80,
    settings=RiseThenFallSettings,
    check=rise_then_fall,
    reads=_tracked_metric,
    doc=RuleDoc(
        signal="`{metric}` (configurable `metric`), mean of last {window}",
        threshold="≥ {margin:g} below the running peak, ≥ {patience_steps} steps after the peak",
        window="{window} obs smoothing",
        action="stop the run and roll back to the peak step (`rollback_step`)",
        science="§4",
    ),
)
