"""Which format a path is in, when ``--format`` is not given: by what the file holds, not only
its name."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from service.importer._model import Format, LogReadError
from service.importer._tensorboard import EVENT_FILE_PREFIX, event_dirs
from service.importer._trl_state import is_trainer_state
from service.importer._verl_jsonl import is_verl_line
from service.importer._wandb_csv import wandb_layout

__all__ = ["detect_format"]


def detect_format(path: Path) -> Format:
    if not path.exists():
        raise LogReadError(f"{path}: no such file or directory")
    if path.is_dir():
        # A TRL output directory may hold both: the event files carry wall times, prefer them.
        if event_dirs(path):
            return "tensorboard"
        if (path / "trainer_state.json").is_file() or any(
            path.glob("checkpoint-*/trainer_state.json")
        ):
            return "trl-state"
        raise LogReadError(
            f"{path}: a directory without TensorBoard event files or trainer_state.json; "
            "point at the files (or pass --format)"
        )
    if path.name.startswith(EVENT_FILE_PREFIX):
        return "tensorboard"
    head = _head(path)
    if path.suffix.lower() == ".csv" or head.lstrip().startswith('"'):
        header = next(csv.reader([head.splitlines()[0] if head else ""]), [])
        if wandb_layout(header) is not None:
            return "wandb-csv"
    stripped = head.lstrip()
    if stripped.startswith("{"):
        first_line = stripped.splitlines()[0]
        try:
            if is_verl_line(json.loads(first_line)):
                return "verl-jsonl"
        except ValueError:
            pass
        try:
            if is_trainer_state(json.loads(path.read_text(encoding="utf-8"))):
                return "trl-state"
        except ValueError:
            pass
    raise LogReadError(
        f"{path}: format not recognised (TensorBoard event file, W&B CSV export, veRL "
        "file-logger JSONL or trainer_state.json); pass --format"
    )


def _head(path: Path, size: int = 65536) -> str:
    with path.open("rb") as handle:
        return handle.read(size).decode("utf-8-sig", "replace")
