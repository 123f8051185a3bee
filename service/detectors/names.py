"""Rule names, severities, rule statuses and the p*(G) threshold (science.md §1).

The rule names are part of the public API: alerts, configs and policies refer to them by these exact
strings.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final, Literal, get_args

from service.wire import Severity

__all__ = [
    "DEGENERATE_GROUPS",
    "ENTROPY_FLOOR",
    "ENTROPY_SLOPE",
    "LENGTH_COLLAPSE",
    "MODEL_COLLAPSE_STEP",
    "NON_FINITE",
    "PROBE_DECLINE",
    "REPETITION_COLLAPSE",
    "REWARD_ACCURACY_DIVERGENCE",
    "RISE_THEN_FALL",
    "RULE_NAMES",
    "SIGNAL_STARVATION",
    "ZPRIME_PRESSURE",
    "RuleName",
    "RuleStatus",
    "Severity",
    "group_size_for_rate",
    "p_star",
]

ENTROPY_FLOOR: Final = "entropy_floor"
ENTROPY_SLOPE: Final = "entropy_slope"
SIGNAL_STARVATION: Final = "signal_starvation"
DEGENERATE_GROUPS: Final = "degenerate_groups"
ZPRIME_PRESSURE: Final = "zprime_pressure"
MODEL_COLLAPSE_STEP: Final = "model_collapse_step"
REWARD_ACCURACY_DIVERGENCE: Final = "reward_accuracy_divergence"
RISE_THEN_FALL: Final = "rise_then_fall"
PROBE_DECLINE: Final = "probe_decline"
LENGTH_COLLAPSE: Final = "length_collapse"
REPETITION_COLLAPSE: Final = "repetition_collapse"
NON_FINITE: Final = "non_finite"

RuleName = Literal[
    "entropy_floor",
    "entropy_slope",
    "signal_starvation",
    "degenerate_groups",
    "zprime_pressure",
    "model_collapse_step",
    "reward_accuracy_divergence",
    "rise_then_fall",
    "probe_decline",
    "length_collapse",
    "repetition_collapse",
    "non_finite",
]

#: Every rule, in the fixed order in which rules are evaluated and actions are emitted.
RULE_NAMES: Final[tuple[str, ...]] = get_args(RuleName)


class RuleStatus(StrEnum):
    """Outcome of one rule on one step."""

    FIRING = "firing"
    CLEAR = "clear"
    #: Warm-up, the rule's metric missing on the newest step, too few observations, or a stale step.
    NOT_EVALUABLE = "not_evaluable"
    DISABLED = "disabled"


def p_star(group_size: int) -> float:
    """p*(G) = 1 − 2^(−1/G): below this success rate more than half the groups are expected
    all-fail ((1−p)^G > ½); above 1 − p*(G) more than half are expected all-pass (science.md §1)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return 1.0 - math.pow(2.0, -1.0 / group_size)


def group_size_for_rate(rate: float, *, cap: int = 4096) -> int | None:
    """Smallest G with p*(G) < ``rate`` (so that fewer than half of the groups are expected all-fail
    at success rate ``rate``); ``None`` when ``rate`` <= 0 or the answer exceeds ``cap``.
    By symmetry, ``group_size_for_rate(1 - rate)`` answers the all-pass side."""
    if not rate > 0.0:
        return None
    if rate > 0.5:
        return 1
    # p*(G) < rate  <=>  (1 - rate)^G < 1/2  <=>  G > ln(1/2) / ln(1 - rate); then fix rounding.
    estimate = math.log(0.5) / math.log1p(-rate)
    if estimate > cap + 1:
        return None
    g = max(1, math.floor(estimate) + 1)
    while g > 1 and p_star(g - 1) < rate:  # at most a step or two: rounding only
        g -= 1
    while p_star(g) >= rate:
        g += 1
    return g if g <= cap else None
