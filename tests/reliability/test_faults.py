"""Fault tests: a real trainer client keeps sending while the service, Redis or PostgreSQL is
killed and restarted; afterwards the stored steps equal the sent steps exactly (none lost, none
stored twice, content intact), and commands still reach the trainer through the database while
Redis is down.

Everything runs as real processes on ephemeral loopback ports: ``sharpwatch serve``, a private
``redis-server``, a private PostgreSQL cluster (never the machine's own servers).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.reliability._procs import (
    PostgresCluster,
    RedisProcess,
    ServiceProcess,
    stored_steps,
    wait_until,
)
from trainer_hooks import CommandPoller, SharpwatchClient

STEPS = 300
QUERIES = 8
GROUP = 8


def entropy(step: int) -> float:
    return 1.5 + (step % 10) / 100  # healthy: no detector stops the run on its own


def record(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": entropy(step), "success_rate": 0.4 + (step % 10) / 50},
        "queries": [
            {"query_id": f"q{i}", "group_size": GROUP, "successes": (step + i) % (GROUP + 1)}
            for i in range(QUERIES)
        ],
    }


def make_client(url: str, tmp_path: Path) -> SharpwatchClient:
    return SharpwatchClient(
        url,
        spool_dir=tmp_path / "spool",
        batch_size=16,
        max_queue=64,  # every record goes through the on-disk log; memory holds few
        flush_interval=0.01,
        max_backoff=0.5,
        timeout=5.0,
    )


def assert_exactly_once(url: str, database_url: str, run_id: int, client: SharpwatchClient) -> None:
    assert (client.dropped, client.rejected, client.pending) == (0, 0, 0)
    steps = stored_steps(url, run_id)
    assert [s["step"] for s in steps] == list(range(STEPS))
    for s in steps:
        assert s["n_queries"] == QUERIES
        assert s["metrics"]["entropy"] == pytest.approx(entropy(s["step"]))
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows, distinct = connection.execute(
                text("SELECT count(*), count(DISTINCT step) FROM steps WHERE run_id = :r"),
                {"r": run_id},
            ).one()
            query_rows = connection.execute(
                text("SELECT count(*) FROM query_stats WHERE run_id = :r"), {"r": run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert (rows, distinct, query_rows) == (STEPS, STEPS, STEPS * QUERIES)


def send_steps(
    client: SharpwatchClient, events: dict[int, Any], pace: float = 0.005, end: int = STEPS
) -> None:
    """Submit steps 0..end-1 at a trainer-like pace, running ``events[step]`` just before."""
    for step in range(end):
        if step in events:
            events[step]()
        client.submit(record(step))
        time.sleep(pace)


@pytest.mark.slow
def test_service_sigkill_and_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'sharpwatch.db'}"
    service = ServiceProcess(database_url, log_path=tmp_path / "service.log").start()
    client = make_client(service.url, tmp_path)
    try:
        run = client.register_run("sigkill", group_size=GROUP)
        # Two kill/restart cycles while the sender is busy: a kill can land mid-request, after
        # the commit and before the answer; the re-send must then be a duplicate, not a copy.
        send_steps(
            client,
            {
                60: service.kill,
                110: service.start,
                170: service.kill,
                230: service.start,
            },
        )
        assert client.flush(timeout=120), client.last_error
        assert_exactly_once(service.url, database_url, run.id, client)
    finally:
        client.close(timeout=5)
        service.stop()


class StopTarget:
    """Stands in for the Monitor: records an early_stop."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.reasons: list[str] = []
        self.last_step: int | None = None

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: Any = None) -> None:
        pass

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        self.reasons.append(reason)
        self.stopped.set()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_redis_outage_two_workers_steps_and_commands_still_flow(
    tmp_path: Path, postgres_database_url: str
) -> None:
    redis = RedisProcess(tmp_path).start()
    service = ServiceProcess(
        postgres_database_url,
        workers=2,
        redis_url=redis.url,
        log_path=tmp_path / "service.log",
        extra_env={"SHARPWATCH_COMMAND_POLL_MAX_WAIT": "2"},
    )
    client = make_client(service.url, tmp_path)
    poller: CommandPoller | None = None
    target = StopTarget()
    try:
        service.start()
        run = client.register_run("redis-outage", group_size=GROUP)
        poller = CommandPoller(service.url, run.id, target, wait=2.0, max_backoff=0.5).start()

        def redis_down() -> None:
            redis.stop()
            wait_until(
                "readyz to report redis down",
                lambda: httpx.get(f"{service.url}/readyz", timeout=5).status_code == 503,
                20,
            )

        def stop_while_redis_is_down() -> None:
            issued = httpx.post(
                f"{service.url}/api/v1/runs/{run.id}/commands",
                json={"kind": "early_stop", "reason": "issued while redis is down"},
                timeout=10,
            )
            assert issued.status_code == 201, issued.text
            # Delivered from the database: the long-poll's last look, on whichever worker.
            assert target.stopped.wait(20), poller.last_error if poller else None

        send_steps(
            client,
            {100: redis_down, 150: stop_while_redis_is_down, 200: redis.start},
        )
        assert client.flush(timeout=120), client.last_error
        assert target.reasons == ["issued while redis is down"]
        wait_until(
            "the stop to be acknowledged",
            lambda: (
                httpx.get(f"{service.url}/api/v1/runs/{run.id}/commands/history", timeout=5).json()[
                    "items"
                ][0]["status"]
                == "applied"
            ),
            20,
        )
        wait_until(
            "readyz after redis is back",
            lambda: httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200,
            30,
        )
        assert_exactly_once(service.url, postgres_database_url, run.id, client)
    finally:
        if poller is not None:
            poller.close(timeout=2)
        client.close(timeout=5)
        service.stop()
        redis.stop()


@pytest.mark.slow
def test_postgres_restart_503_while_down_then_everything_lands_once(tmp_path: Path) -> None:
    cluster = PostgresCluster()
    service: ServiceProcess | None = None
    client: SharpwatchClient | None = None
    try:
        cluster.init().start()
        service = ServiceProcess(cluster.url, log_path=tmp_path / "service.log").start()
        client = make_client(service.url, tmp_path)
        run = client.register_run("postgres-restart", group_size=GROUP)
        url = service.url
        probe_step = 150  # sent by hand during the outage; the client sends it later too
        outage: dict[str, Any] = {}

        def postgres_down() -> None:
            cluster.stop("fast")
            wait_until(
                "readyz 503", lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503
            )
            answer = httpx.post(
                f"{url}/api/v1/runs/{run.id}/steps",
                json={"steps": [record(probe_step)]},
                timeout=30,
            )
            outage["ingest"] = (answer.status_code, answer.json(), answer.headers)

        def while_down() -> None:
            assert client is not None
            outage["pending"] = client.pending
            outage["spooled"] = client.spooled

        def postgres_up() -> None:
            cluster.start()
            wait_until(
                "readyz 200",
                lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200,
                60,
            )

        send_steps(client, {100: postgres_down, 199: while_down, 200: postgres_up})
        status, body, headers = outage["ingest"]
        assert status == 503, body
        assert "nothing was stored" in body["detail"]
        assert headers.get("retry-after") == "1"
        assert outage["pending"] > 64  # the client held everything sent during the outage …
        # … all of it in the on-disk log (but the one submitted a moment ago, maybe)
        assert outage["spooled"] >= outage["pending"] - 1
        assert client.flush(timeout=120), client.last_error
        assert_exactly_once(url, cluster.url, run.id, client)
    finally:
        if client is not None:
            client.close(timeout=5)
        if service is not None:
            service.stop()
        cluster.destroy()
