"""What a rule sees (:class:`RuleContext`) and the helpers rules use to build results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.detectors.names import RuleStatus
from service.detectors.records import StepRecord
from service.detectors.results import Firing, RuleResult, Value
from service.detectors.rule_settings import RuleSettings
from service.detectors.state import DetectorState

if TYPE_CHECKING:  # the config class is built from the rule registry, which imports the rules
    from service.detectors.config import DetectorConfig

__all__ = ["RuleContext"]


@dataclass(frozen=True, slots=True)
class RuleContext:
    """Inputs of one rule on one step. ``state`` already includes the newest step (peak, Model
    Collapse Step)."""

    config: DetectorConfig
    group_size: int
    history: Sequence[StepRecord]
    newest: StepRecord
    state: DetectorState

    @property
    def step(self) -> int:
        return self.newest.step

    def gate(self, rule: str, settings: RuleSettings, *any_of: str) -> RuleResult | None:
        """DISABLED / NOT_EVALUABLE result when the rule cannot run on this step, else ``None``.

        With ``any_of`` metric names, the newest record must observe at least one of them (a rule
        only re-evaluates when there is new evidence; in between, open alerts stay as they are).
        """
        if not settings.enabled:
            return RuleResult(rule, RuleStatus.DISABLED, "disabled in config")
        if self.newest.step < settings.warmup_steps:
            return RuleResult(
                rule,
                RuleStatus.NOT_EVALUABLE,
                f"warm-up: step {self.newest.step} < warmup_steps {settings.warmup_steps}",
            )
        if any_of and all(self.newest.value(m) is None for m in any_of):
            return RuleResult(
                rule,
                RuleStatus.NOT_EVALUABLE,
                f"{' / '.join(any_of)} not observed at step {self.newest.step}",
            )
        return None

    def missing(self, rule: str, metric: str) -> RuleResult:
        return RuleResult(
            rule, RuleStatus.NOT_EVALUABLE, f"{metric} not observed at step {self.newest.step}"
        )

    def overflow(self, rule: str) -> RuleResult:
        return RuleResult(
            rule, RuleStatus.NOT_EVALUABLE, "window statistics are not finite (extreme values)"
        )

    def too_few(self, rule: str, what: str, have: int, need: int) -> RuleResult:
        return RuleResult(
            rule, RuleStatus.NOT_EVALUABLE, f"{have} of {need} observations of {what} in history"
        )

    def clear(self, rule: str, reason: str) -> RuleResult:
        return RuleResult(rule, RuleStatus.CLEAR, reason)

    def fire(
        self,
        rule: str,
        *,
        observed: Mapping[str, Value],
        thresholds: Mapping[str, Value],
        message: str,
        action: str,
        rollback_step: int | None = None,
    ) -> RuleResult:
        firing = Firing(
            rule=rule,
            severity=self.config.rule(rule).severity,
            step=self.newest.step,
            # arithmetic on extreme (finite) inputs can overflow; keep the values JSON-safe
            observed={k: v for k, v in observed.items() if math.isfinite(v)},
            thresholds=thresholds,
            message=message,
            action=action,
            rollback_step=rollback_step,
        )
        return RuleResult(rule, RuleStatus.FIRING, message, firing)
