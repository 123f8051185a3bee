"""A step's wire record, built off the training thread.

:meth:`trainer_hooks.Monitor.step` copies every value to the host once and derives the step's
``metrics`` there (a few dozen scalars the loop reads at once). The per-query part of the wire
record (one list per query field, non-finite values as ``None``) is host-side work the loop does
not need: :class:`DeferredRecord` holds the host columns and builds the record on first request,
which for a sender with ``submit_deferred`` (:class:`trainer_hooks.SharpwatchClient`) is its
writer thread (issue 21: the training thread pays for the device reductions and one copy).
The built record is the one the synchronous path builds from the same values, field for field.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from math import isfinite
from typing import Protocol, runtime_checkable

from service.wire.finite import finite_or_none
from service.wire.query import QUERY_FIELDS, QUERY_ROW_FIELDS

__all__ = ["DeferredRecord", "DeferredStepSender", "build_queries"]

# The row's key fields (query_id, group_size, successes); the measurements follow them.
_ID, _SIZE, _SUCCESSES = QUERY_ROW_FIELDS[: -len(QUERY_FIELDS)]


def build_queries(
    host: Mapping[str, Sequence[float]], query_ids: Sequence[str] | None, num_groups: int
) -> dict[str, list[object]]:
    """The step's ``queries`` as the wire's columns (``service.wire.query_shapes``): one list
    per field of ``service.wire.query.QueryRow``, in its order, from the step's host columns
    ``q_size``, ``q_successes`` and ``q_<field>`` for each field of ``QUERY_FIELDS``. A field
    the step has no host column for is left out (the service reads it as null for every query);
    non-finite values → ``None``."""
    ids: list[object] = (
        list(query_ids) if query_ids is not None else [f"q{i}" for i in range(num_groups)]
    )
    queries: dict[str, list[object]] = {
        _ID: ids,
        _SIZE: [int(x) for x in host["q_size"]],
        _SUCCESSES: [int(x) for x in host["q_successes"]],
    }
    for field in QUERY_FIELDS:
        values = host.get(f"q_{field.name}")
        if values is None:
            continue
        if field.type is int:
            queries[field.name] = [int(x) for x in values]
        elif isfinite(sum(values)):
            # No NaN or ±inf among them: one C-level pass instead of a test per value (a sum
            # that overflows to inf only sends a finite column the per-value way).
            queries[field.name] = list(values)
        else:
            queries[field.name] = [finite_or_none(x) for x in values]
    return queries


class DeferredRecord:
    """A step's wire record whose per-query part is built on first :meth:`build` (thread-safe,
    built once). ``step``, ``time``, ``metrics`` and ``non_finite`` are known at once."""

    __slots__ = (
        "_built",
        "_host",
        "_lock",
        "_num_groups",
        "_query_ids",
        "metrics",
        "non_finite",
        "step",
        "time",
    )

    def __init__(
        self,
        *,
        step: int,
        time: str,
        metrics: dict[str, float | None],
        non_finite: list[str],
        host: Mapping[str, Sequence[float]],
        query_ids: Sequence[str] | None,
        num_groups: int,
    ) -> None:
        self.step = step
        self.time = time
        self.metrics = metrics
        self.non_finite = non_finite
        self._host = host
        self._query_ids = query_ids
        self._num_groups = num_groups
        self._built: dict[str, object] | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the record has been built (by any thread)."""
        return self._built is not None

    def build(self) -> dict[str, object]:
        """The wire record (the same dict on every call)."""
        with self._lock:
            if self._built is None:
                self._built = {
                    "step": self.step,
                    "time": self.time,
                    "metrics": self.metrics,
                    "non_finite": self.non_finite,
                    "queries": build_queries(self._host, self._query_ids, self._num_groups),
                }
                self._host = {}
            return self._built

    def with_metrics(
        self, metrics: dict[str, float | None], non_finite: list[str]
    ) -> DeferredRecord:
        """The same record with other step metrics (the per-query part is shared, unbuilt)."""
        with self._lock:
            if self._built is not None:
                out = DeferredRecord(
                    step=self.step,
                    time=self.time,
                    metrics=metrics,
                    non_finite=non_finite,
                    host={},
                    query_ids=None,
                    num_groups=0,
                )
                out._built = dict(self._built) | {"metrics": metrics, "non_finite": non_finite}
                return out
            return DeferredRecord(
                step=self.step,
                time=self.time,
                metrics=metrics,
                non_finite=non_finite,
                host=self._host,
                query_ids=self._query_ids,
                num_groups=self._num_groups,
            )


@runtime_checkable
class DeferredStepSender(Protocol):
    """A sender that takes a :class:`DeferredRecord` and builds it off the training thread."""

    def submit_deferred(self, record: DeferredRecord) -> None: ...
