"""Side by side: sharpwatch against MLflow's tracking server and rlwatch, on one machine.

Building blocks of ``benchmarks/run_all.py`` (which prints the table); each part runs alone too:

    python benchmarks/bench_peers.py ingest --steps 100 --queries 256
    python benchmarks/bench_peers.py latency --samples 100

**Ingest.** The workload of ``benchmarks/_workload.py`` (definitions of a step record and of a
metric value are there). Every system gets the same records, bodies encoded before the clock
starts, sent one request at a time over one keep-alive connection (like a trainer's single sender
thread), on loopback:

- sharpwatch: ``sharpwatch serve`` in a subprocess (1 uvicorn worker), ``POST
  /api/v1/runs/{id}/steps`` with ``--batch`` step records per request; SQLite file or PostgreSQL.
- MLflow: ``mlflow server`` (SQLite backend store) from ``benchmarks/.peers-venv``, ``POST
  /api/2.0/mlflow/runs/log-batch``, each step's values split into calls of at most 1000 metrics
  (the documented limit of LogBatch), every metric with its step number.
- rlwatch: ``RLWatch.log_step`` in a subprocess of the peers' venv, in process (no network),
  into its own SQLite file. ``log_step`` takes a fixed set of named scalars (entropy,
  kl_divergence, loss, grad_norm, ...) and ``**extra_metrics``, which it stores as one JSON text
  per step (``metrics.extra_json``); it has no per-query rows, so the per-query fields go in as
  extras ``q/<query_id>/<field>`` (stored, but only as JSON text).

**Detection-to-command latency.** A run per sample; a real ``trainer_hooks`` ``CommandPoller``
long-polls ``GET /api/v1/runs/{id}/commands?wait=…``; the benchmark posts one step whose ``loss``
is non-finite (the ``non_finite`` rule fires at once and the service issues ``early_stop``) and
records when the ingest response arrived and when the poller handed the command to the trainer
(``request_stop``). Latency = held − response (negative: the command arrived before the ingest's
own response) and held − request sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _workload  # noqa: E402

PEERS_VENV = HERE / ".peers-venv"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"


# -- helpers ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def scratch_postgres(base_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the server of ``base_url``, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    name = f"sw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


#: The process id of each running ``sharpwatch_server``, by its URL (for CPU-time readings).
SERVER_PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sharpwatch_server(
    database_url: str, *, workers: int = 1, redis_url: str | None = None, source: Path = ROOT
) -> Iterator[str]:
    """``sharpwatch serve`` in a subprocess on a free loopback port; yields its base URL.
    ``source`` is the source tree to serve (another checkout, for before/after figures)."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        SHARPWATCH_DATABASE_URL=database_url,
        SHARPWATCH_HOST="127.0.0.1",
        SHARPWATCH_PORT=str(port),
        SHARPWATCH_WORKERS=str(workers),
        SHARPWATCH_LOG_LEVEL="warning",
        PYTHONPATH=str(source) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("SHARPWATCH_REDIS_URL", None)
    if redis_url:
        env["SHARPWATCH_REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SERVER_PIDS[url] = proc.pid
    try:
        wait_http(url + "/healthz", proc=proc)
        yield url
    finally:
        SERVER_PIDS.pop(url, None)
        stop(proc)


@contextlib.contextmanager
def mlflow_server(directory: Path) -> Iterator[str]:
    """``mlflow server`` from the peers' venv, SQLite backend store in ``directory``."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(PEERS_VENV / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{directory / 'mlflow.db'}",
            "--default-artifact-root",
            str(directory / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=180, proc=proc)
        yield url
    finally:
        stop(proc)


# -- ingest -----------------------------------------------------------------------------------
@dataclass
class IngestResult:
    system: str
    steps: int
    queries: int
    values: int
    requests: int
    seconds: float
    load: str
    note: str = ""
    repeats: list[float] = field(default_factory=list)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.steps * (1 + self.queries) / self.seconds

    @property
    def values_per_s(self) -> float:
        return self.values / self.seconds


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def client_shape() -> str:
    """The shape of ``queries`` the trainer client of this tree sends (``rows`` or
    ``columns``): what an ingest benchmark sends by default."""
    from trainer_hooks._record import build_queries

    built = build_queries({"q_size": [8.0], "q_successes": [1.0]}, None, 1)
    return "columns" if isinstance(built, dict) else "rows"


def accepts_columns(url: str) -> bool:
    """Whether the service at ``url`` takes ``queries`` as columns (a tree from before issue
    21's columnar shape does not: it is sent rows)."""
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return "QueryColumns" in document.get("components", {}).get("schemas", {})


def ingest_sharpwatch(
    url: str,
    steps: int,
    queries: int,
    *,
    batch: int = 1,
    name: str | None = None,
    shape: str = "rows",
) -> tuple[float, int, int]:
    """Register a run and post ``steps`` records, ``batch`` per request, their queries in
    ``shape``; (seconds, values, requests). Bodies are encoded before the clock starts."""
    records = [_workload.step_record_shaped(s, queries, shape) for s in range(steps)]
    values = sum(_workload.count_values(r) for r in records)
    bodies = [_dumps({"steps": records[i : i + batch]}) for i in range(0, len(records), batch)]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120.0) as client:
        run = client.post(
            "/api/v1/runs",
            json={"name": name or f"bench-{uuid.uuid4().hex[:8]}", "group_size": 8},
        )
        run.raise_for_status()
        path = f"/api/v1/runs/{run.json()['id']}/steps"
        start = time.perf_counter()
        for body in bodies:
            response = client.post(path, content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"sharpwatch answered {response.status_code}: {response.text}")
        seconds = time.perf_counter() - start
        page = client.get(path, params={"limit": 1, "from": steps - 1}).json()
        accepted = page["items"] if "items" in page else page["steps"]  # older trees: "steps"
        if not accepted or accepted[0]["step"] != steps - 1:
            raise RuntimeError("sharpwatch did not store the last step")
    return seconds, values, len(bodies)


def ingest_mlflow(url: str, steps: int, queries: int) -> tuple[float, int, int]:
    """Create an experiment and run, then log every value with ``runs/log-batch`` (≤ 1000
    metrics per call); (seconds, values, requests)."""
    records = [_workload.step_record(s, queries) for s in range(steps)]
    timestamp = int(time.time() * 1000)
    with httpx.Client(base_url=url, timeout=300.0) as client:
        experiment = client.post(
            "/api/2.0/mlflow/experiments/create", json={"name": f"bench-{uuid.uuid4().hex[:8]}"}
        )
        experiment.raise_for_status()
        run = client.post(
            "/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment.json()["experiment_id"], "start_time": timestamp},
        )
        run.raise_for_status()
        run_id = run.json()["run"]["info"]["run_id"]
        bodies: list[bytes] = []
        values = 0
        for record in records:
            metrics = _workload.mlflow_metrics(record, timestamp)
            values += len(metrics)
            for i in range(0, len(metrics), 1000):
                bodies.append(_dumps({"run_id": run_id, "metrics": metrics[i : i + 1000]}))
        headers = {"content-type": "application/json"}
        start = time.perf_counter()
        for body in bodies:
            response = client.post("/api/2.0/mlflow/runs/log-batch", content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"MLflow answered {response.status_code}: {response.text}")
        seconds = time.perf_counter() - start
        check = client.get(
            "/api/2.0/mlflow/metrics/get-history",
            params={"run_id": run_id, "metric_key": "q/q000000/entropy"},
        ).json()
        if len(check.get("metrics", [])) != steps:
            raise RuntimeError("MLflow did not store every step")
    return seconds, values, len(bodies)


def ingest_rlwatch(steps: int, queries: int) -> dict[str, Any]:
    """``RLWatch.log_step`` per step in the peers' venv (see ``_rlwatch_ingest.py``)."""
    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run(
            [
                str(PEERS_PYTHON),
                str(HERE / "_rlwatch_ingest.py"),
                "--steps",
                str(steps),
                "--queries",
                str(queries),
                "--dir",
                directory,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median_run(
    fn: Any, repeat: int, *args: Any, **kwargs: Any
) -> tuple[float, int, int, list[float]]:
    times: list[float] = []
    values = requests = 0
    for _ in range(repeat):
        seconds, values, requests = fn(*args, **kwargs)
        times.append(seconds)
    return statistics.median(times), values, requests, times


def bench_ingest(
    steps: int,
    queries: int,
    *,
    repeat: int = 3,
    batch: int = 1,
    postgres_url: str | None = None,
    peers: bool = True,
    mlflow_steps: int | None = None,
    source: Path = ROOT,
    shape: str = "rows",
) -> list[IngestResult]:
    results: list[IngestResult] = []
    with tempfile.TemporaryDirectory() as directory:
        base = Path(directory)
        # sharpwatch on SQLite (a fresh file per repeat would be fairer to the first run; one file
        # with a new run per repeat is what a live service sees).
        with sharpwatch_server(f"sqlite:///{base / 'sharpwatch.db'}", source=source) as url:
            sent = shape if accepts_columns(url) else "rows"
            ingest_sharpwatch(url, 5, queries, batch=batch, shape=sent)  # warm-up
            load = load_average()
            seconds, values, requests, times = _median_run(
                ingest_sharpwatch, repeat, url, steps, queries, batch=batch, shape=sent
            )
            results.append(
                IngestResult(
                    "sharpwatch (SQLite)",
                    steps,
                    queries,
                    values,
                    requests,
                    seconds,
                    load,
                    f"HTTP, {batch} step/request, queries as {sent}, 1 worker",
                    times,
                )
            )
        if postgres_url:
            with scratch_postgres(postgres_url) as pg, sharpwatch_server(pg, source=source) as url:
                sent = shape if accepts_columns(url) else "rows"
                ingest_sharpwatch(url, 5, queries, batch=batch, shape=sent)
                load = load_average()
                seconds, values, requests, times = _median_run(
                    ingest_sharpwatch, repeat, url, steps, queries, batch=batch, shape=sent
                )
                results.append(
                    IngestResult(
                        "sharpwatch (PostgreSQL)",
                        steps,
                        queries,
                        values,
                        requests,
                        seconds,
                        load,
                        f"HTTP, {batch} step/request, queries as {sent}, 1 worker",
                        times,
                    )
                )
        if peers:
            m_steps = mlflow_steps or steps
            with mlflow_server(base) as url:
                ingest_mlflow(url, 2, queries)  # warm-up
                load = load_average()
                seconds, values, requests, times = _median_run(
                    ingest_mlflow, repeat, url, m_steps, queries
                )
                results.append(
                    IngestResult(
                        "MLflow (SQLite)",
                        m_steps,
                        queries,
                        values,
                        requests,
                        seconds,
                        load,
                        "HTTP log-batch, ≤ 1000 metrics/request, 1 worker",
                        times,
                    )
                )
            times = []
            values = 0
            load = load_average()
            for _ in range(repeat):
                r = ingest_rlwatch(steps, queries)
                times.append(r["seconds"])
                values = r["values"]
            results.append(
                IngestResult(
                    "rlwatch (SQLite)",
                    steps,
                    queries,
                    values,
                    steps,
                    statistics.median(times),
                    load,
                    "in process, no network; per-query values as JSON extras",
                    times,
                )
            )
    return results


def print_ingest(results: Sequence[IngestResult]) -> None:
    mlflow = next((r for r in results if r.system.startswith("MLflow")), None)
    print(
        "| system | steps × queries | requests | seconds (median) | steps/s | rows/s | values/s "
        "| × MLflow values/s | load 1/5/15 | how |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ratio = f"{r.values_per_s / mlflow.values_per_s:.1f}×" if mlflow else "—"
        print(
            f"| {r.system} | {r.steps} × {r.queries} | {r.requests} | {r.seconds:.2f} "
            f"| {r.steps_per_s:,.0f} | {r.rows_per_s:,.0f} | {r.values_per_s:,.0f} | {ratio} "
            f"| {r.load} | {r.note} |"
        )


# -- detection-to-command latency ---------------------------------------------------------------
class _Trainer:
    """The command target: records when the early_stop reached the trainer."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.held_at = 0.0
        self.last_step: int | None = 0

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: Any = None) -> None:
        pass

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        self.held_at = time.perf_counter()
        self.held.set()


@dataclass
class LatencyResult:
    setup: str
    samples: int
    from_response_ms: list[float]
    from_send_ms: list[float]
    load: str


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def bench_latency(url: str, samples: int, setup: str) -> LatencyResult:
    from trainer_hooks._commands import CommandPoller

    from_response: list[float] = []
    from_send: list[float] = []
    load = load_average()
    body = _dumps(
        {"steps": [{"step": 0, "metrics": {"entropy": 1.5, "loss": None}, "non_finite": ["loss"]}]}
    )
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(samples):
            run = client.post(
                "/api/v1/runs", json={"name": f"lat-{uuid.uuid4().hex[:8]}-{i}", "group_size": 8}
            )
            run.raise_for_status()
            run_id = run.json()["id"]
            trainer = _Trainer()
            poller = CommandPoller(url, run_id, trainer, wait=20.0).start()
            try:
                time.sleep(0.15)  # the long-poll is waiting on the service
                sent = time.perf_counter()
                response = client.post(
                    f"/api/v1/runs/{run_id}/steps", content=body, headers=headers
                )
                answered = time.perf_counter()
                response.raise_for_status()
                if not trainer.held.wait(10.0):
                    raise RuntimeError(f"run {run_id}: the trainer never got the early_stop")
                from_response.append((trainer.held_at - answered) * 1000)
                from_send.append((trainer.held_at - sent) * 1000)
            finally:
                poller.close(timeout=1.0)
    return LatencyResult(setup, samples, from_response, from_send, load)


def latency_setups(
    samples: int, postgres_url: str | None, redis_url: str | None
) -> list[LatencyResult]:
    results: list[LatencyResult] = []
    with (
        tempfile.TemporaryDirectory() as directory,
        sharpwatch_server(f"sqlite:///{Path(directory) / 'lat.db'}") as url,
    ):
        bench_latency(url, 3, "warm-up")
        results.append(bench_latency(url, samples, "SQLite, 1 worker, in-process broker"))
    if postgres_url and redis_url:
        with (
            scratch_postgres(postgres_url) as pg,
            sharpwatch_server(pg, workers=2, redis_url=redis_url) as url,
        ):
            bench_latency(url, 3, "warm-up")
            results.append(bench_latency(url, samples, "PostgreSQL, 2 workers, Redis broker"))
    return results


def print_latency(results: Sequence[LatencyResult]) -> None:
    print(
        "| setup | samples | p50 ms (from ingest response) | p99 ms (from ingest response) "
        "| p50 ms (from request sent) | p99 ms (from request sent) | load 1/5/15 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.setup} | {r.samples} | {_pct(r.from_response_ms, 0.5):.1f} "
            f"| {_pct(r.from_response_ms, 0.99):.1f} | {_pct(r.from_send_ms, 0.5):.1f} "
            f"| {_pct(r.from_send_ms, 0.99):.1f} | {r.load} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    ing = sub.add_parser("ingest")
    ing.add_argument("--steps", type=int, default=100)
    ing.add_argument("--queries", type=int, default=256)
    ing.add_argument("--batch", type=int, default=1)
    ing.add_argument("--repeat", type=int, default=3)
    ing.add_argument("--postgres-url", default=os.environ.get("SHARPWATCH_TEST_DATABASE_URL"))
    ing.add_argument("--no-peers", action="store_true")
    ing.add_argument("--mlflow-steps", type=int, default=None)
    ing.add_argument("--source", type=Path, default=ROOT, help="source tree of sharpwatch to serve")
    ing.add_argument(
        "--shape",
        choices=_workload.SHAPES,
        default=None,
        help="how each step's queries are sent (default: the shape this tree's trainer client "
        "sends); a tree that does not take columns is sent rows",
    )
    ing.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another source tree (e.g. `git archive main`) measured first, in the same run",
    )
    lat = sub.add_parser("latency")
    lat.add_argument("--samples", type=int, default=100)
    lat.add_argument("--postgres-url", default=os.environ.get("SHARPWATCH_TEST_DATABASE_URL"))
    lat.add_argument("--redis-url", default=os.environ.get("SHARPWATCH_TEST_REDIS_URL"))
    args = parser.parse_args()
    if args.part == "ingest":
        shape = args.shape or client_shape()
        before: list[IngestResult] = []
        if args.before is not None:
            before = bench_ingest(
                args.steps,
                args.queries,
                repeat=args.repeat,
                batch=args.batch,
                postgres_url=args.postgres_url,
                peers=False,
                source=args.before,
                shape=shape,
            )
            for r in before:
                r.system += " before"
        print_ingest(
            before
            + bench_ingest(
                args.steps,
                args.queries,
                repeat=args.repeat,
                batch=args.batch,
                postgres_url=args.postgres_url,
                peers=not args.no_peers,
                mlflow_steps=args.mlflow_steps,
                source=args.source,
                shape=shape,
            )
        )
    else:
        print_latency(latency_setups(args.samples, args.postgres_url, args.redis_url))


if __name__ == "__main__":
    main()
