"""``evaluate``: run every rule on the newest step of a run's history.

Ordering contract: ``history`` is the run's most recent records sorted by step, strictly increasing
(oldest → newest); the newest is the step just ingested. The service fetches the last
``config.history_needed()`` records. A step is evaluated only if it is newer than
``state.last_step``; otherwise (a duplicate or a late, older step) the evaluation is ``skipped``:
every rule is NOT_EVALUABLE, the state is returned unchanged and no alert transitions follow. A late
step still stored by the service is simply part of later windows. Nothing reads the wall clock, so
the result is a pure function of (config, group_size, history, state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from service.detectors._context import RuleContext
from service.detectors.config import DetectorConfig
from service.detectors.names import (
    DEGENERATE_GROUPS,
    ENTROPY_FLOOR,
    ENTROPY_SLOPE,
    LENGTH_COLLAPSE,
    MODEL_COLLAPSE_STEP,
    NON_FINITE,
    PROBE_DECLINE,
    REPETITION_COLLAPSE,
    REWARD_ACCURACY_DIVERGENCE,
    RISE_THEN_FALL,
    RULE_NAMES,
    SIGNAL_STARVATION,
    ZPRIME_PRESSURE,
    RuleStatus,
)
from service.detectors.records import StepRecord
from service.detectors.results import Evaluation, RuleResult
from service.detectors.rules_entropy import (
    entropy_floor,
    entropy_slope,
    length_collapse,
    repetition_collapse,
)
from service.detectors.rules_groups import degenerate_groups, signal_starvation, zprime_pressure
from service.detectors.rules_non_finite import non_finite
from service.detectors.rules_probe import probe_decline
from service.detectors.rules_rewards import (
    collapse_window,
    model_collapse_step,
    reward_accuracy_divergence,
    rise_then_fall,
    smoothed,
)
from service.detectors.state import DetectorState, Peak

__all__ = ["RULES", "evaluate"]

Rule = Callable[[RuleContext], RuleResult]

RULES: Final[dict[str, Rule]] = {
    ENTROPY_FLOOR: entropy_floor,
    ENTROPY_SLOPE: entropy_slope,
    SIGNAL_STARVATION: signal_starvation,
    DEGENERATE_GROUPS: degenerate_groups,
    ZPRIME_PRESSURE: zprime_pressure,
    MODEL_COLLAPSE_STEP: model_collapse_step,
    REWARD_ACCURACY_DIVERGENCE: reward_accuracy_divergence,
    RISE_THEN_FALL: rise_then_fall,
    PROBE_DECLINE: probe_decline,
    LENGTH_COLLAPSE: length_collapse,
    REPETITION_COLLAPSE: repetition_collapse,
    NON_FINITE: non_finite,
}
assert tuple(RULES) == RULE_NAMES


def evaluate(
    config: DetectorConfig,
    group_size: int,
    history: Sequence[StepRecord],
    state: DetectorState,
) -> Evaluation:
    """Evaluate every rule on ``history[-1]``. Raises ValueError on an empty or unsorted history
    or a group size < 1."""
    if isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if not history:
        raise ValueError("history is empty")
    prev = None
    for rec in history:
        if prev is not None and rec.step <= prev:
            raise ValueError(f"history not strictly increasing by step at step {rec.step}")
        prev = rec.step
    newest = history[-1]
    if state.last_step is not None and newest.step <= state.last_step:
        reason = f"stale: step {newest.step} <= last evaluated step {state.last_step}"
        results = tuple(RuleResult(n, RuleStatus.NOT_EVALUABLE, reason) for n in RULE_NAMES)
        return Evaluation(step=newest.step, skipped=True, results=results, state=state)
    ctx = RuleContext(config, group_size, history, newest, state)
    ctx = replace(ctx, state=_advance(ctx))
    results = tuple(rule(ctx) for rule in RULES.values())
    return Evaluation(step=newest.step, skipped=False, results=results, state=ctx.state)


def _advance(ctx: RuleContext) -> DetectorState:
    """Fold the newest step into the state: last step, running peak, Model Collapse Step."""
    state = ctx.state
    cfg = ctx.config
    peak = state.peak
    rtf = cfg.rise_then_fall
    if peak is not None and peak.metric != rtf.metric:
        peak = None  # the tracked metric changed: start a new peak
    if rtf.enabled and ctx.newest.value(rtf.metric) is not None:
        current = smoothed(ctx)
        if current is not None and (peak is None or current > peak.value):
            peak = Peak(metric=rtf.metric, value=current, step=ctx.newest.step)
    mcs = state.model_collapse_step
    mc = cfg.model_collapse_step
    if (
        mcs is None
        and mc.enabled
        and ctx.newest.step >= mc.warmup_steps
        and ctx.newest.value("reward_accuracy") is not None
    ):
        window = collapse_window(ctx)
        if window is not None:
            mcs = window[0][0]
    return replace(state, last_step=ctx.newest.step, peak=peak, model_collapse_step=mcs)
