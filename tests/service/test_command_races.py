"""Commands are state machines in the database (issue 14, failures 6 and 7): many concurrent
connections against a real uvicorn on SQLite and on PostgreSQL.

- concurrent, conflicting acks of one command: exactly one wins (200), every other gets 409,
  and the stored row and the run are exactly the winner's;
- the same ack sent concurrently: all 200, one transition;
- concurrent early_stops: exactly one is issued, the others 409, one outstanding;
- concurrent adjust_alphas: each replaces the previous, one outstanding at the end;
- deliveries racing acks never overwrite an ack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.db.engine import make_engine
from service.db.models import Command
from tests._servers import ServerThread
from tests.service._helpers import run_body

CONNECTIONS = 16


def _concurrently(calls: list[Callable[[httpx.Client], httpx.Response]]) -> list[httpx.Response]:
    """Each call on its own connection, released together."""
    barrier = threading.Barrier(len(calls))
    clients = [httpx.Client(timeout=60) for _ in calls]

    def run(index: int) -> httpx.Response:
        barrier.wait()
        return calls[index](clients[index])

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(run, range(len(calls))))
    finally:
        for client in clients:
            client.close()


def _commands(database_url: str, run_id: int) -> list[Command]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(  # type: ignore[return-value]
                select(Command).where(Command.run_id == run_id).order_by(Command.id)
            ).all()
    finally:
        engine.dispose()


@pytest.fixture
def run_url(server: ServerThread) -> str:
    run = httpx.post(f"{server.url}/api/v1/runs", json=run_body("races")).json()
    return f"{server.url}/api/v1/runs/{run['id']}"


def _issue(run_url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{run_url}/commands", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_conflicting_concurrent_acks_one_wins(run_url: str, database_url: str) -> None:
    command = _issue(run_url, {"kind": "adjust_alpha", "alpha": 1.7, "reason": "race"})
    ack_url = f"{run_url}/commands/{command['id']}/ack"
    acks = [
        {"status": "applied", "step": i} if i % 2 == 0 else {"status": "rejected", "step": i}
        for i in range(CONNECTIONS)
    ]
    responses = _concurrently(
        [lambda c, body=body: c.post(ack_url, json=body) for body in acks]  # type: ignore[misc]
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == CONNECTIONS - 1, statuses
    winner = acks[statuses.index(200)]
    stored = httpx.get(f"{run_url}/commands/history").json()["items"][0]
    assert (stored["status"], stored["applied_step"]) == (winner["status"], winner["step"])
    run = httpx.get(run_url).json()
    assert run["alpha"] == (1.7 if winner["status"] == "applied" else None)
    for loser in (r for r in responses if r.status_code == 409):
        assert loser.json()["field"] == "status"


def test_the_same_ack_sent_concurrently_is_idempotent(run_url: str) -> None:
    command = _issue(run_url, {"kind": "early_stop", "reason": "race"})
    ack_url = f"{run_url}/commands/{command['id']}/ack"
    responses = _concurrently(
        [lambda c: c.post(ack_url, json={"status": "applied", "step": 3})] * CONNECTIONS
    )
    assert [r.status_code for r in responses] == [200] * CONNECTIONS
    assert {r.json()["acked_at"] for r in responses} == {responses[0].json()["acked_at"]}
    assert httpx.get(run_url).json()["status"] == "stopped"


def test_concurrent_early_stops_issue_one(run_url: str, database_url: str) -> None:
    responses = _concurrently(
        [
            lambda c, i=i: c.post(  # type: ignore[misc]
                f"{run_url}/commands", json={"kind": "early_stop", "reason": f"stop {i}"}
            )
            for i in range(CONNECTIONS)
        ]
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == CONNECTIONS - 1, statuses
    run_id = int(run_url.rsplit("/", 1)[1])
    stops = [c for c in _commands(database_url, run_id) if c.kind == "early_stop"]
    assert len(stops) == 1
    assert stops[0].status == "pending"


def test_concurrent_adjust_alphas_leave_one_outstanding(run_url: str, database_url: str) -> None:
    responses = _concurrently(
        [
            lambda c, i=i: c.post(  # type: ignore[misc]
                f"{run_url}/commands",
                json={"kind": "adjust_alpha", "alpha": 1.0 + i / 100, "reason": f"a{i}"},
            )
            for i in range(CONNECTIONS)
        ]
    )
    assert [r.status_code for r in responses] == [201] * CONNECTIONS
    run_id = int(run_url.rsplit("/", 1)[1])
    rows = _commands(database_url, run_id)
    outstanding = [c for c in rows if c.status in ("pending", "delivered")]
    assert len(outstanding) == 1
    assert outstanding[0].id == max(c.id for c in rows)  # the newest replaced the others
    assert all(
        c.ack_detail == "superseded by a newer adjust_alpha"
        for c in rows
        if c is not outstanding[0]
    )
    polled = httpx.get(f"{run_url}/commands").json()
    assert [c["id"] for c in polled] == [outstanding[0].id]


def test_deliveries_never_overwrite_an_ack(run_url: str) -> None:
    for round_ in range(10):
        command = _issue(
            run_url, {"kind": "adjust_alpha", "alpha": 1.0 + round_ / 10, "reason": "d"}
        )
        ack_url = f"{run_url}/commands/{command['id']}/ack"
        calls: list[Callable[[httpx.Client], httpx.Response]] = [
            lambda c: c.get(f"{run_url}/commands")
        ] * (CONNECTIONS - 1)
        ack = {"status": "applied", "step": round_}
        calls.append(lambda c, url=ack_url, body=ack: c.post(url, json=body))  # type: ignore[misc]
        responses = _concurrently(calls)
        assert responses[-1].status_code == 200, responses[-1].text
        stored = httpx.get(f"{run_url}/commands/history").json()["items"][0]
        assert stored["id"] == command["id"]
        assert stored["status"] == "applied", (round_, stored)
