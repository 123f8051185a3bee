"""Limits before parsing: the route class every API router uses.

FastAPI reads and parses a route's body before it resolves the route's dependencies, so an
unauthenticated 31 MB body used to be read and parsed (twice, with the duplicate-key check in
the middleware) before its 401. ``GuardedRoute`` runs, after routing and before the body is read:

1. authentication (401) and the route's access rule (403): the same dependencies the route
   declares (``deps.require_*``), called early; the principal is kept for the route's own;
2. the body, read as it streams, refused with 413 the moment it passes ``max_body_bytes``;
3. the content type (415), then one JSON parse that reports duplicate keys in the same pass
   (422 naming the key), whose result FastAPI then validates; the raw bytes are released as soon
   as they are decoded to text, before the parse builds its tree.

A refused request's connection is closed, so a client cannot keep sending a body nobody reads.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from service import deps
from service.auth import Principal

_PARSE_INLINE_BYTES = 256 * 1024  # larger bodies are parsed off the event loop
_CLOSE = {"Connection": "close"}
# The parsed body stands in for the bytes FastAPI would otherwise keep for the whole request.
_RELEASED = b"{}"


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


class BodyRejectedError(Exception):
    """A body refused before validation: (status, field, reason)."""

    def __init__(self, status: int, field: str, reason: str, kind: str = "request_rejected"):
        super().__init__(reason)
        self.status = status
        self.field = field
        self.reason = reason
        self.kind = kind


def parse_json(body: bytes | bytearray | str) -> Any:
    """The body's one JSON parse; duplicate object keys, nesting too deep for the parser, and
    integer literals too long to convert are refused (``BodyRejectedError``) in the same pass."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise BodyRejectedError(
            422,
            exc.key,
            f"duplicate key {exc.key!r} in a JSON object: each key may appear once "
            "(which copy would win is parser-dependent)",
        ) from None
    except RecursionError:
        raise BodyRejectedError(422, "body", "body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BodyRejectedError(
            422,
            "body",
            f"body is not valid JSON: {exc.msg} at character {exc.pos}",
            "json_invalid",
        ) from None
    except UnicodeDecodeError:
        raise BodyRejectedError(422, "body", "body is not valid JSON: not UTF-8 text") from None
    except ValueError as exc:  # e.g. an integer literal longer than 4300 digits
        raise BodyRejectedError(422, "body", f"body is not valid JSON: {exc}") from None


def parse_released(body: bytearray) -> Any:
    """``parse_json`` of ``body``, emptying ``body`` as soon as it is decoded to text (as
    ``json.loads`` decodes bytes), so the raw bytes and the parsed tree are never alive together
    (issue 14: the accepted maximum-size body's peak)."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        raise BodyRejectedError(422, "body", "body is not valid JSON: not UTF-8 text") from None
    finally:
        body.clear()
    return parse_json(text)


def is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


# The access rules a route may declare, and the path parameters each takes.
_RULES: dict[Callable[..., Any], tuple[str, ...]] = {
    deps.require_operator: (),
    deps.require_fleet_reader: (),
    deps.require_run_reader: ("run_id",),
    deps.require_run_writer: ("run_id",),
}


async def _check_access(request: Request, route: APIRoute) -> None:
    """Authenticate (401) and apply the route's declared access rule (403) before the body."""
    principal: Principal = await deps.get_principal(request)  # async: no thread-pool trip
    request.state.principal = principal
    for dependency in route.dependant.dependencies:
        takes = _RULES.get(dependency.call)  # type: ignore[arg-type]
        if takes is None:
            continue
        arguments: list[Any] = []
        for name in takes:
            try:
                arguments.append(int(request.path_params[name]))
            except (KeyError, ValueError):
                return  # an invalid path parameter: the route's validation answers (422)
        await dependency.call(*arguments, principal=principal)  # type: ignore[misc]


async def read_body(request: Request, max_bytes: int) -> bytearray:
    """The body, refused (413) as soon as it passes ``max_bytes``; held in one growing buffer."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return body


def _too_large(max_bytes: int) -> BodyRejectedError:
    return BodyRejectedError(
        413,
        "body",
        f"request body exceeds {max_bytes} bytes; send fewer steps per request "
        "(SHARPWATCH_MAX_BODY_BYTES sets the limit)",
    )


def problem_response(problem: BodyRejectedError) -> Response:
    content: dict[str, Any] = {"detail": problem.reason, "field": problem.field}
    if problem.status == 422:
        content = {
            "detail": f"{problem.field}: {problem.reason}",
            "field": problem.field,
            "errors": [{"field": problem.field, "reason": problem.reason, "type": problem.kind}],
        }
    return Response(
        json.dumps(content),
        status_code=problem.status,
        media_type="application/json",
        headers=_CLOSE if problem.status == 413 else None,
    )


class GuardedRoute(APIRoute):
    """An ``APIRoute`` that checks access, then reads and parses its body once (see module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        route = self

        async def guarded(request: Request) -> Response:
            try:
                await _check_access(request, route)
            except HTTPException as exc:
                exc.headers = {**(exc.headers or {}), **_CLOSE}
                raise
            max_bytes: int = request.app.state.settings.max_body_bytes
            try:
                body = await read_body(request, max_bytes)
                content_type = request.headers.get("content-type")
                if body and content_type and not is_json(content_type):
                    raise BodyRejectedError(
                        415,
                        "content-type",
                        f"Content-Type {content_type!r} is not accepted: send the body as JSON "
                        "with 'Content-Type: application/json'",
                    )
                if body and content_type:
                    # The bytes go once decoded; FastAPI validates the parsed value.
                    if len(body) > _PARSE_INLINE_BYTES:
                        parsed = await run_in_threadpool(parse_released, body)
                    else:
                        parsed = parse_released(body)
                    request._body = _RELEASED
                    request._json = parsed
                else:
                    request._body = bytes(body)
            except BodyRejectedError as problem:
                return problem_response(problem)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody to answer (a slow client was cut off)
            return await handler(request)

        return guarded
