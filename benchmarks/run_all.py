"""One command for the side-by-side table: sharpwatch against MLflow and rlwatch.

    python benchmarks/run_all.py [--quick] [--out FILE]

Sets up the peers first if needed (``benchmarks/setup_peers.sh``: a separate virtual environment
``benchmarks/.peers-venv`` with pinned MLflow and rlwatch), then measures, on this machine, in
this one run:

1. ingest (sharpwatch on SQLite and PostgreSQL, MLflow's log-batch over HTTP, rlwatch's
   ``log_step``): steps, rows and metric values per second, and the ratio to MLflow;
2. detection-to-command latency (1 worker on SQLite; 2 workers on PostgreSQL + Redis);
3. trainer overhead of the hooks on ``examples/tiny_grpo.py``'s step (CPU);
4. ``/metrics`` scrape cost against the number of active runs (``bench_scrape.py``).

PostgreSQL and Redis come from ``SHARPWATCH_TEST_DATABASE_URL`` / ``SHARPWATCH_TEST_REDIS_URL``
(their parts are skipped when unset). Prints Markdown (the ``## Peers`` section of
docs/benchmarks.md holds the latest); ``--out`` writes it to a file as well. Everything talks to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_overhead  # noqa: E402
import bench_peers  # noqa: E402
import bench_scrape  # noqa: E402


class _Tee(io.StringIO):
    """Keeps what is printed and shows it at once (a long run shows progress)."""

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        sys.__stdout__.flush()
        return super().write(text)


def setup_peers() -> None:
    subprocess.run(["bash", str(HERE / "setup_peers.sh")], check=True)


def _peer_versions() -> dict[str, str]:
    code = "import importlib.metadata as m;print(m.version('mlflow'), m.version('rlwatch'))"
    out = subprocess.run(
        [str(bench_peers.PEERS_PYTHON), "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return {"mlflow": out[0], "rlwatch": out[1]}


def _postgres_version(url: str | None) -> str:
    if not url:
        return "—"
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"') + f" ({platform.release()})"
    return f"{os.cpu_count()} cores, {cpu}, {os_name}"


def scrape_table(run_counts: list[int], steps: int, repeat: int) -> list[str]:
    lines = [
        "| active runs | exposition KiB | samples | median ms | p90 ms | load 1/5/15 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for runs in run_counts:
        with bench_scrape._database(None) as url:  # a fresh SQLite file
            bench_scrape.populate(url, runs, steps, 512)
            load = bench_peers.load_average()
            size, samples, timings, *_ = bench_scrape.bench(url, repeat)
        timings.sort()
        lines.append(
            f"| {runs} | {size / 1024:.0f} | {samples} | {statistics.median(timings):.1f} "
            f"| {timings[int(0.9 * (len(timings) - 1))]:.1f} | {load} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--steps", type=int, default=200, help="sharpwatch/rlwatch steps")
    parser.add_argument("--mlflow-steps", type=int, default=10, help="MLflow is ~100× slower")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.mlflow_steps, args.queries, args.repeat = 20, 2, 64, 1
        args.latency_samples = 10
    postgres_url = os.environ.get("SHARPWATCH_TEST_DATABASE_URL")
    redis_url = os.environ.get("SHARPWATCH_TEST_REDIS_URL")
    setup_peers()
    import service

    started = time.time()
    buffer = _Tee()
    with contextlib.redirect_stdout(buffer):
        peers = _peer_versions()
        print(f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on {machine()}.")
        print(
            f"Versions: Python {platform.python_version()}, sharpwatch {service.__version__}, "
            f"MLflow {peers['mlflow']}, rlwatch {peers['rlwatch']}, SQLite "
            f"{sqlite3.sqlite_version}, PostgreSQL {_postgres_version(postgres_url)}."
        )
        print(f"Command: `python benchmarks/run_all.py{' --quick' if args.quick else ''}`.")
        print()
        print(
            f"### Ingest ({args.queries} queries per step = "
            f"{bench_peers._workload.values_per_step(args.queries)} metric values per step; "
            f"median of {args.repeat})"
        )
        print()
        bench_peers.print_ingest(
            bench_peers.bench_ingest(
                args.steps,
                args.queries,
                repeat=args.repeat,
                postgres_url=postgres_url,
                mlflow_steps=args.mlflow_steps,
            )
        )
        print()
        print("### Detection-to-command latency (loopback)")
        print()
        bench_peers.print_latency(
            bench_peers.latency_setups(args.latency_samples, postgres_url, redis_url)
        )
        print()
        print("### Trainer overhead (examples/tiny_grpo.py step, B = 16, G = 8, CPU, 1 thread)")
        print()
        blocks, per_block = (2, 5) if args.quick else (6, 15)
        with (
            tempfile.TemporaryDirectory() as directory,
            bench_peers.sharpwatch_server(f"sqlite:///{Path(directory) / 'o.db'}") as url,
        ):
            load = bench_peers.load_average()
            bench_overhead.print_overhead(bench_overhead.bench_overhead(url, blocks, per_block))
            print(f"\nload 1/5/15 at start: {load}")
        print()
        print("### `/metrics` scrape cost against active runs (SQLite, in process)")
        print()
        counts = [1, 10] if args.quick else [1, 10, 50, 200]
        for line in scrape_table(counts, 5 if args.quick else 20, 5 if args.quick else 30):
            print(line)
        print()
        print(f"Total wall time {time.time() - started:.0f} s.")
    if args.out:
        args.out.write_text(buffer.getvalue())


if __name__ == "__main__":
    main()
