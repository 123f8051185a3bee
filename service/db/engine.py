"""Engine and session factory for the configured database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.db import sqlite_transactions


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the dialect: on SQLite WAL, foreign keys, a 30 s busy timeout and
    writing transactions that take the write lock first (``sqlite_transactions``); pre-ping on
    PostgreSQL."""
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        sqlite_transactions.install(engine)
        return engine
    return create_engine(database_url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint the WAL every 10,000 pages (~40 MB) instead of SQLite's 1,000. A one-step ingest
    # writes ~250 pages (its per-query rows land on as many leaves of query_stats' unique index),
    # so the default ran a checkpoint, with its fsyncs, inside every fourth request; a larger
    # WAL also checkpoints a rewritten page once rather than once per request. Measured
    # (store_and_detect, 600 one-step ingests, 256 queries): 179 -> 207 steps/s, p90 11 -> 5 ms.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
