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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Final

from service.detectors._context import RuleContext
from service.detectors.config import DetectorConfig
from service.detectors.names import RuleStatus
from service.detectors.records import StepRecord
from service.detectors.registry import REGISTRY
from service.detectors.results import Evaluation, RuleResult
from service.detectors.rules_rewards import (
    MODEL_COLLAPSE_STEP_RULE,
    RISE_THEN_FALL_RULE,
    collapse_window,
    smoothed,
)
from service.detectors.state import DetectorState, Peak

__all__ = ["RULES", "evaluate"]

#: The built-in rules by name, in evaluation order (each judges one step on a context).
RULES: Final[Mapping[str, Callable[[RuleContext], RuleResult]]] = {
    rule.name: rule.run for rule in REGISTRY
}


def evaluate(
    config: DetectorConfig,
    group_size: int,
    history: Sequence[StepRecord],
    state: DetectorState,
) -> Evaluation:
    """Evaluate every rule of ``config`` (the rules its class was built from, in evaluation order)
    on ``history[-1]``. Raises ValueError on an empty or unsorted history or a group size < 1."""
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
    rules = type(config).rules
    if state.last_step is not None and newest.step <= state.last_step:
        reason = f"stale: step {newest.step} <= last evaluated step {state.last_step}"
        results = tuple(RuleResult(n, RuleStatus.NOT_EVALUABLE, reason) for n in rules.names)
        return Evaluation(step=newest.step, skipped=True, results=results, state=state)
    ctx = RuleContext(config, group_size, history, newest, state)
    ctx = replace(ctx, state=_advance(ctx))
    results = tuple(rule.run(ctx) for rule in rules)
    return Evaluation(step=newest.step, skipped=False, results=results, state=ctx.state)


def _advance(ctx: RuleContext) -> DetectorState:
    """Fold the newest step into the state: last step, running peak (``rise_then_fall``), Model
    Collapse Step (``model_collapse_step``), each when the config has that rule."""
    state = ctx.state
    rules = type(ctx.config).rules
    peak = state.peak
    if RISE_THEN_FALL_RULE.name in rules:
        rtf = ctx.config.settings(RISE_THEN_FALL_RULE)
        if peak is not None and peak.metric != rtf.metric:
            peak = None  # the tracked metric changed: start a new peak
        if rtf.enabled and ctx.newest.value(rtf.metric) is not None:
            current = smoothed(ctx)
            if current is not None and (peak is None or current > peak.value):
                peak = Peak(metric=rtf.metric, value=current, step=ctx.newest.step)
    mcs = state.model_collapse_step
    if mcs is None and MODEL_COLLAPSE_STEP_RULE.name in rules:
        mc = ctx.config.settings(MODEL_COLLAPSE_STEP_RULE)
        if (
            mc.enabled
            and ctx.newest.step >= mc.warmup_steps
            and ctx.newest.value("reward_accuracy") is not None
        ):
            window = collapse_window(ctx)
            if window is not None:
                mcs = window[0][0]
    return replace(state, last_step=ctx.newest.step, peak=peak, model_collapse_step=mcs)
