"""Storage cost of per-query rows and read latency as the table grows (issue 21).

    python benchmarks/bench_retention.py --backend sqlite --checkpoints 1000000 10000000
    python benchmarks/bench_retention.py --backend postgres --checkpoints 1000000 10000000

One *probe run* (``--probe-steps`` steps × ``--probe-queries`` queries, the shape the reads are
timed on) is stored first; then *filler runs* of ``--filler-steps`` steps × ``--queries`` queries
(bulk-inserted straight into the tables, no HTTP: the ingest path is bench_peers' subject) grow
``query_stats`` to each checkpoint. At each checkpoint:

- **bytes per 1M query rows**: PostgreSQL ``pg_total_relation_size('query_stats')`` (heap,
  indexes, TOAST); SQLite the pages of ``query_stats`` and its indexes (``dbstat``), each divided
  by the rows and scaled to 1M.
- **read latency** (median of ``--repeat``, in process through the app, so JSON encoding is
  counted): the probe run's query history (one query, all its steps), its step series (one page
  of 1000 steps, every metric), one step's detail (every query row), and the live page's first
  load of a run: the four calls ``app.js`` makes at once (run, collapse, alerts, command history),
  then its first step page (5000 steps, the chart metrics).

Flat means the probe run's reads do not grow with the rows of other runs. At the last checkpoint
it then sets a retention (``full_steps``/``keep_every``) on the fillers' project and times
``sharpwatch gc``'s pass (``service.storage.retention.collect``) and the reads again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_peers import load_average, scratch_postgres  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from sqlalchemy import Engine, insert, text  # noqa: E402

from service.app import create_app  # noqa: E402
from service.db.engine import make_engine, make_session_factory  # noqa: E402
from service.db.migrate import upgrade  # noqa: E402
from service.db.models import Run, Step  # noqa: E402
from service.schemas.retention import RetentionIn  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.storage import retention as retention_store  # noqa: E402

CHART_METRICS = (
    "entropy,success_rate,log_zprime_mean,log_zprime_raw_mean,reward_accuracy,proxy_reward,"
    "gt_reward,response_length,alpha,kl,degenerate_all_fail,degenerate_all_pass,probe_success"
)
QUERY_COLUMNS = (
    "run_id",
    "step",
    "query_id",
    "group_size",
    "successes",
    "entropy",
    "log_zprime",
    "log_zprime_raw",
    "n_modes",
    "reward_accuracy",
    "response_length",
)


@contextlib.contextmanager
def database(backend: str, postgres_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as directory:
            yield f"sqlite:///{Path(directory) / 'retention.db'}"
        return
    if not postgres_url:
        raise SystemExit("--postgres-url (or SHARPWATCH_TEST_DATABASE_URL) is needed")
    with scratch_postgres(postgres_url) as url:
        yield url


def add_run(engine: Engine, project: str, name: str) -> int:
    with engine.begin() as connection:
        result = connection.execute(
            insert(Run).values(project=project, name=name, group_size=8, kl_beta=0.0)
        )
        return int(result.inserted_primary_key[0])


def query_rows(run_id: int, steps: range, queries: int) -> Iterator[tuple[Any, ...]]:
    for step in steps:
        for q in range(queries):
            yield (
                run_id,
                step,
                f"q{q:06d}",
                8,
                (step + q) % 9,
                0.5 + (q % 7) * 0.01,
                0.01 * (q % 5),
                0.02 * (q % 5),
                2,
                0.9,
                120.0 + q % 13,
            )


def fill(engine: Engine, run_id: int, steps: range, queries: int) -> None:
    """Step rows and per-query rows of ``steps``, committed in chunks of about 100k rows."""
    now = time.time()
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(now, UTC)
    chunk = max(1, 100_000 // queries)
    for start in range(steps.start, steps.stop, chunk):
        part = range(start, min(start + chunk, steps.stop))
        step_rows = [
            {
                "run_id": run_id,
                "step": s,
                "time": stamp,
                "received_at": stamp,
                "content_hash": f"{s:064d}",
                "extras": {},
                "non_finite": [],
                "n_queries": queries,
                "entropy": 0.5,
                "success_rate": 0.4,
                "alpha": 1.0,
                "reward_accuracy": 0.9,
            }
            for s in part
        ]
        with engine.begin() as connection:
            connection.execute(insert(Step), step_rows)
            if engine.dialect.name == "postgresql":
                raw: Any = connection.connection.driver_connection
                statement = f"COPY query_stats ({', '.join(QUERY_COLUMNS)}) FROM STDIN"
                with raw.cursor() as cursor, cursor.copy(statement) as copy:
                    for row in query_rows(run_id, part, queries):
                        copy.write_row(row)
            else:
                connection.exec_driver_sql(
                    f"INSERT INTO query_stats ({', '.join(QUERY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(QUERY_COLUMNS))})",
                    list(query_rows(run_id, part, queries)),
                )
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE runs SET last_step = :s WHERE id = :r"),
                {"s": part[-1], "r": run_id},
            )


def table_bytes(engine: Engine) -> int:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            return int(
                connection.execute(
                    text("SELECT pg_total_relation_size('query_stats')")
                ).scalar_one()
            )
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        names = [
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE tbl_name = 'query_stats'"
            )
        ]
        marks = ", ".join("?" * len(names))
        return int(
            connection.exec_driver_sql(
                f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({marks})", tuple(names)
            ).scalar_one()
        )


def row_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM query_stats")).scalar_one())


def timed(client: TestClient, calls: Callable[[], None], repeat: int) -> float:
    calls()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        calls()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def reads(client: TestClient, run_id: int, probe_steps: int, repeat: int) -> dict[str, float]:
    base = f"/api/v1/runs/{run_id}"

    def get(path: str, **params: Any) -> Any:
        response = client.get(path, params=params)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
        return response.json()

    history = get(f"{base}/queries/q000007")
    if len(history["points"]) != probe_steps:
        raise RuntimeError("the probe run's history is incomplete")

    def first_load() -> None:
        get(base)
        get(f"{base}/collapse")
        get(f"{base}/alerts", limit=200)
        get(f"{base}/commands/history", limit=100)
        get(f"{base}/steps", cursor=0, limit=5000, metrics=CHART_METRICS)

    return {
        "query history": timed(client, lambda: get(f"{base}/queries/q000007"), repeat),
        "step series (1000 steps)": timed(client, lambda: get(f"{base}/steps", limit=1000), repeat),
        "step detail": timed(client, lambda: get(f"{base}/steps/{probe_steps // 2}"), repeat),
        "page first load": timed(client, first_load, repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("SHARPWATCH_TEST_DATABASE_URL"), help="server"
    )
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--queries", type=int, default=1024, help="filler runs' queries/step")
    parser.add_argument("--filler-steps", type=int, default=10_000, help="steps per filler run")
    parser.add_argument("--probe-steps", type=int, default=1000)
    parser.add_argument("--probe-queries", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--full-steps", type=int, default=1000, help="retention at the end")
    parser.add_argument("--keep-every", type=int, default=10, help="retention at the end")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with database(args.backend, args.postgres_url) as url:
        engine = make_engine(url)
        upgrade(engine)
        probe = add_run(engine, "probe", "probe")
        fill(engine, probe, range(args.probe_steps), args.probe_queries)
        app = create_app(Settings(database_url=url), engine=engine, registry=CollectorRegistry())
        with TestClient(app, base_url="http://localhost") as client:
            filler, filled = 0, 0
            rows = args.probe_steps * args.probe_queries
            for checkpoint in sorted(args.checkpoints):
                start, before = time.perf_counter(), rows
                while rows < checkpoint:
                    if filler == 0 or filled >= args.filler_steps:
                        filler = add_run(engine, "filler", f"filler-{len(results)}-{rows}")
                        filled = 0
                    steps = min(
                        args.filler_steps - filled,
                        max(1, -(-(checkpoint - rows) // args.queries)),
                    )
                    fill(engine, filler, range(filled, filled + steps), args.queries)
                    filled += steps
                    rows += steps * args.queries
                fill_s = time.perf_counter() - start
                size = table_bytes(engine)
                entry = {
                    "backend": args.backend,
                    "rows": row_count(engine),
                    "bytes": size,
                    "bytes_per_1M_rows": size / rows * 1e6,
                    "fill_rows_per_s": round((rows - before) / max(fill_s, 1e-9)),
                    "load": load_average(),
                    "reads_ms": reads(client, probe, args.probe_steps, args.repeat),
                }
                results.append(entry)
                print(json.dumps(entry), flush=True)
            with make_session_factory(engine)() as session:
                retention_store.put(
                    session,
                    "filler",
                    RetentionIn(full_steps=args.full_steps, keep_every=args.keep_every),
                )
                start = time.perf_counter()
                report = retention_store.collect(session, project="filler")
                seconds = time.perf_counter() - start
            deleted = sum(r.rows_deleted for r in report)
            entry = {
                "backend": args.backend,
                "gc": f"full_steps={args.full_steps} keep_every={args.keep_every}",
                "rows_deleted": deleted,
                "gc_seconds": seconds,
                "rows": row_count(engine),
                "load": load_average(),
                "reads_ms": reads(client, probe, args.probe_steps, args.repeat),
            }
            print(json.dumps(entry), flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
