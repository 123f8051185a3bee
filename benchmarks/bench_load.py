"""Load: N concurrent trainers (separate processes, the real ``SharpwatchClient``) stream steps of
Q per-query rows each into one ``sharpwatch serve`` subprocess; then every step is checked to be
stored exactly once.

Run:  python benchmarks/bench_load.py --backend sqlite
      python benchmarks/bench_load.py --backend postgres --workers 2 \\
          --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
          --redis-url redis://127.0.0.1:6379/0
      (--trainers 20 --steps 1000 --queries 512 are the defaults; --batch-size is the client's)

Reports:
- throughput: stored steps / s and query rows / s, over the wall time from the first submit to
  the last trainer's flush;
- ingest latency, client-side: wall time of each ``POST /runs/{id}/steps`` (one batch of up to
  --batch-size steps), timed around the HTTP exchange in an httpx transport, all trainers pooled;
- the service's own ``sharpwatch_http_request_duration_seconds`` histogram for that route
  (bucket upper bounds for p50 / p99; summed over workers via PROMETHEUS_MULTIPROC_DIR), its
  5xx answers (503 = database busy or down; the client retries them), duplicate re-sends and
  detector failures;
- exactly-once: per run, rows == distinct steps == --steps, min 0, max --steps - 1, and
  query rows == --steps × --queries.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

ROUTE = "/api/v1/runs/{run_id}/steps"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(step: int, queries: int, group: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {
            "entropy": 1.5 + (step % 10) / 100,
            "success_rate": 0.4 + (step % 10) / 50,
            "alpha": 1.0,
        },
        "queries": [
            {
                "query_id": f"q{i}",
                "group_size": group,
                "successes": (step + i) % (group + 1),
                "entropy": 0.3 + (i % 7) / 10,
                "log_zprime": 0.01 * (i % 5),
                "n_modes": 1 + i % 3,
            }
            for i in range(queries)
        ],
    }


def trainer(
    url: str, index: int, steps: int, queries: int, batch_size: int, spool: str
) -> dict[str, Any]:
    """One trainer process: register, submit every step as fast as it can, flush."""
    from trainer_hooks import SharpwatchClient

    latencies: list[float] = []

    class Timed(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            start = time.perf_counter()
            response = super().handle_request(request)
            if request.method == "POST" and request.url.path.endswith("/steps"):
                response.read()
                latencies.append(time.perf_counter() - start)
            return response

    client = SharpwatchClient(
        url,
        transport=Timed(),
        timeout=600.0,
        batch_size=batch_size,
        max_queue=steps + 1,
        flush_interval=0.05,
        spool_dir=Path(spool) / str(index),
    )
    # open_run: a registration answered 503 (SQLite busy under load) is retried by the sender.
    client.open_run(f"load-{index}-{uuid.uuid4().hex[:6]}", project="load", group_size=8)
    started = time.time()
    for step in range(steps):
        client.submit(_record(step, queries, 8))
    flushed = client.flush(timeout=3600)
    finished = time.time()
    run = client.run
    client.close(timeout=10)
    return {
        "run_id": None if run is None else run.id,
        "flushed": flushed,
        "started": started,
        "finished": finished,
        "latencies": latencies,
        "sent": client.sent,
        "rejected": client.rejected,
        "dropped": client.dropped,
    }


def _scratch_postgres(base_url: str) -> str:
    name = f"sw_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _drop_postgres(base_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _histogram(url: str) -> dict[float, float]:
    """Cumulative bucket counts of the ingest route's server-side latency histogram."""
    exposition = httpx.get(f"{url}/metrics", timeout=60).text
    buckets: dict[float, float] = {}
    pattern = re.compile(r"^sharpwatch_http_request_duration_seconds_bucket\{(.*)\} (\S+)$")
    for line in exposition.splitlines():
        match = pattern.match(line)
        if not match or f'"{ROUTE}"' not in match.group(1) or '"POST"' not in match.group(1):
            continue
        le = re.search(r'le="([^"]+)"', match.group(1))
        if le is None:
            continue
        bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
        buckets[bound] = buckets.get(bound, 0.0) + float(match.group(2))
    return buckets


def _counter(exposition: str, name: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _count_5xx(exposition: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if (
            line.startswith("sharpwatch_http_request_duration_seconds_count{")
            and f'"{ROUTE}"' in line
            and '"5xx"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    if not buckets:
        return None
    total = buckets[max(buckets)]
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--trainers", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "SHARPWATCH_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="server for a scratch database (dropped afterwards)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("SHARPWATCH_TEST_REDIS_URL"))
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and work directory afterwards"
    )
    args = parser.parse_args()

    if args.workers > 1 and not args.redis_url:
        parser.error("--workers > 1 needs --redis-url (or SHARPWATCH_TEST_REDIS_URL)")
    workdir = Path(tempfile.mkdtemp(prefix="sharpwatch-load-"))
    if args.backend == "sqlite":
        database_url = f"sqlite:///{workdir / 'sharpwatch.db'}"
    else:
        database_url = _scratch_postgres(args.postgres_url)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    (workdir / "prom").mkdir()
    env = {
        **os.environ,
        "SHARPWATCH_DATABASE_URL": database_url,
        "SHARPWATCH_HOST": "127.0.0.1",
        "SHARPWATCH_PORT": str(port),
        "SHARPWATCH_WORKERS": str(args.workers),
        "SHARPWATCH_LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prom"),
    }
    env.pop("SHARPWATCH_REDIS_URL", None)
    if args.workers > 1:
        env["SHARPWATCH_REDIS_URL"] = args.redis_url
    log = (workdir / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("service did not start: " + (workdir / "service.log").read_text())
            time.sleep(0.1)

        print(
            f"backend {args.backend}, {args.workers} worker(s), {args.trainers} trainers × "
            f"{args.steps} steps × {args.queries} queries, client batch {args.batch_size}, "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.trainers, mp_context=context) as pool:
            futures = [
                pool.submit(
                    trainer,
                    url,
                    index,
                    args.steps,
                    args.queries,
                    args.batch_size,
                    str(workdir / "spool"),
                )
                for index in range(args.trainers)
            ]
            results = [f.result() for f in futures]

        wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
        latencies = [x for r in results for x in r["latencies"]]
        total_steps = args.trainers * args.steps
        print(f"wall {wall:.1f} s (first submit → last flush)")
        print(
            f"throughput {total_steps / wall:.1f} steps/s, "
            f"{total_steps * args.queries / wall:,.0f} query rows/s"
        )
        print(
            f"client-side POST latency over {len(latencies)} requests: "
            f"p50 {statistics.median(latencies):.3f} s, p99 {_percentile(latencies, 0.99):.3f} s, "
            f"max {max(latencies):.3f} s"
        )
        exposition = httpx.get(f"{url}/metrics", timeout=60).text
        print(
            "service counters: "
            + ", ".join(
                f"{name} {_counter(exposition, name):.0f}"
                for name in (
                    "sharpwatch_ingested_steps_total",
                    "sharpwatch_duplicate_steps_total",
                    "sharpwatch_detector_failures_total",
                )
            )
            + f", ingest answers 5xx {_count_5xx(exposition):.0f}"
        )
        buckets = _histogram(url)
        print(
            "server-side histogram (bucket upper bound): "
            f"p50 ≤ {_bucket_quantile(buckets, 0.5)} s, p99 ≤ {_bucket_quantile(buckets, 0.99)} s"
            f" over {buckets.get(float('inf'), 0):.0f} requests"
        )
        problems = [r for r in results if not r["flushed"] or r["rejected"] or r["dropped"]]
        engine = create_engine(database_url)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT run_id, count(*), count(DISTINCT step), min(step), max(step) "
                    "FROM steps GROUP BY run_id"
                )
            ).all()
            query_rows = dict(
                connection.execute(
                    text("SELECT run_id, count(*) FROM query_stats GROUP BY run_id")
                ).all()
            )
        engine.dispose()
        by_run = {row[0]: row[1:] for row in rows}
        bad = []
        for result in results:
            run_id = result["run_id"]
            expected = (args.steps, args.steps, 0, args.steps - 1)
            if by_run.get(run_id) != expected or query_rows.get(run_id) != (
                args.steps * args.queries
            ):
                bad.append((run_id, by_run.get(run_id), query_rows.get(run_id)))
        print(
            f"exactly-once: {len(results) - len(bad)}/{len(results)} runs hold steps "
            f"0..{args.steps - 1} once each with {args.queries} query rows per step"
            + (f"; WRONG: {bad}" if bad else "")
            + (f"; client problems: {problems}" if problems else "")
        )
        return 1 if bad or problems else 0
    finally:
        try:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(service.pid, signal.SIGKILL)
        log.close()
        if not args.keep:
            if args.backend == "postgres":
                _drop_postgres(args.postgres_url, database_url)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
