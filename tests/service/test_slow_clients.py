"""Header-size and slow-client limits (issue 14, failure 9): ``sharpwatch serve``'s protocol
(``service.serving.GuardedHttpProtocol``) on a real uvicorn, with a 1 s client timeout and an
8 KiB head limit. Every bound below is the timeout plus a stated margin."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.serving import GuardedHttpProtocol
from service.settings import Settings
from tests._servers import ServerThread
from tests.service._helpers import run_body, step_record

TIMEOUT = 1.0
HEAD_LIMIT = 8192
CLOSED_WITHIN = TIMEOUT + 1.0  # the timeout, the watchdog's 0.25 s tick, and slack


class _Fast(GuardedHttpProtocol):
    header_limit = HEAD_LIMIT
    client_timeout = TIMEOUT


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    url = f"sqlite:///{tmp_path / 'sw.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    with ServerThread(app, http=_Fast) as running:
        yield running


def _connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.settimeout(0.05)
    return sock


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _trickle(sock: socket.socket, pieces: Iterator[bytes], every: float, limit: float) -> float:
    """Send a piece every ``every`` seconds until the server closes; seconds until it did."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            sock.sendall(next(pieces))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        deadline = time.monotonic() + every
        while time.monotonic() < deadline:
            if _closed(sock):
                return time.monotonic() - start
    raise AssertionError(f"the connection was still open after {limit} s")


def _forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def test_trickled_headers_are_cut_off(server: ServerThread) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        took = _trickle(sock, _forever(b"X-Pad: a\r\n"), every=0.2, limit=10)
    assert took < CLOSED_WITHIN


def test_a_silent_connection_is_cut_off(server: ServerThread) -> None:
    with _connect(server) as sock:
        start = time.monotonic()
        while not _closed(sock):
            assert time.monotonic() - start < 10, "an idle connection was never closed"
    assert time.monotonic() - start < CLOSED_WITHIN


def test_a_trickled_body_is_cut_off(server: ServerThread) -> None:
    run = httpx.post(f"{server.url}/api/v1/runs", json=run_body("slow")).json()["id"]
    head = (
        f"POST /api/v1/runs/{run}/steps HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
    )
    with _connect(server) as sock:
        sock.sendall(head)
        took = _trickle(sock, _forever(b" "), every=0.1, limit=10)  # 10 B/s: under 1 KiB/s
    assert took < CLOSED_WITHIN
    with _connect(server) as paused:
        paused.sendall(head + b" " * 50_000)  # half the body at once, then nothing
        start = time.monotonic()
        while not _closed(paused):
            assert time.monotonic() - start < 10, "a stalled body was never cut off"
    assert time.monotonic() - start < CLOSED_WITHIN


def test_a_64_mib_header_is_refused_at_the_limit(server: ServerThread) -> None:
    sent = 0
    chunk = b"a" * 65536
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    # Refused long before 64 MiB: the limit plus what the kernels' socket buffers held.
    assert sent < 16 * 1024 * 1024, sent
    big = b"a" * (HEAD_LIMIT + 100)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as small:
        small.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + big + b"\r\n\r\n")
        answer = small.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"SHARPWATCH_HEADER_LIMIT_BYTES" in answer


def test_ordinary_clients_are_untouched(server: ServerThread) -> None:
    """A long-poll longer than the timeout, a keep-alive client pausing between requests, and a
    large body sent at an ordinary pace all complete."""
    url = server.url
    run = httpx.post(f"{url}/api/v1/runs", json=run_body("ok")).json()["id"]
    start = time.monotonic()
    polled = httpx.get(f"{url}/api/v1/runs/{run}/commands", params={"wait": 2.5}, timeout=10)
    assert polled.status_code == 200
    assert time.monotonic() - start >= 2.4
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(0.5)
        assert client.get("/healthz").status_code == 200
    body = httpx.Request(
        "POST", f"{url}/api/v1/runs/{run}/steps", json={"steps": [step_record(0, 3000)]}
    ).content
    assert len(body) > 300_000

    def paced() -> Iterator[bytes]:
        for offset in range(0, len(body), 65536):
            time.sleep(0.05)
            yield body[offset : offset + 65536]

    sent = httpx.post(
        f"{url}/api/v1/runs/{run}/steps",
        content=paced(),
        headers={"content-type": "application/json", "content-length": str(len(body))},
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == [0]
