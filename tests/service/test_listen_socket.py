"""The socket ``sharpwatch serve`` listens on: connections it accepts have TCP_NODELAY, so a
response's writes are not held for the client's delayed ACK (uvicorn, handed the fd, treats it
as a Unix socket and sets nothing; it cost 40 ms a request)."""

from __future__ import annotations

import socket

from service.preflight import bind_socket
from service.settings import Settings


def test_accepted_connections_have_nodelay() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    listener = bind_socket(Settings(host="127.0.0.1", port=free))
    try:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
