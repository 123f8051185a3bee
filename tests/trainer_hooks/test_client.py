"""The sender against a real uvicorn server: non-blocking, ordered, retrying, never raising."""

from __future__ import annotations

import math
import socket
import time

import httpx
import pytest

from tests._servers import ServerThread
from trainer_hooks import ConfigurationError, ServiceError, SharpwatchClient, sanitize_record


def _record(step: int) -> dict[str, object]:
    return {
        "step": step,
        "metrics": {"entropy": 0.5, "success_rate": 0.25},
        "queries": [{"query_id": "q0", "group_size": 4, "successes": step % 5}],
    }


def test_register_submit_flush(server: ServerThread) -> None:
    with SharpwatchClient(server.url, flush_interval=0.01) as client:
        run = client.register_run("client-test", group_size=4, project="p")
        assert run.created
        for step in range(50):
            client.submit(_record(step))
        assert client.flush(timeout=20)
        assert client.sent == 50
        again = SharpwatchClient(server.url).register_run("client-test", group_size=4, project="p")
        assert again.id == run.id
        assert not again.created
    steps = httpx.get(f"{server.url}/api/v1/runs/{run.id}/steps").json()["items"]
    assert [s["step"] for s in steps] == list(range(50))


def test_non_finite_values_become_null_and_are_named() -> None:
    clean = sanitize_record({"step": 1, "metrics": {"entropy": math.nan, "loss": math.inf, "a": 1}})
    assert clean["metrics"] == {"entropy": None, "loss": None, "a": 1.0}
    assert clean["non_finite"] == ["entropy", "loss"]


def test_submit_never_blocks_or_raises_while_service_is_down(server: ServerThread) -> None:
    client = SharpwatchClient(server.url, flush_interval=0.01, max_backoff=0.2)
    run = client.register_run("down-test", group_size=4)
    server.server.should_exit = True
    server.thread.join(timeout=10)
    start = time.perf_counter()
    for step in range(200):
        client.submit(_record(step))
    assert time.perf_counter() - start < 1.0  # submit is an append, whatever the network does
    assert not client.flush(timeout=0.5)
    assert client.pending == 200
    assert client.last_error is not None
    client.close(timeout=0.5)
    assert run.id >= 1


def test_queue_bound_drops_oldest_with_count() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SharpwatchClient(f"http://127.0.0.1:{port}", max_queue=10)
    for step in range(25):
        client.submit(_record(step))
    assert client.pending == 10
    assert client.dropped == 15
    client.close(timeout=0.1)


def test_register_against_nothing_raises_service_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="cannot reach sharpwatch"):
        SharpwatchClient(f"http://127.0.0.1:{port}").register_run("x", group_size=2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"base_url": "localhost:8000"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"max_queue": 0}, "max_queue"),
        ({"batch_size": 5000}, "batch_size"),
        ({"flush_interval": -1}, "flush_interval"),
    ],
)
def test_constructor_names_the_bad_argument(kwargs: dict[str, object], name: str) -> None:
    arguments: dict[str, object] = {"base_url": "http://localhost:1"} | kwargs
    with pytest.raises(ConfigurationError, match=name):
        SharpwatchClient(**arguments)  # type: ignore[arg-type]
