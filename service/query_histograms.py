"""Per-step histograms of the per-query rows, computed once at ingest.

``/metrics`` exposes, per run, the distribution over the newest step's queries of the success rate
S⁺/G and of log Z'(q). Scanning ``query_stats`` at scrape time would cost O(runs × queries); instead
ingest stores this small summary in ``steps.query_histograms`` (a JSON column) and the scrape reads
one row per run. The summary is bounded whatever the number of queries: two fixed bucket layouts.

Stored shape (JSON-safe; no infinities, PostgreSQL's JSONB rejects them)::

    {"success_rate": {"le": [0.0, 0.1, ...], "cumulative": [3, 5, ...], "count": 8, "sum": 2.5},
     "log_zprime":   {...}}

``cumulative[i]`` counts observations ≤ ``le[i]``; the implicit ``+Inf`` bucket is ``count``. The
bounds are stored with the counts, so changing a layout later never misreads old rows.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from operator import truediv
from typing import Any, Protocol

from service.schemas.query_rows import QueryRows

#: Per-query success rate S⁺/G. ``le=0`` counts the all-fail groups; ``+Inf − le=0.999`` the
#: all-pass ones (science.md §1: degenerate groups teach nothing).
SUCCESS_RATE_BOUNDS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.999)

#: log Z'(q) in nats. ``> 0`` means Z'(q) > 1: every unsampled mode is suppressed (science.md §2).
LOG_ZPRIME_BOUNDS: tuple[float, ...] = (-1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "success_rate": SUCCESS_RATE_BOUNDS,
    "log_zprime": LOG_ZPRIME_BOUNDS,
}


class QueryRow(Protocol):
    """What the summary reads from a per-query row (``service.schemas.steps.QueryIn``)."""

    @property
    def group_size(self) -> int: ...

    @property
    def successes(self) -> int: ...

    @property
    def log_zprime(self) -> float | None: ...


def histogram(values: Iterable[float], bounds: Sequence[float]) -> dict[str, Any]:
    """Cumulative bucket counts of ``values`` for upper bounds ``bounds`` (sorted), Prometheus
    style (``le``: less than or equal)."""
    observed = list(values)
    total = 0.0
    for value in observed:  # summed in order (not sum(), whose rounding differs across Pythons)
        total += value
    observed.sort()
    # One bisection per bound over the sorted values, not one per value over the bounds.
    cumulative = [bisect_right(observed, bound) for bound in bounds]
    return {"le": list(bounds), "cumulative": cumulative, "count": len(observed), "sum": total}


def summarize(queries: Sequence[QueryRow]) -> dict[str, Any]:
    """The ``steps.query_histograms`` value for one step's per-query rows."""
    if isinstance(queries, QueryRows):  # read the two columns, not every row
        rates: Iterable[float] = map(
            truediv, queries.column("successes"), queries.column("group_size")
        )
        log_zprimes = queries.column("log_zprime")
    else:
        rates = (q.successes / q.group_size for q in queries)
        log_zprimes = (q.log_zprime for q in queries)
    return {
        "success_rate": histogram(rates, SUCCESS_RATE_BOUNDS),
        "log_zprime": histogram(
            (value for value in log_zprimes if value is not None), LOG_ZPRIME_BOUNDS
        ),
    }
