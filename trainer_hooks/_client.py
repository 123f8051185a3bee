"""The HTTP client: registers a run and streams step records from a background thread.

The training loop only ever calls :meth:`SharpwatchClient.submit`, which appends to an in-memory
queue and returns; it never blocks on the network and never raises. A background thread batches
records and posts them in order, retrying with exponential backoff and jitter while the service
is down (re-sends are safe: the service treats an identical step as a duplicate).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import random
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from trainer_hooks._errors import ConfigurationError, ServiceError
from trainer_hooks._spool import Spool, default_spool_dir, spool_key

log = logging.getLogger("trainer_hooks.client")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The service's view of a registered run."""

    id: int
    name: str
    project: str
    group_size: int
    kl_beta: float
    status: str
    created: bool  # False when an existing run was reattached (resume)
    last_step: int | None = None  # highest step the service holds (resume from last_step + 1)
    alpha: float | None = None  # IAC α in effect as the service last saw it
    ingest_token: str | None = None  # this run's token, when the service requires tokens


def sanitize_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy: non-finite metric values become null and are named in ``non_finite``."""
    out = dict(record)
    metrics: dict[str, Any] = {}
    non_finite = list(out.get("non_finite") or [])
    for name, value in (out.get("metrics") or {}).items():
        if value is not None and not math.isfinite(float(value)):
            metrics[name] = None
            if name not in non_finite:
                non_finite.append(name)
        else:
            metrics[name] = None if value is None else float(value)
    out["metrics"] = metrics
    out["non_finite"] = non_finite
    queries = out.get("queries")
    if queries:
        out["queries"] = [_sanitize_query(q) for q in queries]
    return out


def _sanitize_query(query: Mapping[str, Any]) -> dict[str, Any]:
    clean = dict(query)
    for key, value in query.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
    return clean


class SharpwatchClient:
    """Talks to one sharpwatch service for one run.

    Records queue in memory; while the service is unreachable they spill to an on-disk spool
    (one per run, surviving a trainer restart) and replay in order when it is back.

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        token: bearer token (an operator token registers the run; the client then switches to
            the run's own ingest token that the service returns).
        transport: an ``httpx`` transport (tests hand in their own).
        timeout: seconds per HTTP request.
        max_queue: records held in memory; beyond it they spill to the spool (or, with
            ``spool_dir=False``, the oldest are dropped with a warning).
        batch_size: most records per request.
        flush_interval: seconds the sender waits to fill a batch.
        spool_dir: where spools live (default ``$SHARPWATCH_SPOOL_DIR`` or
            ``~/.cache/sharpwatch/spool``); ``False`` disables spooling.
        spool_warn_records: warn each time the spool grows by this many records.
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
        headers = {"user-agent": "sharpwatch-trainer-hooks"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.base_url = base_url.rstrip("/")
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._spool_dir: Path | None = (
            None
            if spool_dir is False
            else (default_spool_dir() if spool_dir is None else Path(spool_dir))
        )
        self._spool: Spool | None = None
        self._spool_warn = spool_warn_records
        self._spool_warned_at = 0
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._run: RunInfo | None = None
        self._spec: dict[str, Any] | None = None
        self._on_registered: list[Callable[[RunInfo], None]] = []
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.rejected = 0
        self.sent = 0
        self.last_error: str | None = None
        _live_clients.add(self)

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
            response = self._http.post("/api/v1/runs", json=spec)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach sharpwatch at {self.base_url}: {exc}") from exc
        if response.status_code not in (200, 201):
            raise ServiceError(
                f"run registration failed ({response.status_code}): {response.text[:500]}",
                status_code=response.status_code,
            )
        data = response.json()
        self._run = RunInfo(
            id=int(data["id"]),
            name=data["name"],
            project=data["project"],
            group_size=int(data["group_size"]),
            kl_beta=float(data["kl_beta"]),
            status=data["status"],
            created=response.status_code == 201,
            last_step=data.get("last_step"),
            alpha=data.get("alpha"),
            ingest_token=data.get("ingest_token"),
        )
        if self._run.ingest_token:
            # From now on act as this run only: the operator token registered it.
            self._http.headers["authorization"] = f"Bearer {self._run.ingest_token}"
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
        """The underlying HTTP client (shared with the command poller)."""
        return self._http

    def _open_spool(self) -> None:
        if self._spool_dir is None or self._spec is None or self._spool is not None:
            return
        try:
            spool = Spool(
                self._spool_dir,
                spool_key(self.base_url, self._spec["project"], self._spec["name"]),
            )
        except OSError as exc:
            log.warning("sharpwatch spool unavailable at %s: %s", self._spool_dir, exc)
            return
        with self._cond:
            self._spool = spool
        if spool.pending:
            log.warning(
                "sharpwatch found %d unsent step records of this run in %s; sending them first",
                spool.pending,
                spool.path,
            )

    # -- sending ------------------------------------------------------------------------------
    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one step record for sending. Never blocks on the network, never raises."""
        try:
            clean = sanitize_record(record)
        except Exception as exc:  # a malformed record must not reach the training loop
            log.warning("dropping malformed step record: %s", exc)
            self.dropped += 1
            return
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            if len(self._queue) >= self._max_queue and self._spool is None:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "sharpwatch client queue full (%d records) and no spool: dropped %d "
                        "oldest so far; the service at %s is unreachable or too slow",
                        self._max_queue,
                        self.dropped,
                        self.base_url,
                    )
            self._queue.append(clean)
            self._cond.notify()

    @property
    def pending(self) -> int:
        """Records not yet acknowledged by the service (memory and spool)."""
        with self._cond:
            spooled = self._spool.pending if self._spool is not None else 0
            return len(self._queue) + self._in_flight + spooled

    @property
    def spooled(self) -> int:
        with self._cond:
            return self._spool.pending if self._spool is not None else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is sent; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight or (self._spool and self._spool.pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (up to ``timeout``), then stop. Records still unsent go to the
        spool, to be sent when this run next opens (a restarted trainer)."""
        if self._closed:
            return
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
        with self._cond:
            left = len(self._queue)
            if left and self._spool is not None:
                self._spill_locked()
                log.warning(
                    "sharpwatch closed with %d unsent step records; kept in %s and sent when "
                    "this run resumes",
                    self._spool.pending,
                    self._spool.path,
                )
            elif not flushed and left:
                log.warning("sharpwatch client closed with %d unsent step records lost", left)
        self._http.close()
        _live_clients.discard(self)

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
                target=self._send_loop, name="sharpwatch-sender", daemon=True
            )
            self._thread.start()

    def _spill_locked(self) -> None:
        """Move the memory queue to the spool (caller holds the lock). Order is kept: the spool
        only ever receives records newer than what it already holds."""
        if self._spool is None or not self._queue:
            return
        records = list(self._queue)
        try:
            self._spool.append(records)
        except OSError as exc:
            log.warning("sharpwatch could not write its spool %s: %s", self._spool.path, exc)
            return
        self._queue.clear()
        if self._spool.pending - self._spool_warned_at >= self._spool_warn:
            self._spool_warned_at = self._spool.pending
            log.warning(
                "sharpwatch spool holds %d unsent step records (%.1f MB) in %s; the service at "
                "%s is unreachable (%s)",
                self._spool.pending,
                self._spool.pending_bytes / 1e6,
                self._spool.path,
                self.base_url,
                self.last_error,
            )

    def _take_batch(self) -> tuple[list[dict[str, Any]], int | None] | None:
        """The next batch (spool first, then memory) and its spool end offset; None to exit."""
        with self._cond:
            while True:
                spooled = self._spool is not None and self._spool.pending > 0
                if spooled or self._queue:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            if spooled:
                assert self._spool is not None
                batch, end = self._spool.peek(self._batch_size)
                if batch:
                    self._in_flight = len(batch)
                    return batch, end
                self._spool.consume(end, self._spool.pending)  # only torn or blank lines left
                return [], None
            if len(self._queue) < self._batch_size and not self._closed:
                self._cond.wait(self._flush_interval)
            count = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_flight = len(batch)
            return batch, None

    def _send_loop(self) -> None:
        backoff = 0.0
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch, spool_end = taken
            if not batch:
                continue
            retry = self._post(batch)
            with self._cond:
                self._in_flight = 0
                if not retry and spool_end is not None and self._spool is not None:
                    self._spool.consume(spool_end, len(batch))
                elif retry and spool_end is None:
                    self._queue.extendleft(reversed(batch))
                if retry and len(self._queue) >= self._max_queue:
                    self._spill_locked()
                self._cond.notify_all()
                closing = self._closed
            if not retry:
                backoff = 0.0
                continue
            if closing:
                return  # close() spools what is left
            backoff = min(self._max_backoff, max(0.1, backoff * 2))
            with self._cond:
                self._cond.wait(backoff * random.uniform(0.5, 1.0))
                if len(self._queue) >= self._max_queue:
                    self._spill_locked()

    def _post(self, batch: list[dict[str, Any]]) -> bool:
        """Send one batch; True if it should be retried. Records the service refuses for good
        (422, or a 409 conflicting re-send) are dropped one by one, with an error log, and the
        rest of the batch is sent again at once."""
        if self._run is None:
            if self._spec is None:
                return True
            try:
                self._register(self._spec)
            except ServiceError as exc:
                self.last_error = str(exc)
                return True
            assert self._run is not None
        while batch:
            try:
                response = self._http.post(
                    f"/api/v1/runs/{self._run.id}/steps", json={"steps": batch}
                )
            except httpx.HTTPError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                return True
            if response.status_code == 200:
                self.sent += len(batch)
                self.last_error = None
                return False
            self.last_error = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code in _RETRYABLE_STATUS:
                return True
            bad = _rejected_indices(response, len(batch))
            if not bad:
                bad = set(range(len(batch)))
            log.error(
                "sharpwatch refused %d step record(s) (steps %s): %s",
                len(bad),
                [batch[i].get("step") for i in sorted(bad)][:10],
                self.last_error,
            )
            self.rejected += len(bad)
            batch = [record for i, record in enumerate(batch) if i not in bad]
        return False


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
    spec: dict[str, Any] = {
        "name": name,
        "project": project,
        "group_size": group_size,
        "kl_beta": kl_beta,
        "config": dict(config or {}),
        "tags": dict(tags or {}),
    }
    if detectors is not None:
        spec["detectors"] = dict(detectors)
    if policy is not None:
        spec["policy"] = dict(policy)
    return spec


_live_clients: weakref.WeakSet[SharpwatchClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_live_clients):
        with contextlib.suppress(Exception):
            client.close(timeout=5.0)
