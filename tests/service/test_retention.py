"""Retention of per-query rows: the REST settings, exactly which rows ``gc`` keeps, reads of a
collected run, and the ``sharpwatch gc`` / ``runs delete`` commands (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.cli import main
from service.db.engine import make_engine, make_session_factory
from service.db.models import QueryStat, Run
from service.storage import retention as retention_store
from tests.service._helpers import run_body, step_record

STEPS = 20
QUERIES = 3


def _run_with_steps(client: TestClient, name: str, project: str = "proj") -> int:
    run_id = int(client.post("/api/v1/runs", json=run_body(name, project=project)).json()["id"])
    steps = [step_record(s, n_queries=QUERIES) for s in range(STEPS)]
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": steps})
    assert response.status_code == 200, response.text
    return run_id


def _stored(session: Session, run_id: int) -> set[tuple[int, str]]:
    rows = session.execute(
        select(QueryStat.step, QueryStat.query_id).where(QueryStat.run_id == run_id)
    )
    return {(step, query_id) for step, query_id in rows}


def _expected(steps: list[int]) -> set[tuple[int, str]]:
    return {(s, f"q{i}") for s in steps for i in range(QUERIES)}


def test_retention_settings_round_trip_and_validation(client: TestClient) -> None:
    url = "/api/v1/projects/proj/retention"
    missing = client.get(url)
    assert missing.status_code == 404
    assert missing.json()["field"] == "project"
    bad = client.put(url, json={"full_steps": 0, "keep_every": 2})
    assert bad.status_code == 422
    assert "full_steps" in bad.text
    assert client.put(url, json={"full_steps": 5, "keep_every": -1}).status_code == 422
    assert client.put(url, json={"full_steps": 5}).status_code == 422
    put = client.put(url, json={"full_steps": 100, "keep_every": 10})
    assert put.status_code == 200, put.text
    assert put.json()["project"] == "proj"
    client.put(url, json={"full_steps": 50, "keep_every": 5})
    got = client.get(url).json()
    assert (got["full_steps"], got["keep_every"]) == (50, 5)
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert client.delete(url).status_code == 404


@pytest.mark.parametrize("batch_rows", [1, 4, 7, 10_000])
def test_gc_keeps_the_window_and_every_kth_step(
    client: TestClient, session_factory: sessionmaker[Session], batch_rows: int
) -> None:
    run_id = _run_with_steps(client, "a")
    other = _run_with_steps(client, "b", project="elsewhere")  # no settings: untouched
    series_before = client.get(f"/api/v1/runs/{run_id}/steps").json()
    detail_before = client.get(f"/api/v1/runs/{run_id}/steps/13").json()
    client.put("/api/v1/projects/proj/retention", json={"full_steps": 5, "keep_every": 4})
    # last step 19, window 15..19; older steps keep theirs only at multiples of 4.
    survivors = [0, 4, 8, 12, 15, 16, 17, 18, 19]
    doomed = (STEPS - len(survivors)) * QUERIES
    with session_factory() as session:
        dry = retention_store.collect(session, dry_run=True, batch_rows=batch_rows)
        assert [(r.run_id, r.cutoff_step, r.rows_deleted) for r in dry] == [(run_id, 14, doomed)]
        assert _stored(session, run_id) == _expected(list(range(STEPS)))
        done = retention_store.collect(session, batch_rows=batch_rows)
        assert [(r.run_id, r.rows_deleted) for r in done] == [(run_id, doomed)]
        assert _stored(session, run_id) == _expected(survivors)
        assert _stored(session, other) == _expected(list(range(STEPS)))
        again = retention_store.collect(session, batch_rows=batch_rows)
        assert [r.rows_deleted for r in again] == [0]

    # Reads still answer: history shows the kept points, the step series is unchanged.
    history = client.get(f"/api/v1/runs/{run_id}/queries/q1").json()
    assert [p["step"] for p in history["points"]] == survivors
    assert client.get(f"/api/v1/runs/{run_id}/steps").json() == series_before
    detail = client.get(f"/api/v1/runs/{run_id}/steps/13").json()
    assert detail["queries"] == []
    assert {k: v for k, v in detail.items() if k != "queries"} == {
        k: v for k, v in detail_before.items() if k != "queries"
    }
    assert len(client.get(f"/api/v1/runs/{run_id}/steps/12").json()["queries"]) == QUERIES
    assert (
        client.get(f"/api/v1/runs/{run_id}/queries/q1", params={"from": 13, "to": 14}).json()[
            "points"
        ]
        == []
    )


def test_gc_keep_every_zero_and_project_filter(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    run_id = _run_with_steps(client, "a")
    short = int(client.post("/api/v1/runs", json=run_body("short")).json()["id"])
    client.post(f"/api/v1/runs/{short}/steps", json={"steps": [step_record(0), step_record(1)]})
    other = _run_with_steps(client, "b", project="elsewhere")
    client.put("/api/v1/projects/proj/retention", json={"full_steps": 3, "keep_every": 0})
    client.put("/api/v1/projects/elsewhere/retention", json={"full_steps": 10, "keep_every": 1})
    with session_factory() as session:
        report = retention_store.collect(session, project="proj")
        # The short run is inside its window (cutoff < 0): not reported, nothing deleted.
        assert [(r.run_id, r.rows_deleted) for r in report] == [(run_id, 17 * QUERIES)]
        assert _stored(session, run_id) == _expected([17, 18, 19])
        assert len(_stored(session, short)) == 2 * QUERIES
        assert len(_stored(session, other)) == STEPS * QUERIES  # keep_every 1 keeps all
        assert retention_store.collect(session, project="elsewhere") == []
        with pytest.raises(Exception, match="no retention settings"):
            retention_store.collect(session, project="nowhere")
        with pytest.raises(ValueError, match="batch_rows"):
            retention_store.collect(session, batch_rows=0)


def _seed(database_url: str) -> tuple[int, int]:
    """Two runs of project ``proj`` committed for real (the CLI opens its own connection)."""
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(database_url=database_url), registry=CollectorRegistry())
    with TestClient(app, base_url="http://localhost") as client:
        first = _run_with_steps(client, "a")
        second = _run_with_steps(client, "b")
        client.put("/api/v1/projects/proj/retention", json={"full_steps": 10, "keep_every": 5})
    return first, second


def _count(engine: Engine, run_id: int) -> int:
    with make_session_factory(engine)() as session:
        return len(_stored(session, run_id))


def test_cli_gc_and_runs_delete(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHARPWATCH_DATABASE_URL", database_url)
    first, second = _seed(database_url)
    engine = make_engine(database_url)
    try:
        # last step 19, cutoff 9: steps 0..9 keep 0 and 5, so 8 steps' rows go per run.
        per_run = 8 * QUERIES
        assert main(["gc", "--project", "proj", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert f"run {first} (proj): would delete {per_run} per-query rows of steps <= 9" in out
        assert f"would delete {2 * per_run} per-query rows in 2 runs" in out
        assert _count(engine, first) == STEPS * QUERIES
        assert main(["gc", "--batch-rows", "5"]) == 0
        assert f"deleted {2 * per_run} per-query rows in 2 runs" in capsys.readouterr().out
        assert _count(engine, first) == STEPS * QUERIES - per_run
        assert main(["gc", "--project", "missing"]) == 1
        assert "no retention settings" in capsys.readouterr().err

        assert main(["runs", "delete", str(second)]) == 0
        assert f"deleted run {second} (proj/b)" in capsys.readouterr().out
        with make_session_factory(engine)() as session:
            assert session.get(Run, second) is None
            assert _stored(session, second) == set()
            assert session.get(Run, first) is not None
        assert main(["runs", "delete", str(second)]) == 1
        assert f"run {second} does not exist" in capsys.readouterr().err
    finally:
        engine.dispose()
