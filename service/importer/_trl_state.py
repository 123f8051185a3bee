"""TRL's (transformers') ``trainer_state.json``, read with the json module: ``log_history`` is
the list of every ``Trainer.log`` call, each a flat dict with ``step`` and ``epoch``; evaluation
logs (``eval_*``) share steps with training logs and are merged into them. The closing summary
(``train_runtime``, ``train_loss``...) is not a step's metric and is left out. The file holds no
wall times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.importer._model import LoggedRun, LogReadError

__all__ = ["is_trainer_state", "read_trl_state"]

_NOT_METRICS = frozenset(
    {
        "step",
        "epoch",
        "total_flos",
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
    }
)


def is_trainer_state(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("log_history"), list)


def read_trl_state(path: Path) -> LoggedRun:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LogReadError(f"{path}: not JSON ({exc})") from None
    if not is_trainer_state(state):
        raise LogReadError(f"{path}: not a trainer_state.json (no log_history list)")
    # <output_dir>/checkpoint-N/trainer_state.json: name the run after the output directory.
    parent = path.resolve().parent
    name = parent.parent.name if parent.name.startswith("checkpoint-") else parent.name
    run = LoggedRun(name=name or path.stem, format="trl-state", paths=[str(path)])
    for entry in state["log_history"]:
        if not isinstance(entry, dict):
            continue
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            continue
        for key, value in entry.items():
            if key in _NOT_METRICS:
                continue
            # TRL logs None for a metric with no valid value in the window (all NaN): absent.
            if isinstance(value, int | float) and not isinstance(value, bool):
                run.put(step, key, float(value))
    return run
