"""Small pure helpers: recent observations of a metric, mean and least-squares slope.

All scans walk the history from the newest record backwards and stop as soon as they have enough
observations, so their cost is O(window) for dense metrics whatever the history length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

from service.detectors.records import StepRecord

__all__ = [
    "count_below",
    "exact_fraction",
    "exact_mean",
    "finite",
    "last_pairs",
    "last_values",
    "line",
    "mean",
    "slope",
]

#: Largest count denominator :func:`exact_fraction` recovers (a step of a million responses).
MAX_COUNT_DENOMINATOR = 1_000_000


def last_values(
    history: Sequence[StepRecord], name: str, n: int, *, min_step: int | None = None
) -> tuple[list[int], list[float]]:
    """Steps and values of the last ``n`` observations of ``name`` (oldest first), optionally only
    from records with ``step >= min_step``."""
    steps: list[int] = []
    values: list[float] = []
    for rec in reversed(history):
        if min_step is not None and rec.step < min_step:
            break
        v = rec.value(name)
        if v is not None:
            steps.append(rec.step)
            values.append(v)
            if len(values) >= n:
                break
    steps.reverse()
    values.reverse()
    return steps, values


def last_pairs(
    history: Sequence[StepRecord], a: str, b: str, n: int
) -> tuple[list[int], list[float], list[float]]:
    """Steps and values of the last ``n`` records observing both ``a`` and ``b`` (oldest first)."""
    steps: list[int] = []
    va: list[float] = []
    vb: list[float] = []
    for rec in reversed(history):
        x = rec.value(a)
        if x is None:
            continue
        y = rec.value(b)
        if y is None:
            continue
        steps.append(rec.step)
        va.append(x)
        vb.append(y)
        if len(steps) >= n:
            break
    steps.reverse()
    va.reverse()
    vb.reverse()
    return steps, va, vb


def finite(*xs: float | None) -> bool:
    """True when every given statistic is a finite number (None counts as finite: not computed).
    Extreme but finite inputs can overflow a mean or slope to inf/NaN; rules then answer
    NOT_EVALUABLE rather than compare NaNs."""
    return all(x is None or math.isfinite(x) for x in xs)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def slope(xs: Sequence[int], ys: Sequence[float]) -> float:
    """Ordinary least-squares slope of ``ys`` on ``xs`` (per unit of x); 0.0 when x is constant."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = 0.0
    sxy = 0.0
    for x, y in zip(xs, ys, strict=True):
        dx = x - mx
        sxx += dx * dx
        sxy += dx * (y - my)
    return sxy / sxx if sxx > 0.0 else 0.0


# -- exact comparisons on lines drawn on counts (science.md §7) ---------------------------------
# A fraction of counts such as 3/10 travels as the float nearest to it; summing or averaging
# floats, or comparing one with a threshold's float (0.01 is stored just above 1/100), can cross
# a line the counts do not cross. Rules compare exact rationals instead.


# Both are pure in a float and each step's windows convert the same history values again: cached
# (issue 21: the conversions were a third of a detection pass).
@lru_cache(maxsize=256)
def line(threshold: float) -> Fraction:
    """A threshold as the decimal it was written as (its shortest repr): 0.01 -> 1/100."""
    return Fraction(repr(float(threshold)))


@lru_cache(maxsize=8192)
def exact_fraction(x: float) -> Fraction:
    """``x`` as the ratio of counts it was computed from: the fraction with denominator <=
    :data:`MAX_COUNT_DENOMINATOR` nearest to ``x`` when ``x`` lies within a few ulps of it (one
    correctly rounded float64 division k/n does), else ``x``'s exact binary value."""
    exact = Fraction(x)
    near = exact.limit_denominator(MAX_COUNT_DENOMINATOR)
    if abs(near - exact) <= abs(exact) * Fraction(1, 2**50):
        return near
    return exact


def exact_mean(values: Sequence[float]) -> Fraction:
    """Mean of fractions of counts, in exact arithmetic (see :func:`exact_fraction`)."""
    return sum((exact_fraction(v) for v in values), Fraction(0)) / len(values)


def count_below(count: float, total: float, threshold: float) -> bool:
    """``count / total < threshold`` on whole counts, exactly: 8 of 800 is not below 0.01."""
    t = line(threshold)
    return int(count) * t.denominator < t.numerator * int(total)
