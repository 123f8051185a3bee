"""A per-process cache of the step history the detectors read, exact with several workers.

Every ingest that stores steps bumps ``runs.epoch`` in its own transaction (revision 0011), so
the epoch counts the writes to a run's steps. An entry holds a run's newest step records as of
one epoch. It is used only when that epoch is the run's current one, read under the detection
pass's row lock (no write can commit in between): any step stored by another worker moved the
epoch past it, and the pass reads the database instead. The worker that stores the steps runs the
detection pass in the same transaction (``service.ingest``): the pass reads its entry as of
epoch e − 1 extended with the steps the transaction wrote (:meth:`HistoryCache.lookup_after`,
nothing changed in the cache), and only once the transaction has committed is the entry itself
extended (:meth:`HistoryCache.noted_ingest`) and replaced by the pass's records
(:meth:`HistoryCache.store`); a transaction that rolls back leaves the cache as it was. So a
trainer that keeps sending to one worker never re-reads its history. ``created_at`` guards
against a deleted run's id being reused (SQLite reuses the highest id).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from service.detectors import StepRecord
from service.schemas.steps import StepIn
from service.wire.metrics import STEP_METRIC_NAMES

MAX_RUNS = 256
_METRIC_ORDER = tuple(sorted(STEP_METRIC_NAMES))


@dataclass(slots=True)
class _Entry:
    created_at: datetime
    epoch: int
    records: list[StepRecord]  # ascending steps, no gaps among stored steps
    complete: bool  # holds every stored step of the run from its first
    limit: int  # entries longer than this are dropped (a detection pass fell behind)


@dataclass(frozen=True, slots=True)
class Written:
    """Steps an ingest wrote in a transaction not yet committed, which moves the run to
    ``epoch``: what the detection pass of that transaction reads them as, and what
    :meth:`HistoryCache.noted_ingest` is given once it has committed."""

    database: str
    run_id: int
    created_at: datetime
    epoch: int
    records: tuple[StepRecord, ...]  # ascending steps


def record_of(step: StepIn) -> StepRecord:
    """The detectors' view of an ingested step, exactly as ``detection`` reads it back from its
    row: standard metrics (sorted by name) then extras, missing values left out."""
    metrics: dict[str, float | None] = {
        name: step.metrics[name] for name in _METRIC_ORDER if name in step.metrics
    }
    metrics.update((k, v) for k, v in step.metrics.items() if k not in STEP_METRIC_NAMES)
    return StepRecord(
        step=step.step,
        metrics={k: v for k, v in metrics.items() if v is not None},
        non_finite=frozenset(step.non_finite),
    )


class HistoryCache:
    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._max_runs = max_runs

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def noted_ingest(
        self,
        database: str,
        run_id: int,
        created_at: datetime,
        epoch: int,
        fresh: Iterable[StepRecord],
    ) -> None:
        """The steps ``fresh`` were committed, moving the run to ``epoch``."""
        key = (database, run_id)
        added = sorted(fresh, key=lambda r: r.step)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None and epoch == 1:  # the run's first steps: its whole history
                self._put(key, _Entry(created_at, epoch, added, True, _FIRST_LIMIT))
                return
            if entry is None or not _extends(entry, created_at, epoch, added):
                self._entries.pop(key, None)
                return
            entry.records.extend(added)
            entry.epoch = epoch
            self._entries.move_to_end(key)

    def lookup_after(self, written: Written) -> tuple[list[StepRecord], bool] | None:
        """(records, complete) as of ``written.epoch`` inside the transaction that wrote
        ``written`` and has not committed: what :meth:`lookup` will answer once
        :meth:`noted_ingest` has been told of them, without changing the cache (the transaction
        may still roll back). None when that entry would be absent or stale."""
        fresh = written.records
        with self._lock:
            entry = self._entries.get((written.database, written.run_id))
            if entry is None:
                return (list(fresh), True) if written.epoch == 1 else None
            if not _extends(entry, written.created_at, written.epoch, fresh):
                return None
            return [*entry.records, *fresh], entry.complete

    def noted(self, written: Written) -> None:
        """``written`` has committed."""
        self.noted_ingest(
            written.database, written.run_id, written.created_at, written.epoch, written.records
        )

    def lookup(
        self, database: str, run_id: int, created_at: datetime, epoch: int
    ) -> tuple[list[StepRecord], bool] | None:
        """(records, complete) as of ``epoch``, or None when the entry is absent or stale."""
        with self._lock:
            entry = self._entries.get((database, run_id))
            if entry is None or entry.created_at != created_at or entry.epoch != epoch:
                return None
            return list(entry.records), entry.complete

    def store(
        self,
        database: str,
        run_id: int,
        created_at: datetime,
        epoch: int,
        records: Sequence[StepRecord],
        *,
        complete: bool,
        keep: int,
    ) -> None:
        """After a detection pass at ``epoch``: keep the newest ``keep`` of ``records`` (which
        must be every stored step from ``records[0]`` on)."""
        tail = list(records[-keep:]) if keep > 0 else []
        entry = _Entry(created_at, epoch, tail, complete and len(tail) == len(records), keep + 1000)
        with self._lock:
            self._put((database, run_id), entry)

    def _put(self, key: tuple[str, int], entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_runs:
            self._entries.popitem(last=False)


_FIRST_LIMIT = 10_000  # the entry a run's first ingest starts (no pass has sized it yet)


def _extends(entry: _Entry, created_at: datetime, epoch: int, added: Sequence[StepRecord]) -> bool:
    """Whether ``added`` (ascending), the steps that moved the run to ``epoch``, extend the
    entry: it is the run's (not an earlier run with the same id), one epoch behind, ends before
    them, and stays within its limit."""
    return (
        entry.created_at == created_at
        and entry.epoch == epoch - 1
        and not (entry.records and added and added[0].step <= entry.records[-1].step)
        and len(entry.records) + len(added) <= entry.limit
    )


def database_key(session: Session) -> str:
    """Which database a session talks to (runs of two databases share ids)."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    assert isinstance(engine, Engine)
    return engine.url.render_as_string(hide_password=True)


CACHE = HistoryCache()
