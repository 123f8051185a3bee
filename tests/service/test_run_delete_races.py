"""Deleting a run while it is being ingested leaves no per-query row without its run
(``query_stats.run_id`` has no foreign key since revision 0012; ``storage.runs.delete_run``).
Real commits on SQLite and PostgreSQL: two sessions with the ingest held open, and a real uvicorn
with several connections ingesting while the run is deleted."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from service.db.engine import make_engine
from service.db.models import QueryStat, Run
from service.errors import NotFoundError
from service.schemas.runs import RunCreate
from service.schemas.steps import StepBatchIn
from service.storage import runs as run_store
from service.storage import steps as step_store
from tests._servers import ServerThread
from tests.service._helpers import run_body, step_record

_ORPHANS = text(
    "SELECT count(*) FROM query_stats q "
    "WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = q.run_id)"
)


def _orphans(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(_ORPHANS).scalar_one())


def _batch(first: int, steps: int, queries: int) -> StepBatchIn:
    return StepBatchIn.model_validate(
        {"steps": [step_record(first + s, n_queries=queries) for s in range(steps)]}
    )


def test_a_delete_waits_for_an_open_ingest_then_removes_its_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            run_id = run_store.register(session, RunCreate.model_validate(run_body("doomed")))[0].id
            kept_id = run_store.register(session, RunCreate.model_validate(run_body("kept")))[0].id
            step_store.ingest(session, kept_id, _batch(0, 2, 4))
            session.commit()

        ingesting = Session(engine)
        deleted = threading.Event()
        failure: list[BaseException] = []

        def delete() -> None:
            try:
                with Session(engine) as session:
                    run_store.delete_run(session, run_id)
                deleted.set()
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        try:
            # The ingest's steps and per-query rows are written, not committed.
            stored = step_store.ingest(ingesting, run_id, _batch(0, 3, 5))
            assert stored.rows == 15
            deleter = threading.Thread(target=delete)
            deleter.start()
            # The delete waits for the ingest (the run row's lock; SQLite's write lock).
            assert not deleted.wait(1.0)
            ingesting.commit()
        finally:
            ingesting.close()
        deleter.join(60)
        assert not failure, failure
        assert deleted.is_set()

        with Session(engine) as session:
            assert session.get(Run, run_id) is None
            count = select(func.count()).select_from(QueryStat)
            assert session.scalar(count.where(QueryStat.run_id == run_id)) == 0
            assert session.scalar(count.where(QueryStat.run_id == kept_id)) == 8
        assert _orphans(engine) == 0

        # An ingest after the delete finds no run and writes nothing.
        with Session(engine) as session, pytest.raises(NotFoundError):
            step_store.ingest(session, run_id, _batch(3, 1, 5))
        assert _orphans(engine) == 0
    finally:
        engine.dispose()


ROUNDS = 4
INGESTERS = 4


def test_ingest_and_delete_racing_over_http_leave_no_orphan_rows(
    server: ServerThread, database_url: str
) -> None:
    """Several connections ingest into one run until it is gone while another deletes it, a
    few rounds; every ingest is stored (200) or finds no run (404), and no per-query row is left
    without its run."""
    engine = make_engine(database_url)
    try:
        for round_ in range(ROUNDS):
            run = httpx.post(f"{server.url}/api/v1/runs", json=run_body(f"race-{round_}"))
            run_url = f"{server.url}/api/v1/runs/{run.json()['id']}"
            stored_once = threading.Semaphore(0)

            def ingest(
                worker: int, run_url: str = run_url, stored_once: threading.Semaphore = stored_once
            ) -> list[int]:
                codes: list[int] = []
                deadline = time.monotonic() + 120
                with httpx.Client(timeout=60) as client:
                    while time.monotonic() < deadline:
                        first = (worker * 100_000 + len(codes)) * 2
                        body = {"steps": [step_record(first + s, n_queries=64) for s in range(2)]}
                        codes.append(client.post(f"{run_url}/steps", json=body).status_code)
                        if len(codes) == 1:
                            stored_once.release()
                        if codes[-1] != 200:
                            break
                return codes

            with ThreadPoolExecutor(INGESTERS) as pool:
                futures = [pool.submit(ingest, worker) for worker in range(INGESTERS)]
                for _ in range(INGESTERS):  # every ingester is under way
                    assert stored_once.acquire(timeout=60)
                time.sleep(0.05 * round_)
                assert httpx.delete(run_url, timeout=60).status_code == 204
                results = [future.result() for future in futures]
            for codes in results:
                # stored until the run was gone, then 404 (the first may already be one)
                assert codes[-1] == 404, codes
                assert set(codes[:-1]) <= {200}, codes
            assert any(200 in codes for codes in results)
            assert _orphans(engine) == 0
    finally:
        engine.dispose()
