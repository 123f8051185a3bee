"""Alert transitions: from an :class:`Evaluation` and the open alerts of a run, decide which alerts
open, update or resolve — at most one open alert per rule — and whether the run must stop.

Per rule (in ``RULE_NAMES`` order): FIRING with an open alert → ``update``; FIRING without one →
``open``, unless the rule resolved less than ``cooldown_steps`` ago (then it is listed in
``suppressed``; rules in ``policy.auto_stop_rules`` are never suppressed); CLEAR with an open alert
→ ``resolve`` once the rule has been clear on ``resolve_after`` evaluations in a row (counted in
``state.clear_streak``; a firing resets the count), DISABLED with an open alert → ``resolve`` at
once (both recorded in ``state.last_resolved`` for the cooldown); NOT_EVALUABLE → nothing (an open
alert stays as it is until there is new evidence). A skipped evaluation (stale step) produces no
actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.detectors.config import DetectorConfig
from service.detectors.names import RuleStatus, Severity
from service.detectors.policy import RunPolicy
from service.detectors.results import Evaluation, Firing
from service.detectors.state import DetectorState

__all__ = ["ActionKind", "AlertAction", "OpenAlert", "Transitions", "compute_transitions"]


class ActionKind(StrEnum):
    OPEN = "open"
    UPDATE = "update"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What the service knows about a rule's open alert."""

    rule: str
    first_step: int
    last_step: int
    severity: Severity


@dataclass(frozen=True, slots=True)
class AlertAction:
    """One alert change. ``firing`` is set for open/update (the values to store), None for
    resolve. ``auto_stop`` marks a firing of a rule in the policy's ``auto_stop_rules``."""

    kind: ActionKind
    rule: str
    step: int
    severity: Severity
    first_step: int
    reason: str
    firing: Firing | None = None
    auto_stop: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "rule": self.rule,
            "step": self.step,
            "severity": self.severity.value,
            "first_step": self.first_step,
            "reason": self.reason,
            "firing": None if self.firing is None else self.firing.to_json(),
            "auto_stop": self.auto_stop,
        }


@dataclass(frozen=True, slots=True)
class Transitions:
    step: int
    actions: tuple[AlertAction, ...]
    #: Rules that fired but stayed closed because of their cooldown.
    suppressed: tuple[str, ...]
    #: True when a rule in ``policy.auto_stop_rules`` fired on this step.
    stop: bool
    stop_rules: tuple[str, ...]
    #: Open alerts after applying the actions (rule → alert).
    open_alerts: Mapping[str, OpenAlert]
    state: DetectorState


def compute_transitions(
    config: DetectorConfig,
    policy: RunPolicy,
    evaluation: Evaluation,
    open_alerts: Mapping[str, OpenAlert],
) -> Transitions:
    """Alert actions for ``evaluation`` given the run's currently open alerts (rule → alert)."""
    state = evaluation.state
    step = evaluation.step
    if evaluation.skipped:
        return Transitions(step, (), (), False, (), dict(open_alerts), state)
    actions: list[AlertAction] = []
    suppressed: list[str] = []
    stop_rules: list[str] = []
    resolved: dict[str, int] = {}
    streaks = dict(state.clear_streak)
    after = dict(open_alerts)
    for result in evaluation.results:
        rule = result.rule
        current = open_alerts.get(rule)
        firing = result.firing
        if result.status is RuleStatus.FIRING and firing is not None:
            streaks.pop(rule, None)
            auto_stop = rule in policy.auto_stop_rules
            if auto_stop:
                stop_rules.append(rule)
            if current is not None:
                actions.append(
                    AlertAction(
                        ActionKind.UPDATE,
                        rule,
                        step,
                        firing.severity,
                        current.first_step,
                        result.reason,
                        firing,
                        auto_stop,
                    )
                )
                after[rule] = OpenAlert(rule, current.first_step, step, firing.severity)
                continue
            last = state.last_resolved.get(rule)
            cooldown = config.rule(rule).cooldown_steps
            if not auto_stop and last is not None and step - last < cooldown:
                suppressed.append(rule)
                continue
            actions.append(
                AlertAction(
                    ActionKind.OPEN,
                    rule,
                    step,
                    firing.severity,
                    step,
                    result.reason,
                    firing,
                    auto_stop,
                )
            )
            after[rule] = OpenAlert(rule, step, step, firing.severity)
        elif current is not None and result.status in (RuleStatus.CLEAR, RuleStatus.DISABLED):
            if result.status is RuleStatus.CLEAR:
                streaks[rule] = streaks.get(rule, 0) + 1
                if streaks[rule] < config.rule(rule).resolve_after:
                    continue  # held open: not yet clear for long enough
            actions.append(
                AlertAction(
                    ActionKind.RESOLVE,
                    rule,
                    step,
                    current.severity,
                    current.first_step,
                    result.reason,
                )
            )
            resolved[rule] = step
            del after[rule]
    return Transitions(
        step=step,
        actions=tuple(actions),
        suppressed=tuple(suppressed),
        stop=bool(stop_rules),
        stop_rules=tuple(stop_rules),
        open_alerts=after,
        # A streak only counts towards resolving an alert that is still open.
        state=state.with_resolved(resolved).with_clear_streaks(
            {rule: n for rule, n in streaks.items() if rule in after}
        ),
    )
