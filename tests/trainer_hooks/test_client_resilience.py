"""The client through outages: spill to the spool, replay in order, survive a restart, drop only
what the service refuses for good. Real uvicorn servers, stopped and restarted on one port."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests._servers import ServerThread
from trainer_hooks import SharpwatchClient


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(database_url: str, port: int) -> ServerThread:
    app = create_app(Settings(database_url=database_url), registry=CollectorRegistry())
    return ServerThread(app, port=port)


def _record(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": 1.0 / (step + 1)},
        "queries": [{"query_id": "q", "group_size": 4, "successes": step % 5}],
    }


def _stored_steps(url: str, run_id: int) -> list[int]:
    body = httpx.get(f"{url}/api/v1/runs/{run_id}/steps", params={"limit": 10000}).json()
    return [s["step"] for s in body["items"]]


def test_outage_spills_to_spool_and_replays_in_order(database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    client = SharpwatchClient(
        f"http://127.0.0.1:{port}",
        max_queue=20,
        batch_size=8,
        flush_interval=0.005,
        max_backoff=0.2,
        spool_dir=tmp_path / "spool",
    )
    with _server(database_url, port) as server:
        run = client.register_run("outage", group_size=4)
        for step in range(30):
            client.submit(_record(step))
        assert client.flush(timeout=20)
    # Service down: the loop keeps submitting; memory overflows into the spool.
    for step in range(30, 230):
        client.submit(_record(step))
    assert not client.flush(timeout=1.0)
    assert client.spooled > 0
    with _server(database_url, port) as server:
        for step in range(230, 260):
            client.submit(_record(step))
        assert client.flush(timeout=60)
        assert _stored_steps(server.url, run.id) == list(range(260))
        assert client.spooled == 0
    client.close(timeout=1)
    # Once drained the log is gone; only its offset file stays, remembering the last step.
    (left,) = (tmp_path / "spool").iterdir()
    assert left.suffix == ".offset"
    assert json.loads(left.read_text()) == {"offset": 0, "last_step": 259}


def test_spool_survives_a_trainer_restart(database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _server(database_url, port):
        first = SharpwatchClient(url, spool_dir=tmp_path / "spool", max_backoff=0.2)
        run = first.register_run("restart", group_size=4)
    for step in range(50):
        first.submit(_record(step))
    first.close(timeout=0.5)  # service still down: unsent records go to disk
    assert any(p.suffix == ".jsonl" for p in (tmp_path / "spool").iterdir())

    with _server(database_url, port) as server:
        second = SharpwatchClient(url, spool_dir=tmp_path / "spool", flush_interval=0.005)
        resumed = second.register_run("restart", group_size=4)
        assert resumed.id == run.id
        assert not resumed.created
        for step in range(50, 60):
            second.submit(_record(step))
        assert second.flush(timeout=30)
        assert _stored_steps(server.url, run.id) == list(range(60))
        second.close()


def test_registration_waits_for_the_service(database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    client = SharpwatchClient(
        f"http://127.0.0.1:{port}",
        spool_dir=tmp_path / "spool",
        max_backoff=0.2,
        flush_interval=0.005,
    )
    registered: list[int] = []
    assert (
        client.open_run("late", group_size=4, on_registered=lambda r: registered.append(r.id))
        is None
    )
    for step in range(10):
        client.submit(_record(step))
    with _server(database_url, port) as server:
        assert client.flush(timeout=30)
        assert client.run is not None
        assert registered == [client.run.id]
        assert _stored_steps(server.url, client.run.id) == list(range(10))
    client.close(timeout=0.5)


def test_refused_records_are_dropped_alone(database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    with _server(database_url, port) as server:
        client = SharpwatchClient(
            server.url, spool_dir=tmp_path / "spool", batch_size=10, flush_interval=0.2
        )
        run = client.register_run("refusals", group_size=4)
        client.submit(_record(0))
        assert client.flush(timeout=10)
        changed = _record(0) | {"metrics": {"entropy": 0.123}}  # a conflicting re-send (409)
        invalid = _record(2) | {"queries": [{"query_id": "q", "group_size": 4, "successes": 9}]}
        for record in (_record(1), changed, invalid, _record(3)):
            client.submit(record)
        assert client.flush(timeout=10)
        assert _stored_steps(server.url, run.id) == [0, 1, 3]
        assert client.rejected == 2
        client.close()


@pytest.mark.parametrize("bad", [{"spool_warn_records": 0}, {"max_backoff": 0}])
def test_resilience_arguments_are_validated(bad: dict[str, Any]) -> None:
    from trainer_hooks import ConfigurationError

    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        SharpwatchClient("http://127.0.0.1:1", **bad)
