"""Bearer tokens: generation, hashing, the principal a request acts as, and what it may do.

Kinds (science-free, but part of the API):
- ``ingest`` — issued to a run when it registers: write that run's steps, read it, long-poll and
  acknowledge its commands, end it (status finished/failed/stopped).
- ``operator`` — register and manage runs, issue commands, read everything.
- ``read`` — read-only queries, dashboards and ``/metrics``.

Tokens are 256-bit random strings; the database holds only their SHA-256 (a slow password hash
buys nothing for random secrets of this length). A verified token is cached for a few seconds,
so a revocation takes effect within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["ingest", "operator", "read"]
CACHE_SECONDS = 5.0
_PREFIX = {"ingest": "swi_", "operator": "swo_", "read": "swr_"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. ``kind == "dev"`` when authentication is off (embedded default)."""

    kind: Literal["ingest", "operator", "read", "dev"]
    run_id: int | None = None
    token_id: int | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind in ("operator", "dev")

    def can_read_fleet(self) -> bool:
        return self.kind in ("operator", "read", "dev")

    def can_read_run(self, run_id: int) -> bool:
        return self.can_read_fleet() or (self.kind == "ingest" and self.run_id == run_id)

    def can_write_run(self, run_id: int) -> bool:
        return self.kind == "dev" or (self.kind == "ingest" and self.run_id == run_id)


DEV_PRINCIPAL = Principal(kind="dev")


def new_token(kind: TokenKind) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache:
    """hash → (principal, expiry); thread-safe, bounded."""

    def __init__(self, ttl: float = CACHE_SECONDS, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None or entry[1] < time.monotonic():
                return None
            return entry[0]

    def put(self, token_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[token_hash] = (principal, time.monotonic() + self._ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
