"""Values the rules produce: a :class:`Firing`, a per-rule :class:`RuleResult`, and the per-step
:class:`Evaluation`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.detectors.names import RuleStatus, Severity
from service.detectors.state import DetectorState

__all__ = ["Evaluation", "Firing", "RuleResult", "Value"]

#: Observed values and thresholds are numbers (step numbers are ints).
Value = float | int


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule firing on one step: what crossed which threshold, and what to do about it."""

    rule: str
    severity: Severity
    step: int
    observed: Mapping[str, Value]
    thresholds: Mapping[str, Value]
    message: str
    action: str
    #: A step to roll back to, when the rule knows one (rise_then_fall peak, last healthy entropy).
    rollback_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "step": self.step,
            "observed": dict(self.observed),
            "thresholds": dict(self.thresholds),
            "message": self.message,
            "action": self.action,
            "rollback_step": self.rollback_step,
        }


@dataclass(frozen=True, slots=True)
class RuleResult:
    """Status of one rule on one step; ``firing`` is set iff ``status`` is FIRING."""

    rule: str
    status: RuleStatus
    reason: str
    firing: Firing | None = None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """All rules on one step, in ``RULE_NAMES`` order, plus the advanced state.

    ``skipped`` is True when the newest history step is not newer than ``state.last_step`` (a
    duplicate or late step): every result is NOT_EVALUABLE and ``state`` is returned unchanged.
    """

    step: int
    skipped: bool
    results: tuple[RuleResult, ...]
    state: DetectorState
    _by_rule: Mapping[str, RuleResult] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_rule", {r.rule: r for r in self.results})

    def result(self, rule: str) -> RuleResult:
        """The result of ``rule`` (KeyError for an unknown rule)."""
        return self._by_rule[rule]

    def is_firing(self, rule: str) -> bool:
        r = self._by_rule.get(rule)
        return r is not None and r.status is RuleStatus.FIRING

    @property
    def firings(self) -> tuple[Firing, ...]:
        return tuple(r.firing for r in self.results if r.firing is not None)
