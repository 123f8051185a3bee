"""Past runs' logs for the import tests, written by the real tools where they run here
(TensorBoard's SummaryWriter, TRL) and in the tools' documented layouts otherwise."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

FLOOR = 0.10
WINDOW = 5


def collapsing_entropy(steps: int) -> list[float]:
    """Entropy falling 0.012 nats a step from 0.6 to a 0.02 floor: crosses 0.10 at step 42."""
    return [max(0.02, 0.6 - 0.012 * s) for s in range(steps)]


def expected_floor_step(entropy: list[float], floor: float = FLOOR, window: int = WINDOW) -> int:
    """The first step whose last ``window`` values are all below ``floor`` (the float64
    reference of entropy_floor's window semantics)."""
    for step in range(window - 1, len(entropy)):
        if all(v < floor for v in entropy[step - window + 1 : step + 1]):
            return step
    raise AssertionError("the curve never stays below the floor")


def write_summary_writer_run(logdir: Path, steps: int = 60, group_size: int = 4) -> list[float]:
    """A TRL-shaped collapsing run written by torch's SummaryWriter (transformers'
    TensorBoard callback: ``train/`` prefix, the training arguments as the text ``args``).
    Returns the entropy as TensorBoard stores it (float32)."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    entropy = collapsing_entropy(steps)
    writer = SummaryWriter(str(logdir))
    writer.add_text("args", json.dumps({"num_generations": group_size, "beta": 0.04}))
    for step, ent in enumerate(entropy):
        writer.add_scalar("train/entropy", ent, step)
        writer.add_scalar("train/reward", 0.3 + 0.004 * step, step)
        writer.add_scalar("train/frac_reward_zero_std", 0.25, step)
        writer.add_scalar("train/completions/mean_length", 40.0 - 0.1 * step, step)
        writer.add_scalar("train/completions/mean_terminated_length", math.nan, step)
        writer.add_scalar("train/learning_rate", 1e-6, step)
    writer.close()
    return [float(np.float32(v)) for v in entropy]


def write_wandb_chart_csv(path: Path, runs: dict[str, dict[int, float]], metric: str) -> None:
    """A W&B chart's Export CSV: ``Step``, then per run ``<run> - <metric>`` with its
    ``__MIN``/``__MAX`` spread columns, every field quoted, empty where a run has no point."""
    steps = sorted({s for points in runs.values() for s in points})
    header = ["Step"]
    for run in runs:
        header += [f"{run} - {metric}", f"{run} - {metric}__MIN", f"{run} - {metric}__MAX"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for step in steps:
            row: list[Any] = [step]
            for points in runs.values():
                value = points.get(step)
                row += ["", "", ""] if value is None else [value, value - 0.01, value + 0.01]
            writer.writerow(row)


def write_verl_lines(path: Path, records: list[tuple[int, dict[str, Any]]]) -> None:
    """veRL's FileLogger lines: ``{"step": step, "data": data}``, one per Tracking.log call
    (orjson writes NaN as null; json with allow_nan=False mirrors that via None here)."""
    with path.open("w") as handle:
        for step, data in records:
            handle.write(json.dumps({"step": step, "data": data}, allow_nan=False) + "\n")
