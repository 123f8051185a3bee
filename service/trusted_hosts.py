"""The Host allow-list: a request whose ``Host`` header names another host gets 400 before
anything else runs, so a DNS-rebinding page (a hostile name that resolves to 127.0.0.1) cannot
read or stop runs through a user's browser. Health probes are exempt (they reveal nothing and
orchestrators probe by address)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

_EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})


def host_name(header: str) -> str:
    """The host part of a ``Host`` header, lower-case, without port or trailing dot
    (``[::1]:8000`` → ``::1``)."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name = value[1:end] if end > 0 else value
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value
    return name.rstrip(".")


class HostPolicy:
    """Exact names, ``*.domain`` suffixes, or ``*`` for any host."""

    def __init__(self, allowed: Iterable[str]) -> None:
        names = [name.strip().lower().rstrip(".") for name in allowed]
        self.any = "*" in names
        self.exact = frozenset(name for name in names if not name.startswith("*."))
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))

    def allows(self, host: str) -> bool:
        if self.any or host in self.exact:
            return True
        return any(host.endswith(suffix) and len(host) > len(suffix) for suffix in self.suffixes)


class TrustedHosts:
    """ASGI middleware: 400 naming the ``host`` header unless the policy allows it."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.policy = HostPolicy(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.policy.any:
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                header = value.decode("latin-1")
                break
        host = host_name(header)
        if self.policy.allows(host) or scope.get("path") in _EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        reason = (
            f"Host {header!r} is not one this service answers to; add it to "
            "SHARPWATCH_TRUSTED_HOSTS (comma-separated) if clients reach the service by that name"
            if header
            else "a Host header is required"
        )
        body = json.dumps({"detail": reason, "field": "host"}).encode()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
