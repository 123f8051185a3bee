"""The IAC α controller (science.md §3, §5, §7): pure, bounded, at most one adjustment per
cooldown, acting only on signals that measure the policy.

It reads raw Z' (``zprime_raw_gt1_frac``, from the advantages before IAC) and entropy, never the
calibrated Z' (``zprime_gt1_frac``): IAC multiplies every positive advantage by (G − S⁺)^α ≥ 1,
so calibrated Z' grows with α by construction and a controller raising α on it feeds itself
until ``alpha_max`` (science.md §7).

Decision on each evaluated step, first match wins:

1. ``hold`` — auto α off, evaluation skipped (stale step), the run is stopping/stopped, or α is
   **pinned** by an operator (an operator's adjust_alpha pins α until an operator releases it;
   while pinned the pinned value becomes the baseline below).
2. **raise** — any rule in ``policy.alpha_raise_on`` fires (default: zprime_pressure on raw Z',
   entropy_slope, entropy_floor). Held instead while in cooldown or already at ``alpha_max``.
3. **lower** — none of those fire, nor any rule in ``policy.alpha_lower_blocked_by`` (default:
   signal_starvation, degenerate_groups — a difficulty problem, not an α problem); entropy is
   healthy (mean of its last ``alpha_lower_window`` observations >= entropy floor ×
   ``alpha_healthy_entropy_factor``, default 0.2 nats); and ``alpha_lower_metric`` (default
   success_rate) degrades: least-squares slope over its last ``alpha_lower_window`` observations
   <= −``alpha_lower_slope``. (Too-high α hurts easy queries, seed 002 Table 5.)
4. **lower (relax)** — α is above its baseline, entropy is healthy as in 3, and the raw Z'>1 share
   has calmed: its window mean <= ``alpha_relax_zprime_fraction`` (judged on entropy alone when
   the run reports no raw Z'). One step down, never below the baseline. The baseline is the α of
   the first decided step, replaced by the operator's value while α is pinned.
5. ``hold`` — otherwise. Between ``alpha_relax_zprime_fraction`` and zprime_pressure's
   ``max_fraction`` nothing moves α: that dead band is what lets α settle instead of cycling.

3 and 4 are held while in cooldown or at their bound. New α = clamp(old ± alpha_step, bounds).
Every decision carries its reason and inputs.
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
from service.detectors.rules_entropy import ENTROPY_FLOOR_RULE
from service.detectors.rules_groups import ZPRIME_PRESSURE_METRIC
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
    pinned: bool = False,
) -> AlphaDecision:
    """Decide the α change for ``evaluation.step``. ``state`` is the latest state (normally
    ``Transitions.state``); the returned decision's ``state`` records the adjustment step and the
    baseline. ``pinned``: an operator holds α at ``current_alpha`` (no change is decided)."""
    step = evaluation.step
    inputs: dict[str, Value] = {"alpha": current_alpha}
    if pinned or state.alpha_baseline is None:
        state = replace(state, alpha_baseline=current_alpha)
    baseline = state.alpha_baseline if state.alpha_baseline is not None else current_alpha

    def hold(reason: str, triggers: tuple[str, ...] = ()) -> AlphaDecision:
        return AlphaDecision(
            step, AlphaAction.HOLD, current_alpha, current_alpha, reason, inputs, triggers, state
        )

    def change(
        action: AlphaAction, reason: str, triggers: tuple[str, ...], *, floor: float | None = None
    ) -> AlphaDecision:
        delta = policy.alpha_step if action is AlphaAction.RAISE else -policy.alpha_step
        low = policy.alpha_min if floor is None else max(policy.alpha_min, floor)
        new = min(policy.alpha_max, max(low, current_alpha + delta))
        if new == current_alpha or (action is AlphaAction.LOWER and new > current_alpha):
            bound = "alpha_max" if action is AlphaAction.RAISE else "alpha_min"
            if floor is not None and action is AlphaAction.LOWER:
                bound = "its baseline"
            return hold(
                f"would {action.value} α but it is at {bound} ({current_alpha:g})", triggers
            )
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
    if pinned:
        return hold(
            f"α is pinned at {current_alpha:g} by an operator; release the pin "
            '(PATCH the run with {"alpha_pinned": false}) to hand control back'
        )
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
    if len(ents) < w:
        return hold("no over-sharpening pressure; too few entropy observations to judge lowering α")
    healthy = config.settings(ENTROPY_FLOOR_RULE).floor * policy.alpha_healthy_entropy_factor
    ent_mean = mean(ents)
    if not finite(ent_mean):
        return hold("no over-sharpening pressure; window statistics are not finite")
    inputs.update({"entropy_mean": ent_mean, "healthy_entropy": healthy})
    ent_ok = ent_mean >= healthy
    s_steps, succ = last_values(history, policy.alpha_lower_metric, w)
    if len(succ) >= w:
        b = slope(s_steps, succ)
        if finite(b):
            inputs[f"{policy.alpha_lower_metric}_slope"] = b
            inputs["lower_slope_threshold"] = -policy.alpha_lower_slope
            if ent_ok and b <= -policy.alpha_lower_slope:
                return change(
                    AlphaAction.LOWER,
                    f"entropy healthy ({ent_mean:.3f} >= {healthy:.3f} nats) while "
                    f"{policy.alpha_lower_metric} degrades ({b:+.3g}/step)",
                    (),
                )
    if current_alpha <= baseline:
        return hold("no over-sharpening pressure and no success degradation with healthy entropy")
    inputs["alpha_baseline"] = baseline
    _, zs = last_values(history, ZPRIME_PRESSURE_METRIC, w)
    if zs and len(zs) < w:
        return hold(f"α above its baseline {baseline:g}; too few raw Z' observations to relax it")
    z_mean = mean(zs) if zs else None
    if z_mean is not None:
        if not finite(z_mean):
            return hold("no over-sharpening pressure; window statistics are not finite")
        inputs["zprime_raw_gt1_frac_mean"] = z_mean
        inputs["relax_zprime_fraction"] = policy.alpha_relax_zprime_fraction
    calm = z_mean is None or z_mean <= policy.alpha_relax_zprime_fraction
    if ent_ok and calm:
        why = (
            "no raw Z' reported"
            if z_mean is None
            else f"raw Z'>1 share {z_mean:.2f} <= {policy.alpha_relax_zprime_fraction:g}"
        )
        return change(
            AlphaAction.LOWER,
            f"policy healthy again (entropy {ent_mean:.3f} >= {healthy:.3f} nats, {why}): "
            f"relaxing toward the baseline {baseline:g}",
            (),
            floor=baseline,
        )
    return hold(
        f"α above its baseline {baseline:g} but the policy has not calmed enough to relax it "
        "(dead band)"
    )
