"""The IAC α controller (science.md §3, §5): pure, bounded, at most one adjustment per cooldown.

Decision on each evaluated step, first match wins:

1. ``hold`` — auto α off, evaluation skipped (stale step), or the run is stopping/stopped.
2. **raise** — any rule in ``policy.alpha_raise_on`` fires (default: zprime_pressure, entropy_slope,
   entropy_floor: over-sharpening pressure or entropy decline). Held instead while in cooldown or
   already at ``alpha_max``.
3. **lower** — none of those fire, nor any rule in ``policy.alpha_lower_blocked_by`` (default:
   signal_starvation, degenerate_groups — a difficulty problem, not an α problem); entropy is
   healthy (mean of its last ``alpha_lower_window`` observations >= entropy floor ×
   ``alpha_healthy_entropy_factor``, default 0.2 nats); and ``alpha_lower_metric`` (default
   success_rate) degrades: least-squares slope over its last ``alpha_lower_window`` observations
   <= −``alpha_lower_slope``. (Too-high α hurts easy queries, seed 002 Table 5.) Held while in
   cooldown or already at ``alpha_min``.
4. ``hold`` — otherwise.

New α = clamp(old ± alpha_step, alpha_min, alpha_max). Every decision carries its reason and inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from service.detectors._stats import finite, last_values, mean, slope
from service.detectors.config import DetectorConfig
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.results import Evaluation, Value
from service.detectors.state import DetectorState

__all__ = ["AlphaAction", "AlphaDecision", "decide_alpha"]


class AlphaAction(StrEnum):
    RAISE = "raise"
    LOWER = "lower"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class AlphaDecision:
    step: int
    action: AlphaAction
    old_alpha: float
    new_alpha: float
    reason: str
    inputs: Mapping[str, Value]
    #: Rules that triggered a raise (empty otherwise).
    triggers: tuple[str, ...]
    state: DetectorState

    @property
    def changed(self) -> bool:
        return self.action is not AlphaAction.HOLD

    def to_json(self) -> dict[str, Any]:
        """The decision without the state (store the state separately)."""
        return {
            "step": self.step,
            "action": self.action.value,
            "old_alpha": self.old_alpha,
            "new_alpha": self.new_alpha,
            "reason": self.reason,
            "inputs": {k: v for k, v in self.inputs.items() if math.isfinite(v)},
            "triggers": list(self.triggers),
        }


def decide_alpha(
    policy: RunPolicy,
    config: DetectorConfig,
    history: Sequence[StepRecord],
    evaluation: Evaluation,
    state: DetectorState,
    current_alpha: float,
    *,
    stopping: bool = False,
) -> AlphaDecision:
    """Decide the α change for ``evaluation.step``. ``state`` is the latest state (normally
    ``Transitions.state``); the returned decision's ``state`` records the adjustment step."""
    step = evaluation.step
    inputs: dict[str, Value] = {"alpha": current_alpha}

    def hold(reason: str, triggers: tuple[str, ...] = ()) -> AlphaDecision:
        return AlphaDecision(
            step, AlphaAction.HOLD, current_alpha, current_alpha, reason, inputs, triggers, state
        )

    def change(action: AlphaAction, reason: str, triggers: tuple[str, ...]) -> AlphaDecision:
        delta = policy.alpha_step if action is AlphaAction.RAISE else -policy.alpha_step
        new = min(policy.alpha_max, max(policy.alpha_min, current_alpha + delta))
        if new == current_alpha:
            bound = "alpha_max" if action is AlphaAction.RAISE else "alpha_min"
            return hold(f"would {action.value} α but it is at {bound} ({new:g})", triggers)
        last = state.alpha_last_adjust_step
        if last is not None and step - last < policy.alpha_cooldown_steps:
            inputs["last_adjust_step"] = last
            return hold(
                f"would {action.value} α but the last adjustment was at step {last} "
                f"(cooldown {policy.alpha_cooldown_steps} steps)",
                triggers,
            )
        new_state = replace(state, alpha_last_adjust_step=step)
        return AlphaDecision(
            step,
            action,
            current_alpha,
            new,
            f"{reason}: α {current_alpha:g} → {new:g}",
            inputs,
            triggers,
            new_state,
        )

    if not policy.auto_alpha:
        return hold("automatic α adjustment is off")
    if evaluation.skipped:
        return hold("stale step: not evaluated")
    if stopping:
        return hold("run is stopping")
    triggers = tuple(r for r in policy.alpha_raise_on if evaluation.is_firing(r))
    triggers = tuple(sorted(triggers))
    if triggers:
        for rule in triggers:
            firing = evaluation.result(rule).firing
            if firing is not None:
                for k, v in firing.observed.items():
                    inputs[f"{rule}.{k}"] = v
        return change(
            AlphaAction.RAISE,
            f"over-sharpening / entropy decline ({', '.join(triggers)})",
            triggers,
        )
    blockers = tuple(sorted(r for r in policy.alpha_lower_blocked_by if evaluation.is_firing(r)))
    if blockers:
        return hold(
            f"no over-sharpening pressure; not lowering α while {', '.join(blockers)} fires"
        )
    w = policy.alpha_lower_window
    _, ents = last_values(history, "entropy", w)
    s_steps, succ = last_values(history, policy.alpha_lower_metric, w)
    if len(ents) < w or len(succ) < w:
        return hold("no over-sharpening pressure; too few observations to judge lowering α")
    healthy = config.entropy_floor.floor * policy.alpha_healthy_entropy_factor
    ent_mean = mean(ents)
    b = slope(s_steps, succ)
    if not finite(ent_mean, b):
        return hold("no over-sharpening pressure; window statistics are not finite")
    inputs.update(
        {
            "entropy_mean": ent_mean,
            "healthy_entropy": healthy,
            f"{policy.alpha_lower_metric}_slope": b,
            "lower_slope_threshold": -policy.alpha_lower_slope,
        }
    )
    if ent_mean >= healthy and b <= -policy.alpha_lower_slope:
        return change(
            AlphaAction.LOWER,
            f"entropy healthy ({ent_mean:.3f} >= {healthy:.3f} nats) while "
            f"{policy.alpha_lower_metric} degrades ({b:+.3g}/step)",
            (),
        )
    return hold("no over-sharpening pressure and no success degradation with healthy entropy")
