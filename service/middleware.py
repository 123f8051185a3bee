"""ASGI middleware: the request guard (body size 413 while streaming, NUL in the URL 422) and
request latency."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import ServiceMetrics

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _nul_in_url(scope: Scope) -> tuple[str, str] | None:
    if "\x00" in scope.get("path", ""):
        return "path", "the URL path must not contain NUL (%00) characters"
    raw = scope.get("query_string", b"")
    if b"%00" in raw or b"\x00" in raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "") or "query", (
                    "query parameters must not contain NUL (%00) characters"
                )
    return None


class _BodyTooLargeError(Exception):
    pass


class BodySizeLimit:
    """The request guard, in front of the app; it never reads the body itself:

    - a body declared larger than ``max_bytes`` gets 413 before routing; one that streams past
      it gets 413 the moment it does (the count is kept on the way through), and the
      connection is closed;
    - a NUL character in the URL path or a query parameter gets 422 naming the parameter (no
      text column can store it).

    Authentication, the content type and the one JSON parse happen per route, after routing and
    before the body is read (``service.body_guard.GuardedRoute``)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = _nul_in_url(scope)
        if problem is not None:
            await _reply(send, 422, *problem)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLargeError:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await _reply(
            send,
            413,
            "body",
            f"request body exceeds {self.max_bytes} bytes; send fewer steps per request "
            "(SHARPWATCH_MAX_BODY_BYTES sets the limit)",
            close=True,
        )


async def _reply(send: Send, status: int, field: str, reason: str, *, close: bool = False) -> None:
    """An error in the app's own shape: ``detail`` names the field, ``errors`` lists it."""
    body: dict[str, Any] = {"detail": reason, "field": field}
    if status == 422:
        body = {
            "detail": f"{field}: {reason}",
            "field": field,
            "errors": [{"field": field, "reason": reason, "type": "request_rejected"}],
        }
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")]
            + ([(b"connection", b"close")] if close else []),
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class RequestTiming:
    """Observe request latency by route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.request_seconds.labels(
                scope.get("method", ""), template, f"{status // 100}xx"
            ).observe(time.perf_counter() - start)
