"""Fixtures shared by every test package.

``backend`` parametrises a test over SQLite and PostgreSQL; PostgreSQL (and Redis) tests skip when
their URL is not set, and fail instead when SHARPWATCH_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import (
    ServerThread,
    postgres_url_or_skip,
    redis_url_or_skip,
    scratch_postgres_database,
)


@pytest.fixture(autouse=True)
def _spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client spools go to the test's own directory, never the user's cache."""
    monkeypatch.setenv("SHARPWATCH_SPOOL_DIR", str(tmp_path / "spool"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the requested backend; real commits are fine here."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'sharpwatch.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (for tests that need several workers)."""
    with scratch_postgres_database(postgres_url_or_skip()) as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions joined to one outer transaction that is rolled back after the test: the storage
    layer's commits become savepoint releases."""
    connection = engine.connect()
    outer = connection.begin()
    yield sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    outer.rollback()
    connection.close()


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture
def app(settings: Settings, engine: Engine, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(
        settings, engine=engine, session_factory=session_factory, registry=CollectorRegistry()
    )


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://localhost") as client:
        yield client


@pytest.fixture
def auth_client(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    """The app with authentication on, on the requested backend (tokens via session_factory)."""
    app = create_app(
        Settings(database_url=database_url, auth=True),
        engine=engine,
        session_factory=session_factory,
        registry=CollectorRegistry(),
    )
    with TestClient(app, base_url="http://localhost") as client:
        yield client


@pytest.fixture
def redis_url() -> str:
    return redis_url_or_skip()


@pytest.fixture
def server(database_url: str) -> Iterator[ServerThread]:
    """A real uvicorn serving the app on the requested backend (SQLite and PostgreSQL)."""
    app = create_app(Settings(database_url=database_url), registry=CollectorRegistry())
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerThread]:
    """A real uvicorn on a fresh SQLite file, for tests whose subject is not the store."""
    url = f"sqlite:///{tmp_path / 'server.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    with ServerThread(app) as running:
        yield running
