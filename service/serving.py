"""How ``sharpwatch serve`` runs uvicorn: its HTTP protocol with header-size and slow-client
limits (uvicorn has neither for the httptools parser it uses by default).

- The request head (request line and headers) may be at most ``header_limit_bytes``: a larger
  one gets 431 and the connection is closed once that many bytes have arrived, so a 64 MiB
  header costs the service no more than the limit.
- A connection must complete its request head within ``client_timeout`` seconds of opening (or
  of its previous response); a request body must not pause for longer than ``client_timeout``,
  and once ``client_timeout`` has passed it must have averaged ``MIN_BODY_RATE`` bytes a
  second. A slower client (slowloris, trickled headers or body) is disconnected. Time the
  service itself spends not reading (the app is busy, flow control paused the socket) never
  counts against the client.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

MIN_BODY_RATE = 1024  # bytes per second, averaged over the body so far
_TICK = 0.25  # seconds between checks of a connection's deadlines


@functools.cache
def _limits() -> tuple[int, float]:
    settings = Settings()
    return settings.header_limit_bytes, settings.client_timeout


class _HeadTooLargeError(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. ``header_limit`` and
    ``client_timeout`` default to the process's settings (``SHARPWATCH_*``); tests subclass it
    with their own."""

    header_limit: int | None = None
    client_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        default_limit, default_timeout = _limits()
        self._header_limit = self.header_limit or default_limit
        self._timeout = self.client_timeout or default_timeout
        self._in_head = True
        self._head_bytes = 0
        self._phase_start = 0.0
        self._last_data = 0.0
        self._body_bytes = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._head_refused = False

    # -- lifetime ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()
        self._watchdog = self.loop.call_later(_TICK, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._phase_start = self._last_data = self.loop.time()

    # -- the head's size --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._body_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._header_limit:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        # The chunk that completed the head may carry body bytes too: count the head exactly.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self._header_limit:
            self._refuse_head()
            raise _HeadTooLargeError  # stops the parser; uvicorn's own 400 is suppressed
        self._in_head = False
        self._body_bytes = 0
        self._phase_start = self._last_data = self.loop.time()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._begin_head()

    def send_400_response(self, msg: str) -> None:
        if not self._head_refused:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if self._head_refused or self.transport.is_closing():
            return
        self._head_refused = True
        message = (
            f"request head exceeds {self._header_limit} bytes "
            "(SHARPWATCH_HEADER_LIMIT_BYTES sets the limit)"
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + message
        )
        self.transport.close()

    # -- slow clients -----------------------------------------------------------------------
    def _check(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._too_slow(now):
            self.transport.close()
            return
        self._watchdog = self.loop.call_later(_TICK, self._check)

    def _too_slow(self, now: float) -> bool:
        cycle = self.cycle
        if self._in_head:
            if cycle is not None and not cycle.response_complete:
                return False  # a response is in progress (a long-poll): not the client's turn
            return now - self._phase_start > self._timeout
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return False  # the body is complete: the service is answering
        if self.flow.read_paused:
            # The service is not reading (flow control): restart the client's clock.
            self._phase_start = self._last_data = now
            self._body_bytes = 0
            return False
        if now - self._last_data > self._timeout:
            return True
        elapsed = now - self._phase_start
        return elapsed > self._timeout and self._body_bytes < MIN_BODY_RATE * elapsed
