"""rlwatch's half of the ingest benchmark; runs in benchmarks/.peers-venv (see bench_peers.py).

Feeds the shared workload to ``RLWatch.log_step`` (detectors + one SQLite INSERT and COMMIT per
step into its own ``metrics.db``). Named arguments where rlwatch has a column (entropy,
kl_divergence, loss, grad_norm); every other step metric and every per-query field as
``**extra_metrics`` (rlwatch stores them as one JSON text per step). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _workload

NAMED = {"entropy": "entropy", "kl": "kl_divergence", "loss": "loss", "grad_norm": "grad_norm"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--queries", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)

    import rlwatch

    monitor = rlwatch.attach(framework="manual", run_id="bench", storage={"log_dir": args.dir})
    records = [_workload.step_record(s, args.queries) for s in range(args.steps)]
    calls = []
    values = 0
    for record in records:
        kwargs = {}
        for name, value in record["metrics"].items():
            kwargs[NAMED.get(name, name)] = value
        for row in record["queries"]:
            for field in _workload.QUERY_FIELDS:
                kwargs[f"q/{row['query_id']}/{field}"] = row[field]
        values += _workload.count_values(record)
        calls.append((record["step"], kwargs))
    start = time.perf_counter()
    for step, kwargs in calls:
        monitor.log_step(step, **kwargs)
    seconds = time.perf_counter() - start
    db = Path(args.dir) / "metrics.db"
    stored = sqlite3.connect(db).execute("SELECT count(*) FROM metrics").fetchone()[0]
    monitor.stop()
    assert stored == args.steps, f"rlwatch stored {stored} of {args.steps} steps"
    print(
        json.dumps(
            {
                "seconds": seconds,
                "values": values,
                "steps": args.steps,
                "version": getattr(rlwatch, "__version__", "?"),
            }
        )
    )


if __name__ == "__main__":
    main()
