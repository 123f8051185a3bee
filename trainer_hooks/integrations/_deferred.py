"""A step sender that holds each step's record until the framework has logged the rest of it.

Frameworks compute the advantages (where IAC and the α of the step are applied, so where
:meth:`trainer_hooks.RunSession.step` must run) before the loss, and the policy entropy, KL, loss
and grad norm during or after it. :class:`DeferredSender` sits between the monitor and the real
sender: :meth:`submit` keeps the step's record, :meth:`complete` adds the framework's metrics and
forwards it. A record never completed is forwarded as it is when the next one arrives, or on
:meth:`flush`, so no step is lost. A monitor's unbuilt record (``_record.DeferredRecord``) stays
unbuilt: only its step metrics are merged, and the target builds it on its own thread when it
can (issue 21).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from service.wire.finite import split_non_finite
from trainer_hooks._record import DeferredRecord, DeferredStepSender
from trainer_hooks._types import StepSender
from trainer_hooks._watch import RunSession

log = logging.getLogger("trainer_hooks.integrations")

__all__ = ["DeferredSender", "hold_records"]


class DeferredSender:
    """Wraps ``target`` (the run's client). Thread-safe; never raises into the loop."""

    def __init__(self, target: StepSender | None) -> None:
        self.target = target
        self._pending: dict[str, Any] | DeferredRecord | None = None
        self._lock = threading.Lock()
        self._last: dict[str, Any] | DeferredRecord | None = None
        #: The step metrics of the last record :meth:`complete` sent (framework's merged in).
        self.last_completed_metrics: dict[str, float | None] | None = None

    @property
    def last_completed(self) -> dict[str, Any] | None:
        """The last record :meth:`complete` sent (built here if the target has not yet)."""
        last = self._last
        return last.build() if isinstance(last, DeferredRecord) else last

    @property
    def pending_step(self) -> int | None:
        with self._lock:
            pending = self._pending
            if pending is None:
                return None
            return pending.step if isinstance(pending, DeferredRecord) else int(pending["step"])

    def submit(self, record: dict[str, object]) -> None:
        self._hold(dict(record))

    def submit_deferred(self, record: DeferredRecord) -> None:
        self._hold(record)

    def _hold(self, record: dict[str, Any] | DeferredRecord) -> None:
        with self._lock:
            previous, self._pending = self._pending, record
        if previous is not None:
            self._forward(previous)

    def complete(self, metrics: Mapping[str, float | None]) -> int | None:
        """Add ``metrics`` to the held record (the monitor's own values win) and send it.
        Returns the record's step, or None when nothing was held."""
        with self._lock:
            record, self._pending = self._pending, None
        if record is None:
            return None
        if isinstance(record, DeferredRecord):
            merged, non_finite = dict(record.metrics), list(record.non_finite)
        else:
            merged = dict(record.get("metrics") or {})
            non_finite = list(record.get("non_finite") or [])
        # The framework's values fill what the monitor has no value for (non-finite → null).
        added, non_finite = split_non_finite(
            {name: value for name, value in metrics.items() if merged.get(name) is None},
            non_finite,
        )
        merged.update(added)
        if isinstance(record, DeferredRecord):
            record = record.with_metrics(merged, non_finite)
            step = record.step
        else:
            record["metrics"] = merged
            record["non_finite"] = non_finite
            step = int(record["step"])
        self._last = record
        self.last_completed_metrics = merged
        self._forward(record)
        return step

    def flush(self) -> None:
        """Send a held record as it is."""
        with self._lock:
            record, self._pending = self._pending, None
        if record is not None:
            self._forward(record)

    def _forward(self, record: dict[str, Any] | DeferredRecord) -> None:
        target = self.target
        if target is None:
            return
        step = record.step if isinstance(record, DeferredRecord) else record.get("step")
        try:
            if isinstance(record, DeferredRecord):
                if isinstance(target, DeferredStepSender) and not record.built:
                    target.submit_deferred(record)
                else:
                    target.submit(record.build())
            else:
                target.submit(record)
        except Exception:
            log.exception("sharpwatch sender failed at step %s (ignored)", step)


def hold_records(session: RunSession) -> DeferredSender:
    """Route the session's records to its client through a new :class:`DeferredSender`.

    The deferred sender joins the monitor's senders and forwards to the session's client, which
    leaves the monitor's list (the client then gets each record once, completed); other senders
    stay and get every record at once. With no client (no URL, or rank > 0) records are held
    and completed for the framework's loggers only."""
    client = session.client
    deferred = DeferredSender(client)
    monitor = session.monitor
    monitor.add_sender(deferred)
    if client is not None and any(s is client for s in monitor.senders):
        monitor.remove_sender(client)
    return deferred
