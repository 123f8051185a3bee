from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from service.app import create_app
from service.broker import RedisBroker
from service.db.engine import make_engine
from service.settings import Settings


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True


def test_readyz_fails_when_schema_is_behind(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    engine = make_engine(url)
    with TestClient(
        create_app(Settings(database_url=url), engine=engine), base_url="http://localhost"
    ) as client:
        response = client.get("/readyz")
    engine.dispose()
    assert response.status_code == 503
    assert "sharpwatch db upgrade" in response.json()["checks"]["database"]["error"]


def test_readyz_fails_when_database_is_unreachable() -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    engine = make_engine(url, connect_args={"connect_timeout": 1})
    with TestClient(
        create_app(Settings(database_url=url), engine=engine), base_url="http://localhost"
    ) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 503
    assert "unreachable" in response.json()["checks"]["database"]["error"]


def test_readyz_reports_unreachable_redis(engine: Engine, database_url: str) -> None:
    settings = Settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0")
    broker = RedisBroker("redis://127.0.0.1:1/0")
    app = create_app(settings, engine=engine, broker=broker, registry=CollectorRegistry())
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == {"ok": False, "error": "redis unreachable"}


def test_readyz_with_reachable_redis(engine: Engine, database_url: str, redis_url: str) -> None:
    app = create_app(
        Settings(database_url=database_url, redis_url=redis_url),
        engine=engine,
        registry=CollectorRegistry(),
    )
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["redis"] == {"ok": True}


def test_metrics_endpoint_exposes_request_latency(client: TestClient) -> None:
    client.get("/healthz")
    body = client.get("/metrics").text
    assert 'sharpwatch_http_request_duration_seconds_count{method="GET",route="/healthz"' in body


def test_sqlite_pragmas(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
