"""Issue 14, nothing lost: a token the service stops accepting (revoked, rotated) keeps every step
in the write-ahead log, asks the service once per ``auth_retry_interval``, says what to do, and
sends everything exactly once when access comes back. A real uvicorn with authentication on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.settings import Settings
from service.storage import tokens as token_store
from tests._servers import ServerThread
from trainer_hooks import SharpwatchClient

AUTH_FAILURES_METRIC = "client_auth_failures"  # the metric the client adds to the next step


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the answers by status (how hard the client knocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith("/steps"):
            self.statuses.append(response.status_code)
        return response


@dataclass
class AuthService:
    url: str
    app: FastAPI
    sessions: sessionmaker[Session]
    operator: str

    def revoke_ingest_tokens(self, run_id: int) -> None:
        with self.sessions() as session:
            assert token_store.revoke_ingest_tokens(session, run_id) == 1
            session.commit()
        self.app.state.token_cache.clear()  # as if the cache's few seconds had passed

    def new_ingest_token(self, run_id: int) -> str:
        with self.sessions() as session:
            _, token = token_store.issue(session, "ingest", "replacement", run_id)
        return token

    def stored(self, run_id: int) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.url}/api/v1/runs/{run_id}/steps",
            params={"limit": 10000, "metrics": f"entropy,{AUTH_FAILURES_METRIC}"},
            headers={"authorization": f"Bearer {self.operator}"},
        )
        answer.raise_for_status()
        items: list[dict[str, Any]] = answer.json()["items"]
        return items


@pytest.fixture
def service(database_url: str, engine: Engine) -> Iterator[AuthService]:
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions() as session:
        _, operator = token_store.issue(session, "operator", "trainer launcher")
    app = create_app(Settings(database_url=database_url, auth=True), registry=CollectorRegistry())
    with ServerThread(app) as server:
        yield AuthService(server.url, app, sessions, operator)


def _record(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": 1.0 / (step + 1)},
        "queries": [{"query_id": "q", "group_size": 4, "successes": step % 5}],
    }


def _steps(stored: list[dict[str, Any]]) -> list[int]:
    return [s["step"] for s in stored]


@pytest.mark.parametrize("comeback", ["new ingest token", "operator token", "restarted trainer"])
def test_revoked_token_keeps_every_step_until_access_returns(
    service: AuthService, tmp_path: Path, comeback: str
) -> None:
    spool = tmp_path / "spool"
    transport = CountingTransport()
    client = SharpwatchClient(
        service.url,
        token=service.operator,
        transport=transport,
        spool_dir=spool,
        flush_interval=0.005,
        max_backoff=0.05,
        auth_retry_interval=60.0,
    )
    run = client.register_run("revoked", group_size=4)
    for step in range(5):
        client.submit(_record(step))
    assert client.flush(timeout=20)

    service.revoke_ingest_tokens(run.id)
    for step in range(5, 10):
        client.submit(_record(step))
    assert not client.flush(timeout=1.5)
    # Kept, not dropped; the reason names the token, the run and the way out.
    assert client.spooled == 5
    assert client.rejected == 0
    reason = client.flush_error or ""
    for words in ("ingest token", "HTTP 401", f"run {run.id}", "nothing is lost", "set_token"):
        assert words in reason, (words, reason)
    assert "SHARPWATCH_TOKEN" in reason, reason
    assert _steps(service.stored(run.id)) == list(range(5))
    # No hammering: one refused attempt, the next one a minute later (new records don't wake it).
    client.submit(_record(10))
    assert not client.flush(timeout=0.5)
    assert transport.statuses.count(401) == 1, transport.statuses
    assert client.auth_failures == 1

    if comeback == "restarted trainer":
        client.close(timeout=0.5)
        client = SharpwatchClient(service.url, token=service.operator, spool_dir=spool)
        assert client.register_run("revoked", group_size=4).id == run.id
    elif comeback == "operator token":
        client.set_token(service.operator)  # registers the run again: a new ingest token
    else:
        client.set_token(service.new_ingest_token(run.id))
    client.submit(_record(11))
    assert client.flush(timeout=20), client.flush_error
    stored = service.stored(run.id)
    assert _steps(stored) == list(range(12))  # each once, none lost
    # The step submitted after the refusal says so in the client's metrics.
    assert stored[10]["metrics"][AUTH_FAILURES_METRIC] == 1.0
    assert stored[9]["metrics"].get(AUTH_FAILURES_METRIC) is None
    assert client.pending == 0
    client.close()
