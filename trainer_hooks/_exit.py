"""Flush the clients' write-ahead logs when the process receives SIGTERM or SIGINT.

Python's default SIGTERM kills the process without running ``atexit`` or ``finally`` blocks.
Each client's log already holds every record whose ``step()`` returned (the writer thread writes
within milliseconds); on a signal the handler waits briefly for the writer, fsyncs the logs,
gives a reachable service a moment to take what is left, and then does exactly what the process
would have done without us: it calls the handler that was installed before ours (the trainer's
own, or Python's ``KeyboardInterrupt`` for SIGINT), ignores the signal if it was ignored, or
restores the default action and re-sends the signal so the process ends as it would have.

Handlers can only be installed from the main thread; elsewhere nothing is installed (the logs
are still written; only the final fsync and send are skipped). A trainer that installs its own
handler after ours replaces ours, and nothing else changes. When the last client closes, our
handler is removed again if it is still the one installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("trainer_hooks.client")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitFlushable(Protocol):
    def flush_for_exit(self, signum: int) -> None: ...


_lock = threading.Lock()
_clients: list[ExitFlushable] = []
_previous: dict[int, Any] = {}


def _handler(signum: int, frame: FrameType | None) -> None:
    for client in list(_clients):
        with contextlib.suppress(Exception):
            client.flush_for_exit(signum)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or a handler not installed from Python): the default action, as before
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def register(client: ExitFlushable) -> None:
    """Flush ``client`` on SIGTERM/SIGINT; installs the handlers on first use (main thread)."""
    with _lock:
        if client not in _clients:
            _clients.append(client)
        if _previous or threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            try:
                current = signal.getsignal(signum)
                if current is _handler:
                    continue
                signal.signal(signum, _handler)
            except (ValueError, OSError) as exc:  # pragma: no cover - embedded interpreters
                log.debug("sharpwatch cannot install a handler for signal %d: %s", signum, exc)
                continue
            _previous[signum] = current


def unregister(client: ExitFlushable) -> None:
    """Stop flushing ``client``; the last one out restores the previous handlers."""
    with _lock:
        with contextlib.suppress(ValueError):
            _clients.remove(client)
        if _clients or not _previous:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # left installed: it flushes nothing and chains to the previous handler
        for signum, previous in list(_previous.items()):
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(signum) is _handler:
                    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            del _previous[signum]


def installed() -> dict[int, Callable[..., Any] | int | None]:
    """The handlers ours chains to, by signal (for tests and diagnostics)."""
    with _lock:
        return dict(_previous)
