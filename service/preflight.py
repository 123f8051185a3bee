"""Start-up checks of ``sharpwatch serve``: each failure is one line naming the setting, its value
and the fix, raised as :class:`StartupError` (the CLI prints it and exits 2).

They run before anything claims to serve: the settings parse, the database is reachable (and its
SQLite directory writable), the driver for its URL is installed, Redis answers when configured,
and the listening socket is bound.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.errors import ConfigurationError
from service.settings import Settings

__all__ = [
    "StartupError",
    "bind_socket",
    "check_database",
    "check_redis",
    "load_settings",
    "one_line",
]


class StartupError(ConfigurationError):
    """A start-up failure: ``SETTING=value: problem; fix``."""

    def __init__(self, setting: str, value: object, problem: str, fix: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}={value}: {problem}; {fix}", field=setting)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def load_settings() -> Settings:
    """``Settings()`` with a validation failure turned into one :class:`StartupError`."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        if not name:  # a model-level check: its ConfigurationError names the settings already
            cause = first.get("ctx", {}).get("error")
            raise ConfigurationError(one_line(str(cause or first["msg"]))) from None
        env = f"SHARPWATCH_{name.upper()}"
        raise StartupError(
            env,
            repr(os.environ.get(env, first.get("input"))),
            one_line(first["msg"]),
            f"fix or unset {env} (`sharpwatch config --markdown` lists every setting)",
        ) from None


def check_database(settings: Settings) -> None:
    """The database URL names an installed driver and a store we can open and write."""
    url = settings.database_url
    shown = _redact(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"not a database URL ({one_line(str(exc))})",
            "use sqlite:///path/to/sharpwatch.db or postgresql+psycopg://user@host:5432/db",
        ) from None
    if settings.is_sqlite:
        _check_sqlite_path(settings, shown)
    else:
        _check_driver(parsed.get_backend_name(), parsed.get_driver_name(), shown)
    _check_connect(url, shown)


def _check_sqlite_path(settings: Settings, shown: str) -> None:
    path = settings.sqlite_path
    if path is None:
        return
    directory = path.parent
    if not directory.is_dir():
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"the directory {directory} does not exist",
            f"create it (mkdir -p {directory}) or point the URL at a writable directory",
        )
    target = path if path.exists() else directory
    if not os.access(target, os.W_OK) or not os.access(directory, os.W_OK):
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"{target} is not writable by this user (SQLite also writes -wal/-shm files "
            f"beside the database in {directory})",
            "fix its permissions or point the URL at a writable directory",
        )


def _check_driver(backend: str, driver: str, shown: str) -> None:
    from sqlalchemy.dialects import registry

    try:
        dialect_cls: Any = registry.load(f"{backend}.{driver}")
        dialect_cls.import_dbapi()
    except ImportError as exc:
        extra = ' pip install "sharpwatch[postgres]"' if backend == "postgresql" else ""
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"the {backend}+{driver} driver is not installed ({one_line(str(exc))})",
            f"install it:{extra or ' pip install the driver named in the URL'}",
        ) from None
    except Exception as exc:  # an unknown dialect name
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"unknown database dialect {backend}+{driver} ({one_line(str(exc))})",
            "use sqlite:///... or postgresql+psycopg://...",
        ) from None


def _check_connect(url: str, shown: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from service.db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        cause = one_line(str(orig) if orig is not None else str(exc))
        raise StartupError(
            "SHARPWATCH_DATABASE_URL",
            shown,
            f"cannot connect ({cause[:300]})",
            "start the database or fix the URL (host, port, user, database name)",
        ) from None
    finally:
        engine.dispose()


def check_redis(settings: Settings, timeout: float = 3.0) -> None:
    """When a Redis URL is set, Redis answers a PING."""
    if not settings.redis_url:
        return
    import redis
    from redis.exceptions import RedisError

    shown = _redact(settings.redis_url)
    try:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            client.ping()
        finally:
            client.close()
    except (RedisError, OSError, ValueError) as exc:
        raise StartupError(
            "SHARPWATCH_REDIS_URL",
            shown,
            f"Redis does not answer ({type(exc).__name__}: {one_line(str(exc))[:300]})",
            "start Redis or fix the URL; unset it to use the in-process broker (one worker)",
        ) from None


def bind_socket(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything says "serving" (uvicorn is handed its fd)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY from the listener. uvicorn, handed an fd, takes it
    # for a Unix socket and never sets it, so without this every response's second write waited
    # for the client's delayed ACK: +40 ms a request (issue 21's ingest benchmark).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                "SHARPWATCH_PORT",
                settings.port,
                f"port {settings.port} on {settings.host} is already in use",
                "stop the process holding it (`ss -ltnp`) or pass --port / set SHARPWATCH_PORT",
            ) from None
        raise StartupError(
            "SHARPWATCH_HOST",
            settings.host,
            f"cannot bind {settings.host}:{settings.port} ({one_line(str(exc))})",
            "use an address of this machine (127.0.0.1 by default) and a free port",
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
