"""Test infrastructure: scratch databases on real servers, and a real uvicorn in a thread."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Connection, create_engine, make_url, text

REQUIRE_SERVICES = os.environ.get("SHARPWATCH_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("SHARPWATCH_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("SHARPWATCH_TEST_REDIS_URL")


def unavailable(what: str, why: str) -> None:
    """Skip, or fail when CI demands the real servers (SHARPWATCH_REQUIRE_SERVICES=1)."""
    message = f"{what} unavailable: {why}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (SHARPWATCH_REQUIRE_SERVICES=1: start it, do not skip)")
    pytest.skip(message)


def postgres_url_or_skip() -> str:
    if not POSTGRES_URL:
        unavailable("PostgreSQL", "SHARPWATCH_TEST_DATABASE_URL is not set")
    assert POSTGRES_URL is not None
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        unavailable("PostgreSQL", f"{POSTGRES_URL}: {exc}")
    return POSTGRES_URL


def redis_url_or_skip() -> str:
    if not REDIS_URL:
        unavailable("Redis", "SHARPWATCH_TEST_REDIS_URL is not set")
    assert REDIS_URL is not None
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        unavailable("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@contextmanager
def scratch_postgres_database(base_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    name = f"sw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def refuse_shared_connection(app: Any) -> None:
    """A real server runs requests concurrently in threads; sessions bound to one Connection
    (conftest's rolled-back ``session_factory``) would interleave their transactions on it and
    fail at random (PendingRollbackError, InFailedSqlTransaction: 500s and 503s that are the
    fixture's, not the service's). Serve a pooled app (``server``/``sqlite_server`` fixtures)."""
    state = getattr(app, "state", None)
    factory = getattr(state, "session_factory", None)
    bind = None if factory is None else factory.kw.get("bind")
    if isinstance(bind, Connection):
        raise RuntimeError(
            "ServerThread needs an app on a pooled engine: this app's sessions share one "
            "database connection, which concurrent requests would corrupt"
        )


class ServerThread:
    """A real uvicorn server on an ephemeral loopback port, running in a thread."""

    def __init__(self, app: FastAPI, port: int = 0, **options: Any) -> None:
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=3,
            **options,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        try:
            refuse_shared_connection(self.config.app)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        socket = self.server.servers[0].sockets[0]
        host, port = socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
