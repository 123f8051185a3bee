"""The step record the detectors read: one trainer step's metrics, as stored by the service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.wire.finite import is_finite
from service.wire.step import STEP_RECORD_FIELDS

__all__ = ["StepRecord"]


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One ingested step: the detectors' view of the wire's step record
    (:class:`service.wire.step.StepRecord`), without its per-query rows.

    ``metrics`` maps standard metric names (``entropy``, ``success_rate``, ...) to a float or
    ``None``; absent names mean "not reported". ``non_finite`` lists the metrics the trainer saw
    as NaN/inf. Detectors treat a metric as *observed* only when it is present, not ``None``,
    finite and not listed in ``non_finite`` (see :meth:`value`).
    """

    step: int
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    non_finite: frozenset[str] = frozenset()

    def value(self, name: str) -> float | None:
        """The metric as a finite float, or ``None`` when missing, ``None`` or non-finite."""
        v = self.metrics.get(name)
        if v is None or not is_finite(v):
            return None
        if self.non_finite and name in self.non_finite:
            return None
        return float(v)

    def non_finite_names(self) -> tuple[str, ...]:
        """Sorted names reported non-finite, plus any metric whose value is itself NaN/inf."""
        names = set(self.non_finite)
        for k, v in self.metrics.items():
            if v is not None and not is_finite(v):
                names.add(k)
        return tuple(sorted(names))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StepRecord:
        """Build a record from a wire record (``{"step": int, "metrics": {...}, "non_finite":
        [...], ...}``) or from a flat ``{"step": int, "entropy": 0.4, ...}`` dict (every key that
        is not a field of the wire's step record is a metric). Values must be numbers or
        ``None``; ``bool`` is rejected."""
        if "step" not in data:
            raise ValueError("step record has no 'step'")
        step = data["step"]
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"step must be an int, got {step!r}")
        raw = (
            data["metrics"]
            if "metrics" in data
            else {k: v for k, v in data.items() if k not in STEP_RECORD_FIELDS}
        )
        if not isinstance(raw, Mapping):
            raise ValueError("metrics must be a mapping")
        metrics: dict[str, float | None] = {}
        for k, v in raw.items():
            if v is None:
                metrics[str(k)] = None
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"metric {k!r} must be a number or null, got {v!r}")
            else:
                metrics[str(k)] = float(v)
        nf = data.get("non_finite") or ()
        if isinstance(nf, str) or not all(isinstance(n, str) for n in nf):
            raise ValueError("non_finite must be a list of metric names")
        return cls(step=step, metrics=metrics, non_finite=frozenset(nf))
