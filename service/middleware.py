"""ASGI middleware: the request guard (body size 413, content type 415, JSON that cannot be
parsed safely 422, NUL in the URL 422) and request latency."""

from __future__ import annotations

import email.message
import json
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import ServiceMetrics

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PARSE_INLINE_BYTES = 256 * 1024  # larger bodies are checked off the event loop


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return mapping


def _json_problem(body: bytes) -> tuple[str, str] | None:
    """(field, reason) when the body is JSON that must be refused before validation; None when
    it is fine, or malformed in a way the app's own parser reports (with the position)."""
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        return exc.key, (
            f"duplicate key {exc.key!r} in a JSON object: each key may appear once "
            "(which copy would win is parser-dependent)"
        )
    except RecursionError:
        return "body", "body is not valid JSON: nested too deeply"
    except json.JSONDecodeError:
        return None
    except ValueError as exc:  # e.g. an integer literal longer than 4300 digits
        return "body", f"body is not valid JSON: {exc}"
    return None


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


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


class BodySizeLimit:
    """The request guard, in front of the app:

    - a body larger than ``max_bytes``, declared or streamed, gets 413 before the app runs;
    - a body that is not JSON (by ``Content-Type``) on a method that takes one gets 415;
    - JSON with a duplicate object key, nested too deeply for the parser, or with an integer
      literal too long to convert gets 422 naming the key (or ``body``);
    - a NUL character in the URL path or a query parameter gets 422 naming the parameter (no
      text column can store it).

    The body is read whole here (it is bounded) and handed to the app unchanged."""

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
        content_type = ""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        if body:
            if content_type and not _is_json(content_type):
                await _reply(
                    send,
                    415,
                    "content-type",
                    f"Content-Type {content_type!r} is not accepted: send the body as JSON with "
                    "'Content-Type: application/json'",
                )
                return
            if len(body) > _PARSE_INLINE_BYTES:
                problem = await run_in_threadpool(_json_problem, body)
            else:
                problem = _json_problem(body)
            if problem is not None:
                await _reply(send, 422, *problem)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        await _reply(
            send,
            413,
            "body",
            f"request body exceeds {self.max_bytes} bytes; send fewer steps per request "
            "(SHARPWATCH_MAX_BODY_BYTES sets the limit)",
        )


async def _reply(send: Send, status: int, field: str, reason: str) -> None:
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
            "headers": [(b"content-type", b"application/json")],
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
