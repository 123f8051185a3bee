"""Delivery of the outbox to a real HTTP receiver on 127.0.0.1 by the service's worker, with
real uvicorn servers on SQLite and PostgreSQL (issue 20)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.notifications.events import alert_event
from service.settings import Settings
from service.storage import outbox
from tests._servers import ServerThread
from tests.service._helpers import run_body
from tests.service._receiver import Receiver

SECRET = "a-signing-secret-of-32-characters"
FAST = {
    "notify_poll_interval": 0.05,
    "notify_backoff_base": 0.2,
    "notify_backoff_max": 1.0,
    "notify_timeout": 2.0,
}


@contextmanager
def serving(database_url: str, **settings: Any) -> Iterator[httpx.Client]:
    app = create_app(
        Settings(database_url=database_url, **{**FAST, **settings}), registry=CollectorRegistry()
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def subscribe_webhook(client: httpx.Client, url: str, name: str = "hook") -> int:
    channel = client.post(
        "/api/v1/notifications/channels",
        json={"name": name, "kind": "webhook", "url": url, "signing_secret": SECRET},
    )
    assert channel.status_code == 201, channel.text
    channel_id = int(channel.json()["id"])
    response = client.post("/api/v1/notifications/subscriptions", json={"channel_id": channel_id})
    assert response.status_code == 201, response.text
    return channel_id


def non_finite_step(client: httpx.Client, run_id: int, step: int) -> None:
    record = {"step": step, "metrics": {"entropy": 0.5, "loss": None}, "non_finite": ["loss"]}
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]})
    assert response.status_code == 200, response.text


def deliveries(client: httpx.Client, **query: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/notifications/deliveries", params={"limit": 1000, **query})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def all_sent(client: httpx.Client, expected: int) -> bool:
    rows = deliveries(client)
    return len(rows) == expected and all(r["status"] == "sent" for r in rows)


def test_every_event_reaches_a_healthy_receiver_once_signed(database_url: str) -> None:
    with Receiver() as receiver, serving(database_url) as client:
        subscribe_webhook(client, receiver.url)
        run_id = client.post("/api/v1/runs", json=run_body("nan")).json()["id"]
        non_finite_step(client, run_id, 0)  # alert_opened + stop_issued
        stop = client.get(f"/api/v1/runs/{run_id}/commands").json()[0]
        ack = client.post(
            f"/api/v1/runs/{run_id}/commands/{stop['id']}/ack",
            json={"status": "applied", "step": 0},
        )
        assert ack.status_code == 200
        wait_for(lambda: all_sent(client, 3))
        time.sleep(0.5)  # a second send would land here
        rows = deliveries(client)
    got = receiver.received()
    keys = [r.headers["idempotency-key"] for r in got]
    assert sorted(keys) == sorted(str(r["id"]) for r in rows)  # each exactly once
    assert Counter(r.json()["event"] for r in got) == Counter(
        {"alert_opened": 1, "stop_issued": 1, "command_applied": 1}
    )
    for request in got:
        timestamp = request.headers["x-sharpwatch-timestamp"]
        expected = hmac.new(
            SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
        ).hexdigest()
        assert request.headers["x-sharpwatch-signature"] == f"sha256={expected}"
        assert abs(int(timestamp) - time.time()) < 120
        assert request.path == "/hook/s3cr3t-path-token"
    opened = next(r.json() for r in got if r.json()["event"] == "alert_opened")
    assert opened["rule"] == "non_finite"
    assert opened["severity"] == "critical"
    assert opened["step"] == 0
    assert opened["run"]["name"] == "nan"
    assert opened["url"] == f"http://127.0.0.1:8000/#/runs/{run_id}"
    assert opened["action"]


def test_a_receiver_failing_three_times_gets_it_across_a_restart(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Receiver(fail_first=3) as receiver:
        with serving(database_url) as client:
            subscribe_webhook(client, receiver.url)
            run_id = client.post("/api/v1/runs", json=run_body("nan")).json()["id"]
            client.post(
                f"/api/v1/runs/{run_id}/commands",
                json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "first"},
            )
            client.post(
                f"/api/v1/runs/{run_id}/commands",
                json={"kind": "adjust_alpha", "alpha": 0.4, "reason": "second"},
            )  # the first expires: one event
            wait_for(lambda: receiver.failures >= 2)
        assert receiver.received() == []
        with serving(database_url) as client:  # a new service on the same database
            wait_for(lambda: all_sent(client, 1))
            (row,) = deliveries(client)
    assert row["attempts"] == 4
    assert receiver.failures == 3
    assert [r.headers["idempotency-key"] for r in receiver.received()] == [str(row["id"])]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "notification failed" in logged
    assert "s3cr3t-path-token" not in logged
    assert SECRET not in logged


def test_dead_letter_after_max_attempts(database_url: str) -> None:
    with (
        Receiver(fail_first=100) as receiver,
        serving(database_url, notify_max_attempts=3, notify_backoff_base=0.05) as client,
    ):
        subscribe_webhook(client, receiver.url)
        run_id = client.post("/api/v1/runs", json=run_body("nan")).json()["id"]
        non_finite_step(client, run_id, 0)
        wait_for(lambda: len(deliveries(client, status="dead")) == 2)
        dead = deliveries(client, status="dead")
        assert {r["attempts"] for r in dead} == {3}
        assert {r["last_error"] for r in dead} == {"HTTP 500"}
        assert receiver.failures == 6
        receiver.fail_first = 0
        retried = client.post(f"/api/v1/notifications/deliveries/{dead[0]['id']}/retry")
        assert retried.status_code == 200
        wait_for(lambda: len(receiver.received()) == 1)
        again = client.post(f"/api/v1/notifications/deliveries/{dead[0]['id']}/retry")
        assert again.status_code == 409


def _seed_outbox(database_url: str, channel_id: int, run_id: int, count: int) -> None:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        for step in range(count):
            event = alert_event(
                "alert_opened",
                run_id,
                rule="entropy_floor",
                severity="warning",
                step=step,
                observed={"entropy": 0.01},
                thresholds={"entropy": 0.05},
                message="m",
                action="a",
                best_step=None,
            )
            assert outbox.enqueue(session, event) == 1
        session.commit()
    engine.dispose()


def test_two_workers_never_send_twice(database_url: str) -> None:
    with (
        Receiver(delay=0.02) as receiver,
        serving(database_url) as first,
        serving(database_url) as second,
    ):
        channel_id = subscribe_webhook(first, receiver.url)
        run_id = first.post("/api/v1/runs", json=run_body("many")).json()["id"]
        _seed_outbox(database_url, channel_id, run_id, 60)
        wait_for(lambda: all_sent(second, 60), timeout=60)
        time.sleep(0.5)
    keys = Counter(r.headers["idempotency-key"] for r in receiver.received())
    assert len(keys) == 60
    assert max(keys.values()) == 1


def _ingest_seconds(client: httpx.Client, run_id: int, steps: range) -> list[float]:
    times = []
    for step in steps:
        record = {"step": step, "metrics": {"entropy": 0.5, "success_rate": 0.4}}
        start = time.perf_counter()
        response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]})
        times.append(time.perf_counter() - start)
        assert response.status_code == 200
    return times


def test_ingest_latency_is_unchanged_while_a_receiver_hangs(database_url: str) -> None:
    with Receiver(hang=30) as hanging, serving(database_url, notify_timeout=5.0) as client:
        channel_id = subscribe_webhook(client, hanging.url)
        run_id = client.post("/api/v1/runs", json=run_body("busy")).json()["id"]
        baseline = _ingest_seconds(client, run_id, range(0, 30))
        _seed_outbox(database_url, channel_id, run_id, 20)
        wait_for(lambda: any(r["attempts"] > 0 for r in deliveries(client)))
        during = _ingest_seconds(client, run_id, range(30, 60))
        assert all(r["status"] == "pending" for r in deliveries(client))  # still hanging
    # A worker that blocked ingest would add its 5 s timeout; allow the loaded machine noise.
    assert statistics.median(during) < 3 * statistics.median(baseline) + 0.1
    assert max(during) < 2.5


def test_a_hanging_receiver_delays_no_other_channel(database_url: str) -> None:
    with (
        Receiver(hang=30) as hanging,
        Receiver() as healthy,
        serving(database_url, notify_timeout=5.0) as client,
    ):
        subscribe_webhook(client, hanging.url, "hanging")
        subscribe_webhook(client, healthy.url, "healthy")
        run_id = client.post("/api/v1/runs", json=run_body("nan")).json()["id"]
        non_finite_step(client, run_id, 0)
        wait_for(lambda: len(healthy.received()) == 2)  # the hanging pair is in flight now
        stop = client.get(f"/api/v1/runs/{run_id}/commands").json()[0]
        start = time.monotonic()
        client.post(
            f"/api/v1/runs/{run_id}/commands/{stop['id']}/ack",
            json={"status": "applied", "step": 0},
        )
        wait_for(lambda: len(healthy.received()) == 3)
        elapsed = time.monotonic() - start
        assert hanging.received() == []  # still hanging
    assert elapsed < 3.0  # not behind the hanging requests' 5 s timeout
    assert healthy.received()[-1].json()["event"] == "command_applied"
