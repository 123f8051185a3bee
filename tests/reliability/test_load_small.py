"""A small version of ``benchmarks/bench_load.py`` for CI: concurrent trainers (threads, each
with the real ``SharpwatchClient``) against one ``sharpwatch serve`` subprocess, on SQLite with one
worker and on PostgreSQL + Redis with two. Asserts exactly-once storage, not speed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests._servers import redis_url_or_skip
from tests.reliability._procs import ServiceProcess
from trainer_hooks import SharpwatchClient

TRAINERS = 4
STEPS = 50
QUERIES = 64


def _record(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": 1.5 + (step % 10) / 100, "success_rate": 0.5},
        "queries": [
            {"query_id": f"q{i}", "group_size": 8, "successes": (step + i) % 9}
            for i in range(QUERIES)
        ],
    }


def _trainers(url: str, tmp_path: Path) -> list[int]:
    run_ids: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def trainer(index: int) -> None:
        client = SharpwatchClient(
            url, spool_dir=tmp_path / f"spool-{index}", batch_size=16, timeout=60.0
        )
        try:
            run = client.register_run(f"load-{index}", project="load", group_size=8)
            for step in range(STEPS):
                client.submit(_record(step))
            if not client.flush(timeout=120) or client.rejected or client.dropped:
                with lock:
                    errors.append(f"trainer {index}: {client.last_error}")
            with lock:
                run_ids.append(run.id)
        finally:
            client.close(timeout=5)

    threads = [threading.Thread(target=trainer, args=(i,)) for i in range(TRAINERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors
    assert len(run_ids) == TRAINERS
    return run_ids


def _assert_exactly_once(database_url: str, run_ids: list[int]) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            for run_id in run_ids:
                counts = connection.execute(
                    text(
                        "SELECT count(*), count(DISTINCT step), min(step), max(step) "
                        "FROM steps WHERE run_id = :r"
                    ),
                    {"r": run_id},
                ).one()
                rows = connection.execute(
                    text("SELECT count(*) FROM query_stats WHERE run_id = :r"), {"r": run_id}
                ).scalar_one()
                assert tuple(counts) == (STEPS, STEPS, 0, STEPS - 1), (run_id, counts)
                assert rows == STEPS * QUERIES, (run_id, rows)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_small_load_sqlite_one_worker(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'sharpwatch.db'}"
    service = ServiceProcess(database_url, log_path=tmp_path / "service.log").start()
    try:
        _assert_exactly_once(database_url, _trainers(service.url, tmp_path))
    finally:
        service.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_small_load_postgres_redis_two_workers(tmp_path: Path, postgres_database_url: str) -> None:
    service = ServiceProcess(
        postgres_database_url,
        workers=2,
        redis_url=redis_url_or_skip(),
        log_path=tmp_path / "service.log",
    ).start()
    try:
        _assert_exactly_once(postgres_database_url, _trainers(service.url, tmp_path))
    finally:
        service.stop()
