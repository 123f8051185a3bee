"""From a framework's metric names to ours (service/wire/metrics.py), and from a
:class:`LoggedRun` to the step records the service ingests.

The table covers TRL's ``GRPOTrainer`` (logged as-is in ``trainer_state.json``, with a
``train/`` prefix through transformers' TensorBoard and W&B callbacks) and veRL's
``compute_data_metrics`` / actor metrics. ``--map theirs=ours`` overrides any entry. What maps to
nothing is kept as an extra under its own (sanitised) name, so it is stored and charted but no
detector reads it.

Two readings are conditional:

- a batch's mean reward is its **success rate** only for 0/1 verifiable rewards, so ``reward``
  (TRL) and ``critic/score/mean`` (veRL) become ``success_rate`` only when every logged value
  lies in [0, 1]; otherwise they stay extras and the report says why;
- TRL's ``frac_reward_zero_std`` is the share of degenerate groups (all-fail plus all-pass,
  science.md §1); it keeps its name, which the ``degenerate_groups`` rule reads when the split
  is not reported.

NaN/inf of a metric a detector reads is sent as ``null`` and named in ``non_finite`` (the
``non_finite`` rule fires as it would have live); NaN/inf of an unmapped extra (TRL's
``completions/mean_terminated_length`` when nothing terminated) is left out and counted.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.importer._model import LoggedRun
from service.schemas.steps import MAX_METRICS_PER_STEP
from service.wire.metrics import STEP_METRIC_NAMES

__all__ = [
    "DEFAULT_NAMES",
    "DEGENERATE_FRACTION",
    "MappedRun",
    "map_run",
    "metric_name",
    "parse_override",
    "plan_names",
]

#: TRL's name for the share of groups whose rewards all agree (science.md §1).
DEGENERATE_FRACTION = "frac_reward_zero_std"

#: Framework key -> our metric name (keys of TRL logs are matched with and without ``train/``).
DEFAULT_NAMES: Mapping[str, str] = {
    # TRL GRPOTrainer (trl/trainer/grpo_trainer.py, _metrics[mode][...])
    "entropy": "entropy",
    "reward": "success_rate",
    "frac_reward_zero_std": DEGENERATE_FRACTION,
    "completions/mean_length": "response_length",
    "kl": "kl",
    "loss": "loss",
    "grad_norm": "grad_norm",
    # veRL (verl/trainer/ppo/metric_utils.py compute_data_metrics, actor update metrics)
    "actor/entropy": "entropy",
    "critic/score/mean": "success_rate",
    "response_length/mean": "response_length",
    "actor/kl_loss": "kl",
    "actor/pg_loss": "loss",
    "actor/grad_norm": "grad_norm",
}
#: Keys whose last path part names one of our §4 metrics (TTRL-style logs).
_SUFFIX_NAMES = {"reward_accuracy": "reward_accuracy", "label_accuracy": "label_accuracy"}
_BINARY_ONLY = frozenset({"success_rate"})
_DETECTOR_INPUTS = STEP_METRIC_NAMES | {DEGENERATE_FRACTION}
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.:/-]")
_MAX_NAME = 64


def metric_name(key: str) -> str:
    """A valid metric name for ``key`` (letters, digits, ``_.:/-``, at most 64 characters):
    other characters become ``_``; a longer name keeps its head and a short hash."""
    name = _BAD_CHARS.sub("_", key)
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = "_" + name
    if len(name) > _MAX_NAME:
        digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
        name = f"{name[: _MAX_NAME - 9]}_{digest}"
    return name


@dataclass(slots=True)
class MappedRun:
    """A run ready to send: step records in step order, and what the mapping decided."""

    steps: list[dict[str, Any]]
    #: logged key -> our name, for the keys a detector reads.
    mapped: dict[str, str]
    #: logged key -> extra name, for the rest.
    extras: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def present(self) -> frozenset[str]:
        """Our metric names observed (finite) at least once."""
        seen: set[str] = set()
        for record in self.steps:
            seen.update(k for k, v in record["metrics"].items() if v is not None)
        return frozenset(seen)


def _candidate(key: str) -> str | None:
    if key in STEP_METRIC_NAMES:
        return key
    for form in (key, key.removeprefix("train/")):
        if form in DEFAULT_NAMES:
            return DEFAULT_NAMES[form]
    last = key.rsplit("/", 1)[-1]
    return _SUFFIX_NAMES.get(last)


def _within_unit_interval(run: LoggedRun, key: str) -> bool:
    values = [v.get(key) for v in run.values.values()]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and all(0.0 <= v <= 1.0 for v in finite)


def plan_names(
    run: LoggedRun, overrides: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(mapped, extras, notes) for the run's keys; see the module docstring."""
    keys = sorted({key for values in run.values.values() for key in values})
    mapped: dict[str, str] = {}
    notes: list[str] = []
    taken: dict[str, str] = {}
    for key in keys:
        if key in overrides:
            mapped[key] = overrides[key]
            taken[overrides[key]] = key
    for key in keys:
        if key in mapped:
            continue
        target = _candidate(key)
        if target is None:
            continue
        if target in taken:
            notes.append(f"{key} not mapped to {target}: {taken[target]} already is")
            continue
        if target in _BINARY_ONLY and not _within_unit_interval(run, key):
            notes.append(
                f"{key} has values outside [0, 1], so it is not a 0/1 verifiable reward and "
                f"not read as the success rate (--map {key}=success_rate to insist)"
            )
            continue
        mapped[key] = target
        taken[target] = key
    extras: dict[str, str] = {}
    used = set(taken) | _DETECTOR_INPUTS
    for key in keys:
        if key in mapped:
            continue
        name = metric_name(key)
        while name in used:
            name = metric_name(f"logged/{name}")
        extras[key] = name
        used.add(name)
    room = MAX_METRICS_PER_STEP - len(mapped)
    if len(extras) > room:
        left_out = sorted(extras)[room:]
        for key in left_out:
            del extras[key]
        notes.append(
            f"{len(left_out)} unmapped metrics left out (a step holds at most "
            f"{MAX_METRICS_PER_STEP}): {', '.join(left_out[:5])}..."
        )
    return mapped, extras, notes


def map_run(run: LoggedRun, overrides: Mapping[str, str] | None = None) -> MappedRun:
    mapped, extras, notes = plan_names(run, overrides or {})
    dropped = 0
    steps: list[dict[str, Any]] = []
    for step in sorted(run.values):
        metrics: dict[str, float | None] = {}
        non_finite: list[str] = []
        for key, value in run.values[step].items():
            ours = mapped.get(key)
            if ours is not None:
                if math.isfinite(value):
                    metrics[ours] = value
                else:
                    metrics[ours] = None
                    non_finite.append(ours)
                continue
            extra = extras.get(key)
            if extra is None:
                continue
            if math.isfinite(value):
                metrics[extra] = value
            else:
                dropped += 1
        record: dict[str, Any] = {"step": step, "metrics": metrics}
        if non_finite:
            record["non_finite"] = sorted(non_finite)
        when = run.times.get(step)
        if when is not None:
            record["time"] = when.isoformat()
        steps.append(record)
    if dropped:
        notes.append(
            f"{dropped} NaN/inf values of unmapped metrics left out (no detector reads them)"
        )
    return MappedRun(steps=steps, mapped=mapped, extras=extras, notes=[*run.notes, *notes])


def parse_override(text: str) -> tuple[str, str]:
    """``theirs=ours`` from ``--map``; ``ours`` must be a valid metric name."""
    theirs, sep, ours = text.rpartition("=")
    if not sep or not theirs or not ours:
        raise ValueError(f"--map {text!r}: expected THEIRS=OURS, e.g. train/reward=success_rate")
    if not _NAME_OK.match(ours) or len(ours) > _MAX_NAME:
        raise ValueError(
            f"--map {text!r}: {ours!r} is not a metric name (letters, digits, _.:/-, "
            f"at most {_MAX_NAME} characters)"
        )
    return theirs, ours
