"""A step sender that holds each step's record until the framework has logged the rest of it.

Frameworks compute the advantages (where IAC and the α of the step are applied, so where
:meth:`trainer_hooks.RunSession.step` must run) before the loss, and the policy entropy, KL, loss
and grad norm during or after it. :class:`DeferredSender` sits between the monitor and the real
sender: :meth:`submit` keeps the step's record, :meth:`complete` adds the framework's metrics and
forwards it. A record never completed is forwarded as it is when the next one arrives, or on
:meth:`flush`, so no step is lost.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from trainer_hooks._types import StepSender

log = logging.getLogger("trainer_hooks.integrations")

__all__ = ["DeferredSender"]


class DeferredSender:
    """Wraps ``target`` (the run's client). Thread-safe; never raises into the loop."""

    def __init__(self, target: StepSender | None) -> None:
        self.target = target
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        #: The last record :meth:`complete` sent (with the framework's metrics merged in).
        self.last_completed: dict[str, Any] | None = None

    @property
    def pending_step(self) -> int | None:
        with self._lock:
            return None if self._pending is None else int(self._pending["step"])

    def submit(self, record: dict[str, object]) -> None:
        with self._lock:
            previous, self._pending = self._pending, dict(record)
        if previous is not None:
            self._forward(previous)

    def complete(self, metrics: Mapping[str, float | None]) -> int | None:
        """Add ``metrics`` to the held record (the monitor's own values win) and send it.
        Returns the record's step, or None when nothing was held."""
        with self._lock:
            record, self._pending = self._pending, None
        if record is None:
            return None
        merged = dict(record.get("metrics") or {})
        non_finite = list(record.get("non_finite") or [])
        for name, value in metrics.items():
            if merged.get(name) is not None:
                continue
            if value is not None and not math.isfinite(value):
                merged[name] = None
                if name not in non_finite:
                    non_finite.append(name)
            else:
                merged[name] = None if value is None else float(value)
        record["metrics"] = merged
        record["non_finite"] = non_finite
        self.last_completed = record
        self._forward(record)
        return int(record["step"])

    def flush(self) -> None:
        """Send a held record as it is."""
        with self._lock:
            record, self._pending = self._pending, None
        if record is not None:
            self._forward(record)

    def _forward(self, record: dict[str, Any]) -> None:
        if self.target is None:
            return
        try:
            self.target.submit(record)
        except Exception:
            log.exception("sharpwatch sender failed at step %s (ignored)", record.get("step"))
