"""``sharpwatch doctor`` against a real service: all green on a healthy deployment, and a named
fix for each thing that is wrong (schema behind, Redis down, no service, auth without tokens)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.db.models import Run
from service.doctor import run_doctor
from service.settings import Settings
from tests._servers import ServerThread


def _clean_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SHARPWATCH_{name.upper()}", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(f"SHARPWATCH_{name.upper()}", value)


def test_a_healthy_deployment_passes_every_check_and_leaves_nothing_behind(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_env(monkeypatch, database_url=database_url)
    app = create_app(Settings(database_url=database_url), registry=CollectorRegistry())
    out = io.StringIO()
    with ServerThread(app) as server:
        checks = run_doctor(url=server.url, out=out)
    by_name = {c.name: c for c in checks}
    assert [c.name for c in checks] == [
        "settings", "database", "redis", "auth", "clock", "round trip"
    ]  # fmt: skip
    assert all(c.status in ("ok", "warn") for c in checks), out.getvalue()
    assert by_name["auth"].status == "warn"  # auth off: said, with the fix
    assert "SHARPWATCH_AUTH=true" in by_name["auth"].fix
    assert "deleted" in by_name["round trip"].detail
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
    engine.dispose()


def test_an_unmigrated_database_and_no_service_are_failures_with_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0003")
    engine.dispose()
    _clean_env(monkeypatch, database_url=url, port="9")
    out = io.StringIO()
    checks = {c.name: c for c in run_doctor(out=out)}
    assert checks["database"].status == "FAIL"
    assert "sharpwatch db upgrade" in checks["database"].fix
    assert checks["round trip"].status == "FAIL"
    assert "127.0.0.1:9" in checks["round trip"].detail
    assert "sharpwatch serve" in checks["round trip"].fix
    assert "fix: run `sharpwatch db upgrade`" in out.getvalue()


def test_unreachable_redis_and_auth_without_operator_tokens_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    _clean_env(monkeypatch, database_url=url, redis_url="redis://127.0.0.1:1/0", auth="true")
    checks = {c.name: c for c in run_doctor(url="http://127.0.0.1:9", out=io.StringIO())}
    assert checks["redis"].status == "FAIL"
    assert "SHARPWATCH_REDIS_URL" in checks["redis"].detail
    assert checks["auth"].status == "FAIL"
    assert "tokens create --kind operator" in checks["auth"].fix
    assert checks["round trip"].status == "FAIL"
    assert "--token" in checks["round trip"].fix


def test_the_round_trip_works_with_authentication_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.storage import tokens as token_store

    url = f"sqlite:///{tmp_path / 'auth.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        _, operator = token_store.issue(session, "operator", "doctor-test", None)
    engine.dispose()
    _clean_env(monkeypatch, database_url=url, auth="true")
    app = create_app(Settings(database_url=url, auth=True), registry=CollectorRegistry())
    out = io.StringIO()
    with ServerThread(app) as server:
        checks = {c.name: c for c in run_doctor(url=server.url, token=operator, out=out)}
    assert checks["auth"].status == "ok", out.getvalue()
    assert checks["round trip"].status == "ok", out.getvalue()
