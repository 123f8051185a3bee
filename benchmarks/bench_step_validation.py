"""CPU of the ingest's Python work per request, without HTTP or the database (issue 14).

For each source tree given, in a subprocess importing that tree: the body's JSON parse
(``body_guard.parse_json``), ``StepBatchIn`` validation, each step's content hash, its query
histograms and its insert tuples (``storage.steps._query_tuples``). Reported: the best of
``--repeat`` process-CPU times, for one 256-query step (what a trainer sends each step) and for a
batch of 10 steps × 2000 queries.

    python benchmarks/bench_step_validation.py --source /tmp/before --source .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKLOADS = {"1 step x 256 queries": (1, 256, 300), "10 steps x 2000 queries": (10, 2000, 10)}


def _query(index: int) -> dict[str, Any]:
    return {
        "query_id": f"gsm8k/train/{index:06d}",
        "group_size": 8,
        "successes": index % 9,
        "entropy": 0.1 + index / 7,
        "log_zprime": -0.25 + index / 1e5,
        "log_zprime_raw": -0.5,
        "n_modes": index % 5,
        "reward_accuracy": 0.75,
        "response_length": 123.5 + index,
    }


def _body(steps: int, queries: int) -> bytes:
    records = [
        {
            "step": step,
            "time": "2026-12-02T10:00:00Z",
            "metrics": {"entropy": 0.5, "alpha": 1.0},
            "queries": [_query(i) for i in range(queries)],
        }
        for step in range(steps)
    ]
    return json.dumps({"steps": records}).encode()


def measure(repeat_scale: float) -> dict[str, float]:
    """Run inside the tree under test (its ``service`` on the path)."""
    from service import query_histograms
    from service.body_guard import parse_json
    from service.schemas.steps import StepBatchIn
    from service.storage import steps as storage_steps

    results: dict[str, float] = {}
    for name, (steps, queries, repeat) in WORKLOADS.items():
        body = _body(steps, queries)
        best = float("inf")
        for _ in range(max(1, int(repeat * repeat_scale))):
            start = time.process_time()
            batch = StepBatchIn.model_validate(parse_json(body))
            for record in batch.steps:
                record.content_hash()
                query_histograms.summarize(record.queries)
            for _row in storage_steps._query_tuples(1, batch.steps):
                pass
            del batch
            best = min(best, time.process_time() - start)
        results[name] = best * 1e3
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the trees")
    parser.add_argument("--repeat-scale", type=float, default=1.0)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(measure(args.repeat_scale)))
        return
    for _ in range(args.rounds):
        for source in args.source:
            env = {**os.environ, "PYTHONPATH": str(source.resolve())}
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--inside",
                    "--source",
                    str(source),
                    "--repeat-scale",
                    str(args.repeat_scale),
                ],
                env=env,
                cwd=source,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            cpu = {k: round(v, 2) for k, v in json.loads(out).items()}
            print(json.dumps({"source": str(source), "cpu_ms_best": cpu}))


if __name__ == "__main__":
    main()
