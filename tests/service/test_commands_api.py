"""Commands: lifecycle, idempotent acks, supersession, expiry, and long-poll wake-ups in one
process and across two workers through Redis."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests._servers import ServerThread
from tests.service._helpers import run_body


@pytest.fixture
def run_id(client: TestClient) -> int:
    return int(client.post("/api/v1/runs", json=run_body()).json()["id"])


def test_early_stop_lifecycle_and_idempotent_ack(client: TestClient, run_id: int) -> None:
    created = client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "early_stop", "reason": "entropy gone", "best_step": 40},
    )
    assert created.status_code == 201, created.text
    command = created.json()
    assert (command["status"], command["source"], command["best_step"]) == (
        "pending",
        "operator",
        40,
    )
    second = client.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": "again"}
    )
    assert second.status_code == 409

    polled = client.get(f"/api/v1/runs/{run_id}/commands").json()
    assert [(c["id"], c["status"]) for c in polled] == [(command["id"], "delivered")]
    # Delivered but not acknowledged: a resumed trainer gets it again.
    assert [c["id"] for c in client.get(f"/api/v1/runs/{run_id}/commands").json()] == [
        command["id"]
    ]

    ack_path = f"/api/v1/runs/{run_id}/commands/{command['id']}/ack"
    ack = client.post(ack_path, json={"status": "applied", "step": 57})
    assert ack.status_code == 200
    assert (ack.json()["status"], ack.json()["applied_step"]) == ("applied", 57)
    assert client.post(ack_path, json={"status": "applied", "step": 57}).json() == ack.json()
    changed = client.post(ack_path, json={"status": "rejected"})
    assert changed.status_code == 409
    assert "already acknowledged as applied" in changed.json()["detail"]

    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert (run["status"], run["verdict"], run["stop_reason"]) == (
        "stopped",
        "stopped",
        "entropy gone",
    )
    assert client.get(f"/api/v1/runs/{run_id}/commands").json() == []


def test_adjust_alpha_supersedes_and_ack_sets_alpha(client: TestClient, run_id: int) -> None:
    path = f"/api/v1/runs/{run_id}/commands"
    first = client.post(path, json={"kind": "adjust_alpha", "alpha": 1.25, "reason": "r1"}).json()
    second = client.post(path, json={"kind": "adjust_alpha", "alpha": 1.5, "reason": "r2"}).json()
    outstanding = client.get(path).json()
    assert [c["id"] for c in outstanding] == [second["id"]]
    history = client.get(f"{path}/history").json()["items"]
    assert {c["id"]: c["status"] for c in history} == {
        first["id"]: "expired",
        second["id"]: "delivered",
    }
    stale = client.post(f"{path}/{first['id']}/ack", json={"status": "applied", "step": 3})
    assert stale.status_code == 409
    client.post(f"{path}/{second['id']}/ack", json={"status": "applied", "step": 12})
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha"] == 1.5


def test_undelivered_command_expires(client: TestClient, run_id: int) -> None:
    path = f"/api/v1/runs/{run_id}/commands"
    client.post(
        path, json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "x", "expires_in": 0.05}
    )
    time.sleep(0.1)
    assert client.get(path).json() == []
    assert client.get(f"{path}/history").json()["items"][0]["status"] == "expired"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"kind": "adjust_alpha", "reason": "x"}, "", "alpha is required"),
        ({"kind": "adjust_alpha", "alpha": 11, "reason": "x"}, "alpha", "less than or equal"),
        ({"kind": "reboot", "reason": "x"}, "kind", "early_stop"),
        ({"kind": "early_stop", "reason": ""}, "reason", "at least 1 character"),
        ({"kind": "early_stop", "reason": "x", "alpha": 1.0}, "", "only for adjust_alpha"),
    ],
)
def test_bad_commands_are_422_and_store_nothing(
    client: TestClient, run_id: int, body: dict[str, Any], field: str, reason: str
) -> None:
    response = client.post(f"/api/v1/runs/{run_id}/commands", json=body)
    assert response.status_code == 422
    assert any(
        (e["field"] == field or (not field and e["field"] == "body")) and reason in e["reason"]
        for e in response.json()["errors"]
    ), response.json()
    assert client.get(f"/api/v1/runs/{run_id}/commands/history").json()["items"] == []


def test_ack_errors(client: TestClient, run_id: int) -> None:
    missing = client.post(
        f"/api/v1/runs/{run_id}/commands/999/ack", json={"status": "applied", "step": 1}
    )
    assert missing.status_code == 404
    command = client.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": "x"}
    ).json()
    no_step = client.post(
        f"/api/v1/runs/{run_id}/commands/{command['id']}/ack", json={"status": "applied"}
    )
    assert no_step.status_code == 422
    assert no_step.json()["field"] == "step"


def test_commands_refused_for_finished_runs(client: TestClient, run_id: int) -> None:
    assert client.patch(f"/api/v1/runs/{run_id}", json={"status": "finished"}).json()["finished_at"]
    refused = client.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": "x"}
    )
    assert refused.status_code == 409


def _long_poll(url: str, run_id: int, wait: float, out: dict[str, Any]) -> None:
    start = time.perf_counter()
    response = httpx.get(f"{url}/api/v1/runs/{run_id}/commands", params={"wait": wait}, timeout=60)
    out["elapsed"] = time.perf_counter() - start
    out["commands"] = response.json()


def _wake_test(poll_url: str, issue_url: str) -> dict[str, Any]:
    run_id = httpx.post(f"{issue_url}/api/v1/runs", json=run_body("poll")).json()["id"]
    out: dict[str, Any] = {}
    poller = threading.Thread(target=_long_poll, args=(poll_url, run_id, 20.0, out))
    poller.start()
    time.sleep(0.5)  # the poll is now waiting
    httpx.post(
        f"{issue_url}/api/v1/runs/{run_id}/commands",
        json={"kind": "adjust_alpha", "alpha": 1.5, "reason": "test"},
    )
    poller.join(timeout=30)
    return out


def test_long_poll_wakes_on_command_in_process(server: ServerThread) -> None:
    out = _wake_test(server.url, server.url)
    assert [c["alpha"] for c in out["commands"]] == [1.5]
    assert out["elapsed"] < 10  # woken by the broker, not by the 20 s wait running out


def test_long_poll_times_out_empty(server: ServerThread) -> None:
    run_id = httpx.post(f"{server.url}/api/v1/runs", json=run_body("idle")).json()["id"]
    out: dict[str, Any] = {}
    _long_poll(server.url, run_id, 0.3, out)
    assert out["commands"] == []
    assert out["elapsed"] >= 0.3


@pytest.mark.postgres
@pytest.mark.redis
def test_long_poll_wakes_across_workers_through_redis(
    postgres_database_url: str, redis_url: str
) -> None:
    settings = Settings(database_url=postgres_database_url, redis_url=redis_url, workers=2)
    worker_a = create_app(settings, registry=CollectorRegistry())
    worker_b = create_app(settings, registry=CollectorRegistry())
    with ServerThread(worker_a) as a, ServerThread(worker_b) as b:
        out = _wake_test(a.url, b.url)
    assert [c["alpha"] for c in out["commands"]] == [1.5]
    assert out["elapsed"] < 10


def test_a_late_step_record_does_not_undo_an_acknowledged_alpha(client: TestClient) -> None:
    """The trainer acks an adjust_alpha applied at step 3 before its sender has delivered steps
    0..2 (the write-ahead log sends them a moment later): those older records, reporting the old
    α, must not put α back."""
    from tests.service._helpers import run_body, step_record

    run_id = client.post("/api/v1/runs", json=run_body("late-steps")).json()["id"]
    command = client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "adjust_alpha", "alpha": 1.75, "reason": "operator"},
    ).json()
    assert [c["id"] for c in client.get(f"/api/v1/runs/{run_id}/commands").json()] == [
        command["id"]
    ]
    ack = client.post(
        f"/api/v1/runs/{run_id}/commands/{command['id']}/ack",
        json={"status": "applied", "step": 3},
    )
    assert ack.status_code == 200, ack.text
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha"] == 1.75
    late = [step_record(s, alpha=1.0) for s in range(3)]
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": late}).status_code == 200
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha"] == 1.75
    newer = [step_record(s, alpha=1.75) for s in (3, 4)]
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": newer}).status_code == 200
    assert client.get(f"/api/v1/runs/{run_id}").json()["alpha"] == 1.75
