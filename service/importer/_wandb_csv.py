"""W&B CSV exports, read with the csv module. Two layouts:

- a chart's **Export CSV** (the panel menu): a ``Step`` column, then for each run shown
  ``"<run> - <metric>"`` with its ``"<run> - <metric>__MIN"`` and ``__MAX`` (the spread of
  W&B's bucketed points, skipped here), empty where a run has no value at that step. One file
  per chart, so a run's metrics usually come in several files: they are merged by run name;
- a run's history saved from the public API (``run.history().to_csv()`` or ``scan_history``):
  ``_step``, optionally ``_timestamp`` (Unix seconds) and ``_runtime``, then one column per
  metric. The run is named after the file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from service.importer._model import LoggedRun, LogReadError

__all__ = ["read_wandb_csv", "wandb_layout"]

_SPREAD_SUFFIXES = ("__MIN", "__MAX")
_HISTORY_BOOKKEEPING = frozenset({"_step", "_timestamp", "_runtime", "_wandb", ""})


def wandb_layout(header: list[str]) -> str | None:
    """``chart``, ``history`` or None for a header that is neither W&B layout."""
    if header and header[0] == "Step" and any(" - " in column for column in header[1:]):
        return "chart"
    if "_step" in header:
        return "history"
    return None


def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)  # "NaN" and "Infinity" come back as non-finite values
    except ValueError:
        return None


def read_wandb_csv(paths: list[Path]) -> list[LoggedRun]:
    """The runs in the given CSV files, merged by run name across files."""
    runs: dict[str, LoggedRun] = {}
    for path in paths:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise LogReadError(f"{path}: the file is empty")
            layout = wandb_layout(header)
            if layout is None:
                raise LogReadError(
                    f"{path}: not a W&B export: expected a 'Step' column and '<run> - <metric>' "
                    "columns (a chart's Export CSV with Step on the x axis), or a '_step' column "
                    "(a run's history)"
                )
            if layout == "chart":
                _read_chart(path, header, reader, runs)
            else:
                _read_history(path, header, reader, runs)
    return list(runs.values())


def _run(runs: dict[str, LoggedRun], name: str, path: Path) -> LoggedRun:
    run = runs.get(name)
    if run is None:
        run = runs[name] = LoggedRun(name=name, format="wandb-csv", paths=[])
    if str(path) not in run.paths:
        run.paths.append(str(path))
    return run


def _step(path: Path, line: int, text: str) -> int | None:
    value = _number(text)
    if value is None or not math.isfinite(value) or value != int(value):
        raise LogReadError(f"{path}:{line}: step {text!r} is not a whole number")
    return int(value) if value >= 0 else None


def _read_chart(
    path: Path, header: list[str], reader: Iterator[list[str]], runs: dict[str, LoggedRun]
) -> None:
    columns: list[tuple[int, LoggedRun, str]] = []
    for index, column in enumerate(header[1:], start=1):
        if column.endswith(_SPREAD_SUFFIXES) or " - " not in column:
            continue
        run_name, metric = column.rsplit(" - ", 1)
        columns.append((index, _run(runs, run_name, path), metric))
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        step = _step(path, line, row[0])
        if step is None:
            continue
        for index, run, metric in columns:
            value = _number(row[index]) if index < len(row) else None
            if value is not None:
                run.put(step, metric, value)


def _read_history(
    path: Path, header: list[str], reader: Iterator[list[str]], runs: dict[str, LoggedRun]
) -> None:
    run = _run(runs, path.stem, path)
    step_at = header.index("_step")
    time_at = header.index("_timestamp") if "_timestamp" in header else None
    metrics = [
        (index, column)
        for index, column in enumerate(header)
        if column not in _HISTORY_BOOKKEEPING and not column.startswith("Unnamed")
    ]
    for line, row in enumerate(reader, start=2):
        if not row or step_at >= len(row) or not row[step_at].strip():
            continue
        step = _step(path, line, row[step_at])
        if step is None:
            continue
        when = None
        if time_at is not None and time_at < len(row):
            stamp = _number(row[time_at])
            if stamp is not None and math.isfinite(stamp):
                when = datetime.fromtimestamp(stamp, tz=UTC)
        for index, column in metrics:
            value = _number(row[index]) if index < len(row) else None
            if value is not None:
                run.put(step, column, value, when)
