"""Replay harness: feed any list of step dicts (or :class:`StepRecord`) through
:func:`process_step` exactly as the service would, one ingested step at a time.

Steps are ingested in the given order (out-of-order steps are allowed and exercise the stale-step
rule); the history passed each time is the last ``config.history_needed()`` stored records by step.
The state is JSON round-tripped after every step, as the service persists it. With
``stop_on_auto_stop`` the replay ends at the first step that requests a stop (the trainer would stop
there); α follows the controller's decisions.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.detectors.alpha import AlphaDecision
from service.detectors.config import DetectorConfig
from service.detectors.pipeline import process_step
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.state import DetectorState
from service.detectors.transitions import AlertAction, OpenAlert
from service.detectors.verdict import Verdict

__all__ = ["ReplayResult", "replay", "replay_detailed"]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    actions: tuple[AlertAction, ...]
    #: Only the decisions that changed α.
    alpha_changes: tuple[AlphaDecision, ...]
    stopped_at: int | None
    stop_rules: tuple[str, ...]
    final_alpha: float
    open_alerts: Mapping[str, OpenAlert]
    state: DetectorState
    verdict: Verdict


def replay_detailed(
    trace: Iterable[Mapping[str, Any] | StepRecord],
    config: DetectorConfig | None = None,
    policy: RunPolicy | None = None,
    *,
    group_size: int = 8,
    initial_alpha: float = 1.0,
    stop_on_auto_stop: bool = True,
) -> ReplayResult:
    cfg = config if config is not None else DetectorConfig()
    pol = policy if policy is not None else RunPolicy()
    need = cfg.history_needed()
    stored: list[StepRecord] = []
    steps: list[int] = []
    state = DetectorState()
    open_alerts: dict[str, OpenAlert] = {}
    alpha = initial_alpha
    actions: list[AlertAction] = []
    changes: list[AlphaDecision] = []
    stopped_at: int | None = None
    stop_rules: tuple[str, ...] = ()
    verdict = Verdict.HEALTHY
    for item in trace:
        rec = item if isinstance(item, StepRecord) else StepRecord.from_mapping(item)
        i = bisect.bisect_left(steps, rec.step)
        if i < len(steps) and steps[i] == rec.step:
            continue  # the service rejects or ignores a re-sent step; nothing to evaluate
        steps.insert(i, rec.step)
        stored.insert(i, rec)
        out = process_step(
            cfg,
            pol,
            group_size,
            stored[-need:],
            state,
            open_alerts,
            alpha,
            stopped=stopped_at is not None,
        )
        state = DetectorState.from_json(json.loads(json.dumps(out.state.to_json())))
        open_alerts = dict(out.transitions.open_alerts)
        actions.extend(out.transitions.actions)
        verdict = out.verdict
        if out.alpha.changed:
            alpha = out.alpha.new_alpha
            changes.append(out.alpha)
        if out.transitions.stop and stopped_at is None:
            stopped_at = out.evaluation.step
            stop_rules = out.transitions.stop_rules
            if stop_on_auto_stop:
                break
    return ReplayResult(
        actions=tuple(actions),
        alpha_changes=tuple(changes),
        stopped_at=stopped_at,
        stop_rules=stop_rules,
        final_alpha=alpha,
        open_alerts=open_alerts,
        state=state,
        verdict=verdict,
    )


def replay(
    trace: Iterable[Mapping[str, Any] | StepRecord],
    config: DetectorConfig | None = None,
    policy: RunPolicy | None = None,
    *,
    group_size: int = 8,
    initial_alpha: float = 1.0,
    stop_on_auto_stop: bool = True,
) -> list[AlertAction]:
    """The alert transitions of a trace, in order (see :func:`replay_detailed` for α and stop)."""
    return list(
        replay_detailed(
            trace,
            config,
            policy,
            group_size=group_size,
            initial_alpha=initial_alpha,
            stop_on_auto_stop=stop_on_auto_stop,
        ).actions
    )
