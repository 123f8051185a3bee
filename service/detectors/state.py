"""The small per-run detector state the service persists between steps (JSON-serialisable).

Shape of :meth:`DetectorState.to_json` (version 1)::

    {
      "version": 1,
      "last_step": 412,                      # newest step evaluated; older/equal steps are skipped
      "peak": {"metric": "gt_reward", "value": 0.61, "step": 380},   # or null
      "model_collapse_step": null,           # first step reward accuracy < threshold, once found
      "last_resolved": {"entropy_slope": 300},   # rule -> step its last alert resolved (cooldown)
      "clear_streak": {"entropy_floor": 2},  # open alert -> clear evaluations in a row so far
                                             # (resolve_after); absent in older documents
      "alpha_last_adjust_step": 350,         # or null; α-controller cooldown
      "alpha_baseline": 1.0                  # or null; the α the controller relaxes back to:
                                             # the run's first α, then the operator's last pin
                                             # (absent in older documents)
    }
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["STATE_VERSION", "DetectorState", "Peak"]

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Peak:
    """Running peak of the (smoothed) rise-then-fall metric."""

    metric: str
    value: float
    step: int


@dataclass(frozen=True, slots=True)
class DetectorState:
    """Immutable; every stage returns a new one. Start a run with ``DetectorState()``."""

    last_step: int | None = None
    peak: Peak | None = None
    model_collapse_step: int | None = None
    last_resolved: Mapping[str, int] = field(default_factory=dict)
    alpha_last_adjust_step: int | None = None
    clear_streak: Mapping[str, int] = field(default_factory=dict)
    alpha_baseline: float | None = None

    def with_resolved(self, resolved: Mapping[str, int]) -> DetectorState:
        """A copy with ``resolved`` (rule -> step) merged into ``last_resolved``."""
        if not resolved:
            return self
        merged = dict(self.last_resolved)
        merged.update(resolved)
        return replace(self, last_resolved=merged)

    def with_clear_streaks(self, streaks: Mapping[str, int]) -> DetectorState:
        """A copy whose ``clear_streak`` is ``streaks`` (rules with a streak of 0 dropped)."""
        kept = {rule: n for rule, n in streaks.items() if n > 0}
        if kept == dict(self.clear_streak):
            return self
        return replace(self, clear_streak=kept)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (see the module docstring)."""
        return {
            "version": STATE_VERSION,
            "last_step": self.last_step,
            "peak": None
            if self.peak is None
            else {"metric": self.peak.metric, "value": self.peak.value, "step": self.peak.step},
            "model_collapse_step": self.model_collapse_step,
            "last_resolved": {k: self.last_resolved[k] for k in sorted(self.last_resolved)},
            "alpha_last_adjust_step": self.alpha_last_adjust_step,
            "clear_streak": {k: self.clear_streak[k] for k in sorted(self.clear_streak)},
            "alpha_baseline": self.alpha_baseline,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> DetectorState:
        """Inverse of :meth:`to_json`; ``None`` or ``{}`` gives a fresh state. Raises ValueError on
        a malformed document or another version. Unknown rule names in ``last_resolved`` are
        dropped (a rule removed in a later release must not break old runs)."""
        if not data:
            return cls()
        version = data.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ValueError(f"unsupported detector state version {version!r}")
        peak_raw = data.get("peak")
        peak: Peak | None = None
        if peak_raw is not None:
            if not isinstance(peak_raw, Mapping):
                raise ValueError("peak must be an object or null")
            value = peak_raw.get("value")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("peak.value must be a number")
            if not math.isfinite(value):
                raise ValueError("peak.value must be finite")
            peak = Peak(
                metric=str(peak_raw.get("metric", "")),
                value=float(value),
                step=_int(peak_raw.get("step"), "peak.step"),
            )
        resolved_raw = data.get("last_resolved")
        if resolved_raw is None:
            resolved_raw = {}
        resolved = _rule_ints(resolved_raw, "last_resolved")
        streak_raw = data.get("clear_streak")
        streaks = _rule_ints({} if streak_raw is None else streak_raw, "clear_streak")
        return cls(
            last_step=_opt_int(data.get("last_step"), "last_step"),
            peak=peak,
            model_collapse_step=_opt_int(data.get("model_collapse_step"), "model_collapse_step"),
            last_resolved=resolved,
            alpha_last_adjust_step=_opt_int(
                data.get("alpha_last_adjust_step"), "alpha_last_adjust_step"
            ),
            clear_streak=streaks,
            alpha_baseline=_opt_finite(data.get("alpha_baseline"), "alpha_baseline"),
        )


def _rule_ints(raw: Any, name: str) -> dict[str, int]:
    """rule -> integer; unknown rule names are dropped (see :meth:`DetectorState.from_json`)."""
    # imported here: the registry imports the rule modules, and those build states
    from service.detectors.registry import RULE_NAMES

    if not isinstance(raw, Mapping):
        raise ValueError(f"{name} must be an object")
    return {str(k): _int(v, f"{name}.{k}") for k, v in raw.items() if k in RULE_NAMES}


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _opt_int(value: Any, name: str) -> int | None:
    return None if value is None else _int(value, name)


def _opt_finite(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number or null, got {value!r}")
    return float(value)
