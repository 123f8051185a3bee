"""A warning about a lost dependency, logged once with its cause and then with backoff.

While the database (or any dependency) stays down, every request fails the same way; logging each
one floods the logs and hides the cause. :class:`OutageLog` logs the first failure with its cause,
then at most once per interval, the interval doubling up to ``max_interval`` seconds, each line
saying how many failures it stood for. A quiet ``reset_after`` seconds starts afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["OutageLog"]


class OutageLog:
    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        first_interval: float = 1.0,
        max_interval: float = 60.0,
        reset_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._first = first_interval
        self._max = max_interval
        self._reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._last_failure: float | None = None
        self._next_log = 0.0
        self._interval = first_interval
        self._suppressed = 0

    def failure(self, cause: BaseException | str) -> bool:
        """Record one failure; returns whether it was logged."""
        now = self._clock()
        with self._lock:
            if self._last_failure is None or now - self._last_failure > self._reset_after:
                self._interval, self._next_log, self._suppressed = self._first, now, 0
            self._last_failure = now
            if now < self._next_log:
                self._suppressed += 1
                return False
            failures = self._suppressed + 1
            self._suppressed = 0
            self._next_log = now + self._interval
            self._interval = min(self._interval * 2, self._max)
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        self._logger.warning(
            self._message,
            extra={"cause": " ".join(text.split())[:500], "failures_since_last_log": failures},
        )
        return True
