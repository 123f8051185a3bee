"""The HTTP client: registers a run and streams step records through a write-ahead log.

The training loop only ever calls :meth:`SharpwatchClient.submit`, which appends to an in-memory
queue and returns; it never blocks on the network and never raises. A writer thread appends each
record to the run's on-disk log (``_spool.py``) within milliseconds and fsyncs it in batches; a
sender thread posts batches from the log in order, retrying with exponential backoff and jitter
while the service is down, and advances the log's offset only on the service's acknowledgement
(re-sends are safe: the service treats an identical step as a duplicate). SIGTERM and SIGINT
fsync the log before the process ends (``_exit.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import random
import re
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

import httpx
from pydantic import ConfigDict

from service.wire import run as wire_run
from service.wire.finite import is_finite, split_non_finite
from service.wire.query_shapes import query_count
from trainer_hooks import _exit
from trainer_hooks._api import ServiceApi
from trainer_hooks._errors import ConfigurationError, ServiceError
from trainer_hooks._record import DeferredRecord
from trainer_hooks._spool import (
    WriteAheadLog,
    body_size,
    default_spool_dir,
    encode_body,
    spool_key,
    step_of,
)

log = logging.getLogger("trainer_hooks.client")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# The token is missing, revoked or of the wrong kind: the records wait until one works again.
_AUTH_STATUS = frozenset({401, 403})
# Set on the next step record after damaged spool lines were skipped: how many so far.
BAD_LINES_METRIC = "client_spool_bad_lines"
# Set on the next step record after the service refused the client's token: how many so far.
AUTH_FAILURES_METRIC = "client_auth_failures"


class RunInfo(wire_run.RunInfo):
    """The service's view of a registered run."""

    model_config = ConfigDict(frozen=True)

    created: bool  # False when an existing run was reattached (resume)
    ingest_token: str | None = None  # this run's token, when the service requires tokens


def sanitize_record(record: Mapping[str, Any], *, queries_clean: bool = False) -> dict[str, Any]:
    """A JSON-safe copy: non-finite metric values become null and are named in ``non_finite``,
    non-finite per-query values become null (``service.wire.finite``). ``queries`` may be
    columns or rows (``service.wire.query_shapes``) and keeps its shape; ``queries_clean``: it
    is already JSON-safe (a monitor's built record) and is kept as it is."""
    out = dict(record)
    out["metrics"], out["non_finite"] = split_non_finite(
        out.get("metrics") or {}, out.get("non_finite") or ()
    )
    queries = out.get("queries")
    if queries and not queries_clean:
        if isinstance(queries, Mapping):
            out["queries"] = {name: _sanitize_column(column) for name, column in queries.items()}
        else:
            out["queries"] = [_sanitize_query(q) for q in queries]
    return out


def _sanitize_column(column: Any) -> Any:
    if not isinstance(column, list | tuple):
        return column  # not a column: the service refuses it and names it
    try:
        # Numbers only, none of them NaN or ±inf: one C-level pass instead of a test per value
        # (None, a string or a sum that overflows takes the per-value way).
        if is_finite(sum(column)):
            return list(column)
    except (TypeError, OverflowError):
        pass
    return [None if isinstance(v, float) and not is_finite(v) else v for v in column]


def _sanitize_query(query: Mapping[str, Any]) -> dict[str, Any]:
    clean = dict(query)
    for key, value in query.items():
        if isinstance(value, float) and not is_finite(value):
            clean[key] = None
    return clean


class SharpwatchClient:
    """Talks to one sharpwatch service for one run.

    Every record goes through an on-disk write-ahead log first (one per run, surviving a
    trainer restart) and is sent from it; the log's offset advances only when the service
    acknowledges. :meth:`submit` is an in-memory append: a writer thread serialises records to
    the log within milliseconds and fsyncs it at most ``fsync_interval`` seconds later, a sender
    thread posts batches from the log in order, retrying with backoff while the service is down.
    Both threads are supervised: an exception restarts them; a damaged log line is skipped,
    counted (:attr:`bad_lines`) and reported. Without a log (``spool_dir=False``, or the log
    could not be opened) records wait in memory.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        token: bearer token (an operator token registers the run; the client then switches to
            the run's own ingest token that the service returns).
        transport: an ``httpx`` transport (tests hand in their own).
        timeout: seconds per HTTP request.
        max_queue: records held in memory (before they reach the log, or all of them without a
            log); beyond it the oldest are dropped with a warning.
        batch_size: most records per request.
        flush_interval: seconds the sender waits to fill a batch.
        spool_dir: where logs live (default ``$SHARPWATCH_SPOOL_DIR`` or
            ``~/.cache/sharpwatch/spool``); ``False`` disables the log.
        spool_warn_records: warn each time the unsent part of the log grows by this many records.
        fsync_interval: most seconds between a record reaching the log and its fsync (0: fsync
            every write).
        exit_flush_timeout: on SIGTERM, seconds to let a reachable service take what is unsent
            before the process ends (the rest stays in the log for the next start).
        auth_retry_interval: seconds between attempts while the service refuses the token (401,
            403); records stay in the log meanwhile, and :meth:`set_token` retries at once.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        max_queue: int = 10_000,
        batch_size: int = 64,
        flush_interval: float = 0.05,
        max_backoff: float = 10.0,
        spool_dir: Path | str | Literal[False] | None = None,
        spool_warn_records: int = 10_000,
        fsync_interval: float = 1.0,
        exit_flush_timeout: float = 2.0,
        auth_retry_interval: float = 60.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"base_url must start with http:// or https://, got {base_url!r}"
            )
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
        if max_queue < 1:
            raise ConfigurationError(f"max_queue must be ≥ 1, got {max_queue}")
        if not 1 <= batch_size <= 1000:
            raise ConfigurationError(f"batch_size must be in 1..1000, got {batch_size}")
        if flush_interval < 0:
            raise ConfigurationError(f"flush_interval must be ≥ 0, got {flush_interval}")
        if max_backoff <= 0:
            raise ConfigurationError(f"max_backoff must be > 0 seconds, got {max_backoff}")
        if spool_warn_records < 1:
            raise ConfigurationError(f"spool_warn_records must be ≥ 1, got {spool_warn_records}")
        if not 0 <= fsync_interval <= 60:
            raise ConfigurationError(
                f"fsync_interval must be in 0..60 seconds, got {fsync_interval}"
            )
        if exit_flush_timeout < 0:
            raise ConfigurationError(
                f"exit_flush_timeout must be ≥ 0 seconds, got {exit_flush_timeout}"
            )
        if auth_retry_interval <= 0:
            raise ConfigurationError(
                f"auth_retry_interval must be > 0 seconds, got {auth_retry_interval}"
            )
        headers = {"user-agent": "sharpwatch-trainer-hooks"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self._api = ServiceApi(self._http)
        self.base_url = base_url.rstrip("/")
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._fsync_interval = fsync_interval
        self._exit_flush_timeout = exit_flush_timeout
        self._auth_retry_interval = auth_retry_interval
        self._token_source = "the token given to the client (token=, e.g. SHARPWATCH_TOKEN)"
        self._token_generation = 0  # bumped by set_token(): ends the wait after a refusal
        self._token_to_register: str | None = None  # set_token()'s, tried for registration
        self._auth_refused: str | None = None  # the service refuses the token: why, what to do
        self._auth_failures_reported = 0
        self._spool_dir: Path | None = (
            None
            if spool_dir is False
            else (default_spool_dir() if spool_dir is None else Path(spool_dir))
        )
        self._wal: WriteAheadLog | None = None
        self._spool_warn = spool_warn_records
        self._spool_warned_at = 0
        self._cond = threading.Condition()
        # Serialises the offset file's writes (fsync, rename) and the log's truncation with
        # each other; the sender writes the file without _cond, so submit() never waits for
        # the disk. Taken before _cond, never while holding it; the training thread never takes it.
        self._offset_lock = threading.Lock()
        # submitted, not yet serialised (monitor records unbuilt: the writer builds them)
        self._records: deque[dict[str, Any] | DeferredRecord] = deque()
        self._writing = 0  # records the writer has taken and not yet placed
        self._lines: deque[bytes] = deque()  # serialised records waiting in memory (no log)
        self._lines_in_flight = 0  # the first this many of _lines are being posted
        self._last_sync = time.monotonic()
        self._last_offset_save = time.monotonic()
        self._closed = False
        self._run: RunInfo | None = None
        self._spec: dict[str, Any] | None = None
        self._on_registered: list[Callable[[RunInfo], None]] = []
        self._thread: threading.Thread | None = None
        self._max_body: int | None = None  # learned from a 413
        self._oversize_reported: set[int | None] = set()
        self._bad_lines_reported = 0
        self._crash_at: tuple[str, int] | None = None
        self._crash_count = 0
        self.dropped = 0
        self.rejected = 0
        self.sent = 0
        self.bad_lines = 0  # damaged log lines skipped
        self.auth_failures = 0  # sends the service refused for the token (401, 403)
        self.restarts = 0  # times the writer or sender thread was restarted after an exception
        self.last_error: str | None = None
        self.flush_error: str | None = None  # why the last flush() returned False
        self._closed_unsent: str | None = None
        self._wal_failing = False
        self._writer = threading.Thread(
            target=self._supervised,
            args=(self._write_loop, "writer"),
            name="sharpwatch-writer",
            daemon=True,
        )
        self._writer.start()
        _live_clients.add(self)
        _exit.register(self)

    # -- registration -------------------------------------------------------------------------
    def register_run(
        self,
        name: str,
        *,
        group_size: int,
        project: str = "default",
        kl_beta: float = 0.0,
        config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        detectors: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """Register (or reattach to) the run; :class:`ServiceError` if the service refuses."""
        self._spec = _run_spec(name, group_size, project, kl_beta, config, tags, detectors, policy)
        self._open_spool()
        self._register(self._spec)
        self._start()
        assert self._run is not None
        return self._run

    def open_run(
        self,
        name: str,
        *,
        group_size: int,
        project: str = "default",
        kl_beta: float = 0.0,
        config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        detectors: Mapping[str, Any] | None = None,
        policy: Mapping[str, Any] | None = None,
        on_registered: Callable[[RunInfo], None] | None = None,
    ) -> RunInfo | None:
        """Like :meth:`register_run`, but never raises for an unreachable service: after one
        failed attempt the sender thread keeps retrying registration in the background while
        records queue up. ``on_registered`` runs once the run is known (maybe from that thread).
        A refusal (4xx: the run's settings are invalid) still raises :class:`ServiceError`."""
        self._spec = _run_spec(name, group_size, project, kl_beta, config, tags, detectors, policy)
        self._open_spool()
        if on_registered is not None:
            self._on_registered.append(on_registered)
        try:
            self._register(self._spec)
        except ServiceError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                raise
            log.warning("sharpwatch unreachable (%s); will register the run when it is back", exc)
        self._start()
        return self._run

    def _register(self, spec: dict[str, Any]) -> None:
        try:
            response = self._api.register_run(spec)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach sharpwatch at {self.base_url}: {exc}") from exc
        if response.status_code not in (200, 201):
            raise ServiceError(
                f"run registration failed ({response.status_code}): {response.text[:500]}",
                status_code=response.status_code,
            )
        self._run = RunInfo.model_validate(
            {**response.json(), "created": response.status_code == 201}
        )
        if self._run.ingest_token:
            # From now on act as this run only: the operator token registered it.
            self._http.headers["authorization"] = f"Bearer {self._run.ingest_token}"
            self._token_source = "this run's ingest token (issued when the run was registered)"
        for callback in self._on_registered:
            try:
                callback(self._run)
            except Exception:
                log.exception("sharpwatch on_registered callback failed")

    @property
    def run(self) -> RunInfo | None:
        return self._run

    @property
    def http(self) -> httpx.Client:
        """The underlying HTTP client (base URL and the run's token set)."""
        return self._http

    def update_run(self, change: Mapping[str, Any]) -> httpx.Response:
        """``PATCH`` the registered run (e.g. ``{"status": "finished"}``); transport errors
        raise ``httpx.HTTPError``, the answer is returned as it is."""
        return self._api.update_run(self._registered().id, change)

    def collapse_status(self, *, timeout: float = 5.0) -> httpx.Response:
        """``GET`` the registered run's collapse status (verdict, open alerts)."""
        return self._api.collapse(self._registered().id, timeout=timeout)

    def _registered(self) -> RunInfo:
        if self._run is None:
            raise ServiceError("no run is registered with the service yet")
        return self._run

    def set_token(self, token: str) -> None:
        """Send with ``token`` from now on (steps and commands), and retry what waits at once:
        the way back after the service refused the token (:attr:`flush_error` says so). An
        operator token registers the run again, as a restarted trainer would, and the client
        continues with the new ingest token the service returns; any other token (this run's
        ingest token from ``sharpwatch tokens create --kind ingest --run ID``) is used as is."""
        with self._cond:
            self._http.headers["authorization"] = f"Bearer {token}"
            self._token_source = "the token given to set_token()"
            self._token_to_register = token if self._spec is not None else None
            self._token_generation += 1
            self._auth_refused = None  # a refusal of this token is reported anew
            self._cond.notify_all()

    @property
    def last_spooled_step(self) -> int | None:
        """The highest step this run's log has seen (sent or not), also after a restart; a
        resumed trainer numbers its new steps after it and after the service's last step."""
        with self._cond:
            return self._wal.last_step if self._wal is not None else None

    @property
    def spool_path(self) -> Path | None:
        with self._cond:
            return self._wal.path if self._wal is not None else None

    def _open_spool(self) -> None:
        if self._spool_dir is None or self._spec is None or self._wal is not None:
            return
        try:
            wal = WriteAheadLog(
                self._spool_dir,
                spool_key(self.base_url, self._spec["project"], self._spec["name"]),
            )
        except OSError as exc:
            log.warning(
                "sharpwatch spool unavailable at %s (%s); step records wait in memory and are "
                "lost if the trainer dies before the service takes them",
                self._spool_dir,
                exc,
            )
            return
        with self._cond:
            if self._lines:  # submitted before the run was known: older than what follows
                try:
                    wal.append(list(self._lines), None)
                    self._lines.clear()
                except OSError as exc:
                    log.warning("sharpwatch could not write its spool %s: %s", wal.path, exc)
            self._wal = wal
            self._cond.notify_all()
        if wal.pending:
            log.warning(
                "sharpwatch found %d unsent step records of this run in %s; sending them first",
                wal.pending,
                wal.path,
            )

    # -- the training loop's side -------------------------------------------------------------
    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one step record for the log. Never blocks on the network, never raises."""
        try:
            clean = sanitize_record(record)
        except Exception as exc:  # a malformed record must not reach the training loop
            log.warning("dropping malformed step record: %s", exc)
            self.dropped += 1
            return
        self._enqueue(clean)

    def submit_deferred(self, record: DeferredRecord) -> None:
        """Queue a monitor's step record unbuilt: the writer thread builds and sanitises it
        (``_record.py``), so the training thread only appends. Never blocks, never raises.
        The step metrics are copied now, as :meth:`submit` does: later changes to the caller's
        ``StepResult.metrics`` do not reach the service."""
        self._enqueue(record.with_metrics(dict(record.metrics), list(record.non_finite)))

    def _enqueue(self, clean: dict[str, Any] | DeferredRecord) -> None:
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if self.bad_lines > self._bad_lines_reported:
                # Damaged log lines were skipped since the last record: say so in this one.
                clean = _with_metric(clean, BAD_LINES_METRIC, float(self.bad_lines))
                self._bad_lines_reported = self.bad_lines
            if self.auth_failures > self._auth_failures_reported:
                clean = _with_metric(clean, AUTH_FAILURES_METRIC, float(self.auth_failures))
                self._auth_failures_reported = self.auth_failures
            if len(self._records) + len(self._lines) >= self._max_queue:
                if self._wal is not None and not self._lines:
                    self._write_behind_locked()  # the writer lags: help it, drop nothing
                else:
                    self._drop_oldest_locked()
            self._records.append(clean)
            self._cond.notify_all()

    def _write_behind_locked(self) -> None:
        """Write the queued records from the caller's thread, after the writer's own batch
        (so the log keeps submission order). Only when ``max_queue`` records wait."""
        while self._writing:
            self._cond.wait(0.05)
        batch = list(self._records)
        self._records.clear()
        lines, last_step = self._serialise(batch)
        self._place_locked(lines, last_step)

    def _drop_oldest_locked(self) -> None:
        if len(self._lines) > self._lines_in_flight:
            del self._lines[self._lines_in_flight]
        elif self._records:
            self._records.popleft()
        else:
            return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "sharpwatch client queue full (%d records in memory%s): dropped %d oldest so "
                "far; the service at %s is unreachable or too slow",
                self._max_queue,
                "" if self._wal is None else ", the spool is not keeping up",
                self.dropped,
                self.base_url,
            )

    def _pending_locked(self) -> int:
        wal = self._wal.pending if self._wal is not None else 0
        return len(self._records) + self._writing + len(self._lines) + wal

    @property
    def pending(self) -> int:
        """Records not yet acknowledged by the service (memory and log)."""
        with self._cond:
            return self._pending_locked()

    @property
    def spooled(self) -> int:
        """Records in the log that the service has not acknowledged."""
        with self._cond:
            return self._wal.pending if self._wal is not None else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted record is acknowledged by the service. False if it did not
        happen within ``timeout``; :attr:`flush_error` then says why."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closed_unsent:
                self.flush_error = self._closed_unsent
                return False
            self._cond.notify_all()
            while self._pending_locked():
                if self._closed or self._thread is None:
                    self.flush_error = (
                        f"{self._pending_locked()} step records unsent: the client is "
                        + ("closed" if self._closed else "not sending (no run registered)")
                    )
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.flush_error = self._unsent_reason_locked(timeout)
                    return False
                self._cond.wait(min(remaining, 0.05))
        self.flush_error = None
        return True

    def _unsent_reason_locked(self, timeout: float) -> str:
        where = (
            f"kept in the spool {self._wal.path}"
            if self._wal is not None
            else "held in memory (no spool)"
        )
        reason = self._auth_refused or self.last_error or "the sender is still working through them"
        return (
            f"{self._pending_locked()} step records not acknowledged after {timeout:g} s, "
            f"{where}; last error: {reason}"
        )

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (up to ``timeout``), then stop. Records still unsent stay in the
        log, to be sent first when this run next opens (a restarted trainer)."""
        if self._closed:
            return
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._writer.join(timeout=max(1.0, timeout))  # places what was submitted
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
        # A sender past its join timeout may be writing the offset file: wait for it.
        with self._offset_lock, self._cond:
            wal, self._wal = self._wal, None
            if wal is not None:
                wal.save_offset()
                if wal.pending:
                    self._closed_unsent = (
                        f"the client is closed; {wal.pending} step records it could not send "
                        f"are kept in {wal.path} and sent when this run resumes"
                    )
                    log.warning(
                        "sharpwatch closed with %d unsent step records; kept in %s and sent "
                        "when this run resumes",
                        wal.pending,
                        wal.path,
                    )
                with contextlib.suppress(OSError):
                    wal.close()
            lost = self._pending_locked()
            if lost:
                self._closed_unsent = f"the client is closed; {lost} step records were lost"
            if not flushed and lost:
                log.warning("sharpwatch client closed with %d unsent step records lost", lost)
        self._http.close()
        _live_clients.discard(self)
        _exit.unregister(self)

    def flush_for_exit(self, signum: int) -> None:
        """From a SIGTERM/SIGINT handler (main thread): let the writer place what was
        submitted, fsync the log and, on SIGTERM with the service reachable, give the sender up
        to ``exit_flush_timeout`` seconds. Reads counters without the lock (the signal may have
        interrupted the main thread while it held it)."""
        deadline = time.monotonic() + 1.0
        while (self._records or self._writing) and time.monotonic() < deadline:
            time.sleep(0.005)
        wal = self._wal
        if wal is not None:
            wal.sync_fd()
        if signum != signal.SIGTERM or self.last_error is not None or self._run is None:
            return
        deadline = time.monotonic() + self._exit_flush_timeout
        while time.monotonic() < deadline:
            unsent = len(self._records) + self._writing + len(self._lines)
            if wal is not None:
                unsent += wal.pending
            if not unsent or self.last_error is not None:
                break
            time.sleep(0.01)
        # Not in the middle of the sender's compaction (its offset 0 then the truncation), so
        # the offset read is one of the current log. close(), if this signal interrupted it,
        # holds the lock in this very thread and writes the offset itself.
        if wal is not None and self._offset_lock.acquire(timeout=1.0):
            try:
                with contextlib.suppress(OSError):
                    wal.save_offset()
            finally:
                self._offset_lock.release()

    def __enter__(self) -> SharpwatchClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._supervised,
                args=(self._send_loop, "sender"),
                name="sharpwatch-sender",
                daemon=True,
            )
            self._thread.start()

    # -- supervision --------------------------------------------------------------------------
    def _supervised(self, loop: Callable[[], None], what: str) -> None:
        """Run ``loop`` until it returns; an exception is logged, counted and the loop starts
        again (after a short pause). The same failure three times at the same place in the log
        skips that line, so one poisonous record cannot stop the run's sending."""
        failures = 0
        while True:
            try:
                loop()
                return
            except Exception as exc:
                failures += 1
                with self._cond:
                    self.restarts += 1
                    self.last_error = f"{what} thread failed ({type(exc).__name__}: {exc})"
                    log.error(
                        "sharpwatch %s thread failed; restarting it (%d restarts so far)",
                        what,
                        self.restarts,
                        exc_info=True,
                    )
                    if what == "sender":
                        self._after_sender_crash_locked()
                    if self._closed:
                        return
                    self._cond.wait(min(2.0, 0.05 * 2 ** min(failures, 6)))
                    if self._closed and what == "sender":
                        return

    def _after_sender_crash_locked(self) -> None:
        self._lines_in_flight = 0
        place = ("log", self._wal.acked) if self._wal is not None else ("memory", self.sent)
        if place == self._crash_at:
            self._crash_count += 1
        else:
            self._crash_at, self._crash_count = place, 1
        if self._crash_count < 3:
            return
        self._crash_at, self._crash_count = None, 0
        if self._wal is not None and self._wal.acked < self._wal.end:
            chunk = self._wal.read(self._wal.acked, self._wal.end, 1, None)
            self._wal.ack(chunk.end, chunk.consumed)
        elif self._lines:
            self._lines.popleft()
        else:
            return
        self.bad_lines += 1
        log.error("sharpwatch skipped a step record that made its sender fail three times")

    # -- the writer thread: memory → log ------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._records:
                    wal = self._wal
                    if self._closed:
                        if wal is not None:
                            wal.sync()
                        return
                    due = None
                    if wal is not None and wal.dirty:
                        due = self._last_sync + self._fsync_interval - time.monotonic()
                        if due <= 0:
                            break
                    self._cond.wait(due)
                batch = list(self._records)
                self._records.clear()
                self._writing = len(batch)
            placed = False
            try:
                lines, last_step = self._serialise(batch)
                with self._cond:
                    self._place_locked(lines, last_step)
                    placed = True
            finally:
                with self._cond:
                    self._writing = 0
                    if not placed:
                        self.dropped += len(batch)
                        log.error("sharpwatch lost %d step records (writer failure)", len(batch))
                    self._cond.notify_all()
                    wal = self._wal
            if wal is not None and wal.dirty:
                now = time.monotonic()
                if now - self._last_sync >= self._fsync_interval:
                    self._last_sync = now
                    try:
                        wal.sync()
                    except OSError as exc:
                        log.warning("sharpwatch could not fsync its spool %s: %s", wal.path, exc)

    def _serialise(
        self, batch: list[dict[str, Any] | DeferredRecord]
    ) -> tuple[list[bytes], int | None]:
        lines: list[bytes] = []
        last: int | None = None
        for item in batch:
            if isinstance(item, DeferredRecord):
                try:
                    record = sanitize_record(item.build(), queries_clean=True)
                except Exception as exc:
                    log.warning("dropping malformed step record: %s", exc)
                    self.dropped += 1
                    continue
            else:
                record = item
            try:
                lines.append(json.dumps(record, separators=(",", ":"), allow_nan=False).encode())
            except (TypeError, ValueError) as exc:
                log.warning("dropping a step record that is not JSON-serialisable: %s", exc)
                self.dropped += 1
                continue
            step = record.get("step")
            if isinstance(step, int):
                last = step if last is None else max(last, step)
        return lines, last

    def _place_locked(self, lines: list[bytes], last_step: int | None) -> None:
        """Append to the log, or keep in memory when there is none (or it cannot be written).
        Once records wait in memory, newer ones join them there until the service took them
        all, so records are always sent in the order they were submitted."""
        if not lines:
            return
        if self._wal is not None and not self._lines:
            try:
                self._wal.append(lines, last_step)
            except OSError as exc:
                if not self._wal_failing:
                    log.error(
                        "sharpwatch could not write its spool %s (%s); new step records wait "
                        "in memory until the service takes them (at most max_queue=%d)",
                        self._wal.path,
                        exc,
                        self._max_queue,
                    )
                self._wal_failing = True
                self.last_error = f"spool write failed: {exc}"
            else:
                if self._wal_failing:
                    self._wal_failing = False
                    log.warning("sharpwatch writes its spool %s again", self._wal.path)
                if self._wal.pending - self._spool_warned_at >= self._spool_warn:
                    self._spool_warned_at = self._wal.pending
                    log.warning(
                        "sharpwatch spool holds %d unsent step records (%.1f MB) in %s; the "
                        "service at %s is unreachable (%s)",
                        self._wal.pending,
                        (self._wal.end - self._wal.acked) / 1e6,
                        self._wal.path,
                        self.base_url,
                        self.last_error,
                    )
                elif self._wal.pending < self._spool_warned_at:
                    self._spool_warned_at = 0
                return
        self._lines.extend(lines)
        while len(self._lines) > self._max_queue:
            self._drop_oldest_locked()

    # -- the sender thread: log → service -----------------------------------------------------
    def _send_loop(self) -> None:
        backoff = 0.0
        while True:
            job = self._next_job()
            if job is None:
                return
            lines, wal_end, consumed = job
            with self._cond:
                generation = self._token_generation
            retry = self._deliver(lines) if lines else False
            offset: _OffsetSave | None = None
            with self._cond:
                if not retry:
                    offset = self._acknowledge_locked(len(lines), wal_end, consumed)
                self._lines_in_flight = 0
                self._cond.notify_all()
                closing = self._closed
            if offset is not None:
                self._save_offset(offset)
            if not retry:
                backoff = 0.0
                continue
            if closing:
                return  # unsent records stay in the log (or memory) for close() to report
            if self._auth_refused is not None:
                self._wait_for_auth(generation)
                continue
            backoff = min(self._max_backoff, max(0.1, backoff * 2))
            with self._cond:
                self._cond.wait(backoff * random.uniform(0.5, 1.0))

    def _wait_for_auth(self, generation: int) -> None:
        """After a refused token: wait ``auth_retry_interval`` (not woken by new records, so a
        refusing service is asked once per interval), or until :meth:`set_token` (since the
        attempt began) or close."""
        with self._cond:
            deadline = time.monotonic() + self._auth_retry_interval
            while not self._closed and self._token_generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _next_job(self) -> tuple[list[bytes], int | None, int] | None:
        """The next batch: its lines, the log offset after them (None: from memory) and how
        many log lines it consumes. None when the client is closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                wal = self._wal
                if wal is not None and wal.acked < wal.end:
                    if wal.pending < self._batch_size and self._flush_interval:
                        self._cond.wait(self._flush_interval)  # let a small batch fill up
                        if self._closed or self._wal is not wal:
                            continue
                    start, end = wal.acked, wal.end
                    break
                if self._lines:
                    if len(self._lines) < self._batch_size and self._flush_interval:
                        self._cond.wait(self._flush_interval)
                        if self._closed:
                            return None
                    lines = self._fit(list(itertools.islice(self._lines, self._batch_size)))
                    self._lines_in_flight = len(lines)
                    return lines, None, 0
                self._cond.wait()
        chunk = wal.read(start, end, self._batch_size, self._max_body)
        if chunk.bad:
            with self._cond:
                self.bad_lines += len(chunk.bad)
            for problem in chunk.bad:
                log.error(
                    "sharpwatch skipped a damaged line of its spool %s (%s); %d skipped so far",
                    wal.path,
                    problem,
                    self.bad_lines,
                )
        return chunk.lines, chunk.end, chunk.consumed

    def _fit(self, lines: list[bytes]) -> list[bytes]:
        """The longest prefix (at least one) whose body fits the learned size limit."""
        if self._max_body is None:
            return lines
        for count in range(len(lines), 0, -1):
            if body_size(lines[:count]) <= self._max_body:
                return lines[:count]
        return lines[:1]

    def _acknowledge_locked(
        self, count: int, wal_end: int | None, consumed: int
    ) -> _OffsetSave | None:
        """Count the batch as taken; what of the offset file is due, to be written by
        :meth:`_save_offset` after ``_cond`` is released."""
        if wal_end is None:
            for _ in range(min(count, len(self._lines))):
                self._lines.popleft()
            return None
        wal = self._wal
        if wal is None:
            return None
        wal.ack(wal_end, consumed)
        if wal.compactable:
            return _OffsetSave(wal, wal.acked, wal.last_step, compact=True)
        now = time.monotonic()
        if now - self._last_offset_save >= self._fsync_interval and wal.offset_unsaved:
            self._last_offset_save = now
            return _OffsetSave(wal, wal.acked, wal.last_step, compact=False)
        return None

    def _save_offset(self, save: _OffsetSave) -> None:
        """Write the offset file outside ``_cond`` (the sender thread only). A compaction makes
        offset 0 durable first, then empties the log under ``_cond`` only if nothing was
        appended meanwhile (``WriteAheadLog.truncate``): a crash in between re-sends, never
        skips, and records appended meanwhile stay, the offset file then behind them until the
        next save. The offset lock is held throughout, so no other writer of the offset file
        (close, the exit handler) reads an offset of the log before its truncation and writes
        it after; the sender's own saves follow the order of its acknowledgements."""
        wal = save.wal
        try:
            with self._offset_lock:
                if not save.compact:
                    wal.write_offset(save.offset, save.last_step)
                    return
                wal.write_offset(0, save.last_step, durable=True)
                with self._cond:
                    if self._wal is wal:
                        wal.truncate(save.offset)
        except OSError as exc:
            log.warning("sharpwatch could not save its spool offset %s: %s", wal.offset_path, exc)

    def _deliver(self, lines: list[bytes]) -> bool:
        """Post serialised records; True if the whole batch should be retried later. Records the
        service refuses for good (422, a 409 conflicting re-send) are dropped one by one with an
        error log; a 413 splits the batch down to single records, and a single record over the
        limit is reported once (its size and the service setting to raise) and dropped."""
        if not self._register_if_needed():
            return True
        assert self._run is not None
        if self._max_body is not None and len(lines) == 1:
            size = body_size(lines)
            if size > self._max_body:
                self._too_large(lines[0], size, self._max_body)
                return False
        while lines:
            body = encode_body(lines)
            try:
                response = self._api.post_steps(self._run.id, body)
            except httpx.HTTPError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                return True
            if response.status_code == 200:
                self.sent += len(lines)
                self.last_error = None
                self._auth_accepted()
                return False
            self.last_error = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code in _AUTH_STATUS:
                self._refused_token(response.status_code, _detail(response), "send steps")
                return True  # nothing is dropped: the records wait in the log for a token
            if response.status_code == 413:
                return self._split(lines, len(body), response)
            if response.status_code in _RETRYABLE_STATUS:
                return True
            bad = _rejected_indices(response, len(lines))
            if not bad:
                bad = set(range(len(lines)))
            log.error(
                "sharpwatch refused %d step record(s) (steps %s): %s",
                len(bad),
                [step_of(lines[i]) for i in sorted(bad)][:10],
                self.last_error,
            )
            self.rejected += len(bad)
            lines = [line for i, line in enumerate(lines) if i not in bad]
        return False

    def _register_if_needed(self) -> bool:
        """Register the run when it is not known yet, or again with set_token()'s token (an
        operator's gets a new ingest token; another kind is refused 403 and kept for sending).
        False when registration has to be retried later."""
        token, self._token_to_register = self._token_to_register, None
        if self._run is not None and token is None:
            return True
        if self._spec is None:
            return self._run is not None
        try:
            self._register(self._spec)
        except ServiceError as exc:
            self.last_error = str(exc)
            if exc.status_code == 403 and self._run is not None:
                return True  # not an operator token: send the steps with it as it is
            if exc.status_code in _AUTH_STATUS:
                self._refused_token(exc.status_code, str(exc), "register the run")
            return False
        return True

    def _refused_token(self, status: int, detail: str, attempt: str) -> None:
        """The service refused the token: count it, keep every record, and say once per token
        which token it was, for which run, and what to do."""
        with self._cond:
            self.auth_failures += 1
            first = self._auth_refused is None
            run = self._run
            where = (
                f"kept in the spool {self._wal.path}"
                if self._wal is not None
                else f"held in memory (no spool; at most max_queue={self._max_queue})"
            )
            pending = self._pending_locked()
        what = (
            f"run {run.id} ({run.project}/{run.name})"
            if run is not None
            else f"run {self._spec['project']}/{self._spec['name']}"
            if self._spec is not None
            else "this run"
        )
        if "authorization" not in self._http.headers:
            token = "no token (the service requires one)"
        else:
            token = self._token_source
        fix = (
            "registering a run needs an operator token: pass token= (e.g. from "
            "SHARPWATCH_TOKEN) or call client.set_token(<operator token>)"
            if run is None
            else "check whether it was revoked or rotated by another registration of the same "
            "run (`sharpwatch tokens list --all`), then call client.set_token(<operator token>) "
            "to register the run again, or client.set_token(<ingest token>) with one from "
            f"`sharpwatch tokens create --kind ingest --run {run.id}`, or restart the trainer "
            "with SHARPWATCH_TOKEN set to an operator token: it resumes from the same spool"
        )
        message = (
            f"the service refused {token} to {attempt} for {what} (HTTP {status}: {detail}); "
            f"{pending} step records are {where} and nothing is lost; retrying every "
            f"{self._auth_retry_interval:g} s; to fix: {fix}"
        )
        self._auth_refused = message
        self.last_error = message
        if first:
            log.error("sharpwatch: %s", message)

    def _auth_accepted(self) -> None:
        if self._auth_refused is None:
            return
        self._auth_refused = None
        log.warning("sharpwatch: the service accepts the token again; sending what waited")

    def _split(self, lines: list[bytes], size: int, response: httpx.Response) -> bool:
        limit = _body_limit(response) or size // 2  # unknown limit: halve
        self._max_body = limit if self._max_body is None else min(self._max_body, limit)
        if len(lines) == 1:
            self._too_large(lines[0], size, self._max_body)
            return False
        retry = False
        for part in _chunks(lines, self._max_body):
            retry = self._deliver(part) or retry
            if retry:
                return True  # the rest goes again later; what went already is a duplicate
        return retry

    def _too_large(self, line: bytes, size: int, limit: int) -> None:
        step = step_of(line)
        if step in self._oversize_reported:
            return  # a split batch sent again after a transport error meets the same step again
        self._oversize_reported.add(step)
        self.rejected += 1
        log.error(
            "sharpwatch dropped step %s: its record is %d bytes (%s queries), over the "
            "service's body limit of %d bytes; raise SHARPWATCH_MAX_BODY_BYTES on the service "
            "(or send fewer queries per step)",
            step,
            size,
            _queries_in(line),
            limit,
        )
        self.last_error = (
            f"step {step} ({size} bytes) exceeds the service's body limit ({limit} bytes); "
            "raise SHARPWATCH_MAX_BODY_BYTES"
        )


class _OffsetSave(NamedTuple):
    """An offset file write the sender owes once it has released ``_cond``."""

    wal: WriteAheadLog
    offset: int  # acknowledged up to here (with compact: the log's end, all acknowledged)
    last_step: int | None
    compact: bool  # make offset 0 durable, then empty the log if nothing was appended


def _queries_in(line: bytes) -> int | str:
    """How many queries a serialised record carries, in either shape (``"?"``: unreadable)."""
    try:
        queries = json.loads(line).get("queries") or []
        return query_count(queries)
    except (ValueError, TypeError, AttributeError):
        return "?"


def _with_metric(
    record: dict[str, Any] | DeferredRecord, name: str, value: float
) -> dict[str, Any] | DeferredRecord:
    if isinstance(record, DeferredRecord):
        return record.with_metrics({**record.metrics, name: value}, record.non_finite)
    record["metrics"][name] = value
    return record


def _detail(response: httpx.Response) -> str:
    """The service's reason (``detail``), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:300]


def _body_limit(response: httpx.Response) -> int | None:
    """The service's body limit, from its 413 answer (``... exceeds N bytes ...``)."""
    match = re.search(r"exceeds (\d+) bytes", response.text)
    return int(match.group(1)) if match else None


def _chunks(lines: list[bytes], max_body: int) -> list[list[bytes]]:
    """Consecutive groups of ``lines`` whose bodies fit ``max_body`` (an oversized line alone)."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    for line in lines:
        if current and body_size([*current, line]) > max_body:
            groups.append(current)
            current = []
        current.append(line)
    if current:
        groups.append(current)
    return groups


def _rejected_indices(response: httpx.Response, size: int) -> set[int]:
    """Which records of a refused batch the service named (``steps[i]...``)."""
    try:
        body = response.json()
    except ValueError:
        return set()
    fields: list[str] = []
    if isinstance(body, dict):
        if isinstance(body.get("field"), str):
            fields.append(body["field"])
        for error in body.get("errors") or []:
            if isinstance(error, dict) and isinstance(error.get("field"), str):
                fields.append(error["field"])
    indices = set()
    for field in fields:
        match = re.match(r"steps\[(\d+)\]", field)
        if match and int(match.group(1)) < size:
            indices.add(int(match.group(1)))
    return indices


def _run_spec(
    name: str,
    group_size: int,
    project: str,
    kl_beta: float,
    config: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    detectors: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The wire's run spec as sent; the service validates it (and names a field it refuses)."""
    spec = wire_run.RunSpec[dict[str, Any], dict[str, Any]].model_construct(
        name=name,
        project=project,
        group_size=group_size,
        kl_beta=kl_beta,
        config=dict(config or {}),
        tags=dict(tags or {}),
        detectors=None if detectors is None else dict(detectors),
        policy=None if policy is None else dict(policy),
    )
    return {field: value for field, value in spec if value is not None}


_live_clients: weakref.WeakSet[SharpwatchClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_live_clients):
        with contextlib.suppress(Exception):
            # Unsent records are in the spool: wait only for a service that is answering.
            client.close(timeout=5.0 if client.last_error is None else 0.5)
