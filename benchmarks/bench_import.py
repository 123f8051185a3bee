"""Time ``sharpwatch import`` of a 10,000-step run, end to end: a veRL file-logger JSONL (30
metrics a line, veRL's key names) and a TRL-shaped TensorBoard log (8 scalars a step, written
by torch's SummaryWriter), each into ``sharpwatch serve`` (subprocess, fresh SQLite file by
default). The timed command is the CLI in its own process (interpreter start, reading, mapping,
upload in batches of 1000 with the detectors running on every step, the report); then the same
import again (every step a duplicate). The read alone is timed in this process.

    python benchmarks/bench_import.py --steps 10000
    python benchmarks/bench_import.py --steps 10000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_peers import load_average, scratch_postgres, sharpwatch_server  # noqa: E402

from service.importer import read_logs  # noqa: E402

VERL_KEYS = (
    "actor/entropy",
    "actor/kl_loss",
    "actor/pg_loss",
    "actor/pg_clipfrac",
    "actor/ppo_kl",
    "actor/grad_norm",
    "actor/lr",
    "critic/score/mean",
    "critic/score/max",
    "critic/score/min",
    "critic/rewards/mean",
    "critic/rewards/max",
    "critic/rewards/min",
    "critic/advantages/mean",
    "critic/advantages/max",
    "critic/advantages/min",
    "critic/returns/mean",
    "response_length/mean",
    "response_length/max",
    "response_length/min",
    "response_length/clip_ratio",
    "prompt_length/mean",
    "prompt_length/max",
    "prompt_length/min",
    "timing_s/gen",
    "timing_s/update_actor",
    "timing_s/step",
    "perf/throughput",
    "perf/total_num_tokens",
    "training/global_step",
)
TB_TAGS = (
    "train/entropy",
    "train/reward",
    "train/reward_std",
    "train/frac_reward_zero_std",
    "train/completions/mean_length",
    "train/kl",
    "train/loss",
    "train/grad_norm",
)


def _entropy(step: int) -> float:
    return 0.05 + 0.55 * math.exp(-step / 2000)


def write_verl(path: Path, steps: int) -> None:
    with path.open("w") as handle:
        for step in range(1, steps + 1):
            data = {key: 0.5 + (i % 7) * 0.01 for i, key in enumerate(VERL_KEYS)}
            data["actor/entropy"] = _entropy(step)
            handle.write(json.dumps({"step": step, "data": data}) + "\n")


def write_tensorboard(logdir: Path, steps: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    writer.add_text("args", json.dumps({"num_generations": 8, "beta": 0.0}))
    for step in range(1, steps + 1):
        for i, tag in enumerate(TB_TAGS):
            writer.add_scalar(tag, _entropy(step) if i == 0 else 0.4 + i * 0.01, step)
    writer.close()


def _server_cpu() -> float:
    """CPU seconds (user + system) so far of this process's ``sharpwatch serve`` child."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"serve" in cmdline:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def timed_import(path: Path, url: str, name: str) -> tuple[float, float, float]:
    """(wall seconds, the import process's CPU seconds, the server's CPU seconds)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = _server_cpu()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.cli", "import", str(path), "--url", url, "--name", name],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return wall, client, _server_cpu() - server


def _cell(timing: tuple[float, float, float]) -> str:
    wall, client, server = timing
    return f"{wall:.2f} s (CPU {client:.2f} + {server:.2f} s)"


@contextlib.contextmanager
def database(base: str | None, directory: Path, tag: str) -> Iterator[str]:
    if base is None:
        yield f"sqlite:///{directory / f'{tag}.db'}"
    else:
        with scratch_postgres(base) as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sw-bench-import-") as tmp:
        work = Path(tmp)
        logs = {"verl-jsonl": work / "run.jsonl", "tensorboard": work / "tb"}
        write_verl(logs["verl-jsonl"], args.steps)
        write_tensorboard(logs["tensorboard"], args.steps)
        store = "PostgreSQL" if args.database_url else "SQLite"
        print(f"{args.steps} steps, {store}, load average before {load_average()}")
        print(
            "| format | values | read only | import: wall (CPU import + serve) "
            "| re-import, all duplicates |"
        )
        print("| --- | --- | --- | --- | --- |")
        for fmt, path in logs.items():
            start = time.perf_counter()
            (run,) = read_logs([path], fmt)  # type: ignore[arg-type]
            read = time.perf_counter() - start
            values = sum(len(v) for v in run.values.values())
            with database(args.database_url, work, fmt) as db, sharpwatch_server(db) as url:
                first = timed_import(path, url, f"bench-{fmt}")
                again = timed_import(path, url, f"bench-{fmt}")
            print(f"| {fmt} | {values} | {read:.2f} s | {_cell(first)} | {_cell(again)} |")
        print(f"load average after {load_average()}")


if __name__ == "__main__":
    main()
