"""A real HTTP receiver on 127.0.0.1 in a thread, for notification tests: it records every
request, and can fail the first N requests or hang on each."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    # A listen backlog above http.server's 5: the worker opens up to 20 connections at once.
    request_queue_size = 64
    daemon_threads = True


class Receiver:
    def __init__(self, *, fail_first: int = 0, hang: float = 0.0, delay: float = 0.0) -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.delay = delay
        self.requests: list[Received] = []
        self.failures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if receiver.hang:
                    time.sleep(receiver.hang)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    failing = receiver.failures < receiver.fail_first
                    if failing:
                        receiver.failures += 1
                    else:
                        receiver.requests.append(
                            Received(
                                self.path, {k.lower(): v for k, v in self.headers.items()}, body
                            )
                        )
                try:
                    self.send_response(500 if failing else 200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (its timeout): that is the point of a hang

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook/s3cr3t-path-token"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
