"""Severities, rule statuses and the p*(G) threshold (science.md §1). The rule names come from the
rule registry (:mod:`service.detectors.registry`)."""

from __future__ import annotations

import math
from enum import StrEnum

from service.wire import Severity

__all__ = ["RuleStatus", "Severity", "group_size_for_rate", "p_star"]


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
