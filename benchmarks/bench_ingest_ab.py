"""Ingest before/after, interleaved: the per-request latency of two source trees side by side.

    git archive main | tar -x -C /tmp/before
    python benchmarks/bench_ingest_ab.py --before /tmp/before --steps 400 --queries 256
    python benchmarks/bench_ingest_ab.py --before /tmp/before --steps 400 --queries 512 --batch 10

On a shared, loaded machine a before-run then an after-run measure two different loads. Here
both trees are served at once (``sharpwatch serve`` subprocesses, 1 worker each, per backend)
and the steps of one run each go to them in alternating blocks of ``--block`` requests (one step
per request, the workload of ``bench_peers``; ``--batch`` steps per request), so both see the
same load. Each step's queries are sent in ``--shape`` (rows or columns; by default the shape
the trainer client sends), except to a tree that does not take columns (rows). Reported: the
median and p90 of the request latency (client send → response) per tree and backend, steps/s =
batch · 1000 / median, query rows/s = steps/s · queries, after/before, and the service process's
CPU time per request over the run (user + system, from ``/proc``; the database server's is not
in it), which a loaded machine disturbs far less than the latency.
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
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _workload  # noqa: E402
from bench_peers import (  # noqa: E402
    SERVER_PIDS,
    accepts_columns,
    client_shape,
    cpu_seconds,
    load_average,
    scratch_postgres,
    sharpwatch_server,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the source tree to compare")
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree measured as after")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1, help="steps per request")
    parser.add_argument("--block", type=int, default=10, help="requests per turn")
    parser.add_argument("--postgres-url", default=os.environ.get("SHARPWATCH_TEST_DATABASE_URL"))
    parser.add_argument(
        "--shape",
        choices=_workload.SHAPES,
        default=None,
        help="how each step's queries are sent (default: the shape the after tree's trainer "
        "client sends); a tree that does not take columns is sent rows",
    )
    args = parser.parse_args()
    shape = args.shape or client_shape()

    batches = [range(first, first + args.batch) for first in range(0, args.steps, args.batch)]
    bodies = {
        sent: [
            json.dumps(
                {"steps": [_workload.step_record_shaped(s, args.queries, sent) for s in steps]}
            ).encode()
            for steps in batches
        ]
        for sent in {shape, "rows"}
    }
    headers = {"content-type": "application/json"}
    print(
        "| backend | tree | queries as | requests | median ms | p90 ms "
        "| steps/s (batch · 1000 / median) | query rows/s | after / before "
        "| service CPU ms / request | rows / service CPU s | load 1/5/15 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    backends = ["sqlite"] + (["postgres"] if args.postgres_url else [])
    for backend in backends:
        with contextlib.ExitStack() as stack:
            urls = {}
            for label, tree in (("before", args.before), ("after", args.source)):
                if backend == "sqlite":
                    directory = stack.enter_context(tempfile.TemporaryDirectory())
                    database = f"sqlite:///{Path(directory) / 'ab.db'}"
                else:
                    database = stack.enter_context(scratch_postgres(args.postgres_url))
                urls[label] = stack.enter_context(sharpwatch_server(database, source=tree))
            clients = {
                k: stack.enter_context(httpx.Client(base_url=u, timeout=120))
                for k, u in urls.items()
            }
            paths = {}
            shapes = {k: shape if accepts_columns(u) else "rows" for k, u in urls.items()}
            for label, client in clients.items():
                run = client.post(
                    "/api/v1/runs", json={"name": f"ab-{uuid.uuid4().hex[:8]}", "group_size": 8}
                )
                run.raise_for_status()
                paths[label] = f"/api/v1/runs/{run.json()['id']}/steps"
            samples: dict[str, list[float]] = {"before": [], "after": []}
            cpu: dict[str, float | None] = {k: cpu_seconds(SERVER_PIDS[u]) for k, u in urls.items()}
            for start in range(0, len(batches), args.block):
                order = (
                    ("before", "after") if (start // args.block) % 2 == 0 else ("after", "before")
                )
                for label in order:
                    for body in bodies[shapes[label]][start : start + args.block]:
                        begin = time.perf_counter()
                        response = clients[label].post(paths[label], content=body, headers=headers)
                        samples[label].append(time.perf_counter() - begin)
                        if response.status_code != 200:
                            raise RuntimeError(f"{label}: {response.status_code} {response.text}")
            load = load_average()
            for label, url in urls.items():
                start_cpu, end_cpu = cpu[label], cpu_seconds(SERVER_PIDS[url])
                cpu[label] = None if start_cpu is None or end_cpu is None else end_cpu - start_cpu
            medians = {k: statistics.median(v) * 1000 for k, v in samples.items()}
            for label in ("before", "after"):
                p90 = statistics.quantiles(samples[label], n=10)[-1] * 1000
                ratio = medians["before"] / medians["after"] if label == "after" else 1.0
                steps_per_s = args.batch * 1000 / medians[label]
                used = cpu[label]
                requests = len(samples[label])
                rows = requests * args.batch * args.queries
                per_cpu = "—" if not used else f"{used * 1000 / requests:.1f} | {rows / used:,.0f}"
                print(
                    f"| {backend} | {label} | {shapes[label]} | {requests} "
                    f"| {medians[label]:.1f} "
                    f"| {p90:.1f} | {steps_per_s:.0f} | {steps_per_s * args.queries:,.0f} "
                    f"| {ratio:.2f}× | {per_cpu} | {load} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
