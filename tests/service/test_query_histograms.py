"""``query_histograms.histogram``: Prometheus-style cumulative counts (``le``), whatever the order
of the values, with observations on the bounds themselves counted in their bucket."""

from __future__ import annotations

import random

from service.query_histograms import LOG_ZPRIME_BOUNDS, SUCCESS_RATE_BOUNDS, histogram


def test_cumulative_counts_are_observations_at_or_below_each_bound() -> None:
    rng = random.Random(5)
    for bounds in (SUCCESS_RATE_BOUNDS, LOG_ZPRIME_BOUNDS):
        values = [rng.uniform(-2.0, 5.0) for _ in range(300)] + list(bounds) + [-0.0, 0.0]
        rng.shuffle(values)
        out = histogram(iter(values), bounds)
        assert out["cumulative"] == [sum(v <= b for v in values) for b in bounds]
        assert out["count"] == len(values)
        total = 0.0
        for v in values:
            total += v
        assert out["sum"] == total
        assert out["le"] == list(bounds)


def test_no_values() -> None:
    assert histogram([], (0.0, 1.0)) == {
        "le": [0.0, 1.0],
        "cumulative": [0, 0],
        "count": 0,
        "sum": 0.0,
    }
