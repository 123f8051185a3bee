"""A step's wire record, built off the training thread.

:meth:`trainer_hooks.Monitor.step` copies every value to the host once and derives the step's
``metrics`` there (a few dozen scalars the loop reads at once). The per-query part of the wire
record (one dict per query, non-finite values as ``None``) is host-side work the loop does not
need: :class:`DeferredRecord` holds the host columns and builds the record on first request,
which for a sender with ``submit_deferred`` (:class:`trainer_hooks.SharpwatchClient`) is its
writer thread (issue 21: the training thread pays for the device reductions and one copy).
The built record is the one the synchronous path builds from the same values, field for field.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from service.wire.finite import finite_or_none

__all__ = ["DeferredRecord", "DeferredStepSender", "build_queries"]


def build_queries(
    host: Mapping[str, Sequence[float]], query_ids: Sequence[str] | None, num_groups: int
) -> list[dict[str, object]]:
    """One wire dict per query from the step's host columns (non-finite values → ``None``)."""

    def column(name: str) -> list[float | None] | None:
        v = host.get(name)
        return None if v is None else [finite_or_none(x) for x in v]

    size, successes = host["q_size"], host["q_successes"]
    ent, lz, lzr = column("q_entropy"), column("q_log_zprime"), column("q_log_zprime_raw")
    acc, length = column("q_reward_accuracy"), column("q_response_length")
    n_modes = host.get("q_n_modes")
    queries: list[dict[str, object]] = []
    for i in range(num_groups):
        queries.append(
            {
                "query_id": query_ids[i] if query_ids is not None else f"q{i}",
                "group_size": int(size[i]),
                "successes": int(successes[i]),
                "entropy": None if ent is None else ent[i],
                "log_zprime": None if lz is None else lz[i],
                "log_zprime_raw": None if lzr is None else lzr[i],
                "n_modes": None if n_modes is None else int(n_modes[i]),
                "reward_accuracy": None if acc is None else acc[i],
                "response_length": None if length is None else length[i],
            }
        )
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
