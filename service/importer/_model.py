"""What every reader produces: a past run's logged curves, keyed by step, in the framework's own
metric names (the mapping to ours happens afterwards, in ``_mapping``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["FORMATS", "Format", "LogReadError", "LoggedRun"]

Format = Literal["tensorboard", "wandb-csv", "verl-jsonl", "trl-state"]
FORMATS: tuple[Format, ...] = ("tensorboard", "wandb-csv", "verl-jsonl", "trl-state")


class LogReadError(Exception):
    """A file that cannot be imported; the message names the file and what to do."""


@dataclass(slots=True)
class LoggedRun:
    """One run as its framework logged it. ``values[step][key]`` is a float (NaN/inf kept as
    logged: they become ``non_finite``); ``times[step]`` the wall time the step was logged, when
    the format records one; ``hints`` what the logs say about the run (``group_size``,
    ``kl_beta``), e.g. from the training arguments TRL writes into its event files."""

    name: str
    format: Format
    paths: list[str]
    values: dict[int, dict[str, float]] = field(default_factory=dict)
    times: dict[int, datetime] = field(default_factory=dict)
    hints: dict[str, float] = field(default_factory=dict)
    #: What the reader skipped and why (non-numeric values, negative steps...).
    notes: list[str] = field(default_factory=list)

    def put(self, step: int, key: str, value: float, time: datetime | None = None) -> None:
        self.values.setdefault(step, {})[key] = value
        if time is not None:
            previous = self.times.get(step)
            if previous is None or time > previous:
                self.times[step] = time
