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
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from trainer_hooks._errors import ConfigurationError, ServiceError

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

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the service requires authentication.
        transport: an ``httpx`` transport (tests hand in their own).
        timeout: seconds per HTTP request.
        max_queue: records held in memory before the oldest are dropped (with a warning).
        batch_size: most records per request.
        flush_interval: seconds the sender waits to fill a batch.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        max_queue: int = 100_000,
        batch_size: int = 64,
        flush_interval: float = 0.05,
        max_backoff: float = 10.0,
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
        self._queue: deque[dict[str, Any]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._run: RunInfo | None = None
        self._thread: threading.Thread | None = None
        self.dropped = 0
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
    ) -> RunInfo:
        """Register (or reattach to) the run; :class:`ServiceError` if the service refuses."""
        body = {
            "name": name,
            "project": project,
            "group_size": group_size,
            "kl_beta": kl_beta,
            "config": dict(config or {}),
            "tags": dict(tags or {}),
        }
        try:
            response = self._http.post("/api/v1/runs", json=body)
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
        )
        self._start()
        return self._run

    @property
    def run(self) -> RunInfo | None:
        return self._run

    @property
    def http(self) -> httpx.Client:
        """The underlying HTTP client (shared with the command poller)."""
        return self._http

    # -- sending ------------------------------------------------------------------------------
    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one step record for sending. Never blocks, never raises."""
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
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "sharpwatch client queue full (%d records): dropped %d oldest so far; "
                        "the service at %s is unreachable or too slow",
                        self._max_queue,
                        self.dropped,
                        self.base_url,
                    )
            self._queue.append(clean)
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._in_flight

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is sent; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued (up to ``timeout``), stop the sender and close the connection."""
        if self._closed:
            return
        flushed = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._queue)
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
        if not flushed and left:
            log.warning("sharpwatch client closed with %d unsent step records", left)
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

    def _send_loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                if self._closed and backoff > 0:
                    return  # closing while the service is down: give up after flush's timeout
                if len(self._queue) < self._batch_size and not self._closed:
                    self._cond.wait(self._flush_interval)
                batch = [
                    self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))
                ]
                self._in_flight = len(batch)
            retry = self._post(batch)
            with self._cond:
                self._in_flight = 0
                if retry:
                    self._queue.extendleft(reversed(batch))
                self._cond.notify_all()
            if retry:
                backoff = min(self._max_backoff, max(0.1, backoff * 2))
                time.sleep(backoff * random.uniform(0.5, 1.0))
            else:
                backoff = 0.0

    def _post(self, batch: list[dict[str, Any]]) -> bool:
        """Send one batch; True if it should be retried."""
        assert self._run is not None
        try:
            response = self._http.post(f"/api/v1/runs/{self._run.id}/steps", json={"steps": batch})
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
        # 4xx other than the retryable ones: the batch can never succeed as it is.
        log.error(
            "sharpwatch rejected %d step records (steps %s..%s): %s",
            len(batch),
            batch[0].get("step"),
            batch[-1].get("step"),
            self.last_error,
        )
        self.dropped += len(batch)
        return False


_live_clients: weakref.WeakSet[SharpwatchClient] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for client in list(_live_clients):
        with contextlib.suppress(Exception):
            client.close(timeout=5.0)
