"""Limits before parsing, in process: every route that takes a body checks access before it
reads a byte, and parses the body once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Message

from service import body_guard
from service.app import create_app
from service.body_guard import GuardedRoute, parse_json
from service.settings import Settings
from tests._routes import api_routes


def test_every_route_with_a_body_is_guarded(app: FastAPI) -> None:
    unguarded = [
        route.path
        for route in api_routes(app)
        if route.body_field is not None and not isinstance(route, GuardedRoute)
    ]
    assert not unguarded, f"use route_class=GuardedRoute for {unguarded}"


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, int]:
    """(status, body bytes the app pulled from the client)."""
    pulled = 0
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        if not chunks:
            return {"type": "http.disconnect"}
        chunk = chunks.pop(0)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return int(start["status"]), pulled


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_request_reads_no_body(database_url: str, anyio_backend: str) -> None:
    app = create_app(Settings(database_url=database_url, auth=True), registry=CollectorRegistry())
    body = b'{"steps": [' + b"{}," * 200_000 + b"{}]}"
    json_type = (b"content-type", b"application/json")
    async with app.router.lifespan_context(app):
        status, pulled = await _call(app, "/api/v1/runs/1/steps", [json_type], body)
        assert (status, pulled) == (401, 0)
        wrong = (b"authorization", b"Bearer swi_not-a-token-not-a-token")
        status, pulled = await _call(app, "/api/v1/runs/1/steps", [json_type, wrong], body)
        assert (status, pulled) == (401, 0)
        status, pulled = await _call(app, "/api/v1/nowhere", [json_type], body)
        assert (status, pulled) == (404, 0)


def test_one_parse_reports_duplicates_and_bad_json(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = json.loads

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(body_guard.json, "loads", counting)
    assert parse_json(b'{"a": {"b": 1, "c": [1, 2]}}') == {"a": {"b": 1, "c": [1, 2]}}
    assert len(calls) == 1
    with pytest.raises(body_guard.BodyRejectedError) as duplicate:
        parse_json(b'{"a": {"b": 1, "b": 2}}')
    assert (duplicate.value.status, duplicate.value.field) == (422, "b")
    with pytest.raises(body_guard.BodyRejectedError) as broken:
        parse_json(b'{"a": ')
    assert "at character 6" in broken.value.reason
