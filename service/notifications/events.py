"""The events people are notified of, and the payload each carries into the outbox.

A payload holds everything a person needs to act without opening the service: the run, the
rule, the step, the observed value against its threshold, the recommended action and the best
step to roll back to. The link to the run's live page is added at delivery (it depends on the
``public_url`` setting, not on the event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from service.wire import CommandKind

EventKind = Literal[
    "alert_opened",
    "alert_resolved",
    "stop_issued",
    "alpha_changed",
    "command_applied",
    "command_rejected",
    "command_expired",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)
#: Events that carry a severity (the subscription's ``severities`` filter applies to these).
SEVERITY_EVENTS = frozenset({"alert_opened", "alert_resolved"})


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one run. ``rules`` are the rules behind it (empty for an operator's
    command); ``severity`` is set for alert events."""

    kind: EventKind
    run_id: int
    rules: tuple[str, ...] = ()
    severity: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self, project: str, name: str) -> dict[str, Any]:
        return {
            "event": self.kind,
            "run": {"id": self.run_id, "project": project, "name": name},
            "rules": list(self.rules),
            "severity": self.severity,
            **self.details,
        }


def alert_event(
    kind: Literal["alert_opened", "alert_resolved"],
    run_id: int,
    *,
    rule: str,
    severity: str,
    step: int,
    observed: dict[str, float],
    thresholds: dict[str, float],
    message: str,
    action: str,
    best_step: int | None,
) -> Event:
    return Event(
        kind,
        run_id,
        (rule,),
        severity,
        {
            "rule": rule,
            "step": step,
            "observed": observed,
            "thresholds": thresholds,
            "message": message,
            "action": action,
            "best_step": best_step,
        },
    )


def command_event(
    kind: EventKind,
    run_id: int,
    *,
    command_id: int,
    command_kind: str,
    source: str,
    reason: str,
    rules: list[str],
    step: int | None,
    alpha: float | None,
    best_step: int | None,
    detail: str | None = None,
) -> Event:
    if command_kind == CommandKind.EARLY_STOP:
        action = "stop the run and roll back to the best step" + (
            f" ({best_step})" if best_step is not None else ""
        )
    else:
        action = f"the trainer sets IAC alpha to {alpha:g}" if alpha is not None else ""
    return Event(
        kind,
        run_id,
        tuple(rules),
        None,
        {
            "rule": rules[0] if rules else None,
            "step": step,
            "message": reason,
            "action": action,
            "best_step": best_step,
            "command": {
                "id": command_id,
                "kind": command_kind,
                "source": source,
                "alpha": alpha,
                "detail": detail,
            },
        },
    )
