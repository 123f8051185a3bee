"""Benchmark: one ``/metrics`` scrape with N active runs (read run state from the store + render
the text exposition), as the route does it, in one process.

Each run has ``--steps`` stored steps (every standard metric, per-query histograms of 512
queries), 2 open alerts and 3 commands; the store is migrated first. ``--database-url`` picks the
store (default: a temporary SQLite file); a PostgreSQL URL gets a scratch database, dropped after.

Run:  python benchmarks/bench_scrape.py [--runs 200] [--steps 200] [--repeat 100]
      python benchmarks/bench_scrape.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
Prints the exposition size, min / median / p90 / max wall milliseconds per scrape
(time.perf_counter) and the median CPU milliseconds of this process (time.process_time; the
database server's own CPU is not in it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine, insert, make_url, text

from service.app import create_app
from service.db.base import utcnow
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.db.models import Alert, Command, Run, Step
from service.query_histograms import summarize
from service.settings import Settings
from service.wire.metrics import STEP_METRIC_NAMES


@dataclass(frozen=True, slots=True)
class _Query:
    group_size: int
    successes: int
    log_zprime: float | None


@contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url is None:
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    if url.startswith("sqlite"):
        yield url
        return
    name = f"sw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def populate(url: str, runs: int, steps: int, queries: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    engine = make_engine(url)
    upgrade(engine)
    now = utcnow()
    histograms = summarize(
        [_Query(8, rng.randint(0, 8), rng.gauss(0.1, 0.5)) for _ in range(queries)]
    )
    with engine.begin() as connection:
        connection.execute(
            insert(Run),
            [
                {
                    "project": f"proj-{i % 5}",
                    "name": f"run-{i:04d}",
                    "group_size": 8,
                    "kl_beta": 0.04,
                    "config": {},
                    "tags": {},
                    "status": "running",
                    "created_at": now,
                    "updated_at": now,
                    "last_step": steps - 1,
                    "last_step_at": now,
                    "verdict": "warning",
                    "alpha": 1.0,
                }
                for i in range(runs)
            ],
        )
        run_ids = [row[0] for row in connection.execute(text("SELECT id FROM runs ORDER BY id"))]
        for run_id in run_ids:
            connection.execute(
                insert(Step),
                [
                    {
                        "run_id": run_id,
                        "step": s,
                        "received_at": now,
                        "content_hash": f"{run_id}-{s}",
                        "extras": {},
                        "non_finite": [],
                        "n_queries": queries,
                        "query_histograms": histograms,
                        **{name: rng.random() for name in STEP_METRIC_NAMES},
                    }
                    for s in range(steps)
                ],
            )
            for rule, severity in (("zprime_pressure", "warning"), ("entropy_slope", "warning")):
                connection.execute(
                    insert(Alert).values(
                        run_id=run_id,
                        rule=rule,
                        severity=severity,
                        status="open",
                        first_step=1,
                        last_step=2,
                        observed={},
                        thresholds={},
                        message="m",
                        action="a",
                        opened_at=now,
                        updated_at=now,
                    )
                )
            for kind, status in (
                ("adjust_alpha", "applied"),
                ("adjust_alpha", "expired"),
                ("adjust_alpha", "pending"),
            ):
                connection.execute(
                    insert(Command).values(
                        run_id=run_id,
                        kind=kind,
                        status=status,
                        source="detector",
                        reason="r",
                        rules=[],
                        created_at=now,
                    )
                )
    engine.dispose()


def bench(url: str, repeat: int) -> tuple[int, int, list[float], list[float]]:
    engine = make_engine(url)
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    app.state.session_factory = make_session_factory(engine)
    registry, run_state = app.state.exposition, app.state.run_state
    body = generate_latest(registry) + run_state.render()  # warm-up: pool, statement cache
    timings: list[float] = []
    cpu: list[float] = []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        body = generate_latest(registry) + run_state.render()
        timings.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    engine.dispose()
    samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return len(body), samples, timings, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200, help="stored steps per run")
    parser.add_argument("--queries", type=int, default=512, help="queries per step")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with _database(args.database_url) as url:
        started = time.perf_counter()
        populate(url, args.runs, args.steps, args.queries)
        print(
            f"store: {make_url(url).get_backend_name()}, populated in "
            f"{time.perf_counter() - started:.1f} s ({args.runs} runs × {args.steps} steps)"
        )
        size, samples, timings, cpu = bench(url, args.repeat)
    timings.sort()
    print(f"exposition: {size / 1024:.0f} KiB, {samples} samples")
    print(
        f"scrape ms over {args.repeat}: min {timings[0]:.1f}, "
        f"median {statistics.median(timings):.1f}, "
        f"p90 {timings[int(0.9 * (len(timings) - 1))]:.1f}, max {timings[-1]:.1f}; "
        f"this process's CPU median {statistics.median(cpu):.1f}"
    )


if __name__ == "__main__":
    main()
