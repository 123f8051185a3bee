"""Replay harness: feed any list of step dicts (or :class:`StepRecord`) through
:func:`process_step` exactly as the service would, one ingested step at a time.

Steps are ingested in the given order (out-of-order steps are allowed and exercise the stale-step
rule); the history passed each time is the last ``config.history_needed()`` stored records by step.
The state is JSON round-tripped after every step, as the service persists it. With
``stop_on_auto_stop`` the replay ends at the first step that requests a stop (the trainer would stop
there); α follows the controller's decisions. :class:`Replayer` is the same loop one step at a
time, for closed loops that feed α back to a trainer.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.detectors.alpha import AlphaDecision
from service.detectors.config import DetectorConfig
from service.detectors.pipeline import StepOutcome, process_step
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.state import DetectorState
from service.detectors.transitions import AlertAction, OpenAlert
from service.detectors.verdict import Verdict

__all__ = ["ReplayResult", "Replayer", "replay", "replay_detailed"]


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


class Replayer:
    """The service's per-run detection loop, one ingested step at a time, in memory.

    :meth:`ingest` stores a record and runs :func:`process_step` on it exactly as
    a detection pass of the service does: the last ``config.history_needed()`` records by step, the
    persisted state JSON round-tripped, open alerts carried over. α follows the controller's
    decisions (a closed loop applies ``outcome.alpha.new_alpha`` to its trainer when
    ``outcome.alpha.changed``); :meth:`pin_alpha` and :meth:`release_alpha` play the operator.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        policy: RunPolicy | None = None,
        *,
        group_size: int = 8,
        initial_alpha: float = 1.0,
    ) -> None:
        self.config = config if config is not None else DetectorConfig()
        self.policy = policy if policy is not None else RunPolicy()
        self.group_size = group_size
        self.alpha = initial_alpha
        self.alpha_pinned = False
        self.state = DetectorState()
        self.open_alerts: dict[str, OpenAlert] = {}
        self.actions: list[AlertAction] = []
        self.alpha_changes: list[AlphaDecision] = []
        self.stopped_at: int | None = None
        self.stop_rules: tuple[str, ...] = ()
        self.verdict = Verdict.HEALTHY
        self._need = self.config.history_needed()
        self._stored: list[StepRecord] = []
        self._steps: list[int] = []

    def pin_alpha(self, alpha: float) -> None:
        """An operator's adjust_alpha: α becomes ``alpha`` and stays there until released."""
        self.alpha = alpha
        self.alpha_pinned = True

    def release_alpha(self) -> None:
        """The operator hands α back to the controller."""
        self.alpha_pinned = False

    def ingest(self, item: Mapping[str, Any] | StepRecord) -> StepOutcome | None:
        """Store and evaluate one step; ``None`` for a re-sent step (nothing is evaluated)."""
        rec = item if isinstance(item, StepRecord) else StepRecord.from_mapping(item)
        i = bisect.bisect_left(self._steps, rec.step)
        if i < len(self._steps) and self._steps[i] == rec.step:
            return None  # the service rejects or ignores a re-sent step
        self._steps.insert(i, rec.step)
        self._stored.insert(i, rec)
        out = process_step(
            self.config,
            self.policy,
            self.group_size,
            self._stored[-self._need :],
            self.state,
            self.open_alerts,
            self.alpha,
            stopped=self.stopped_at is not None,
            alpha_pinned=self.alpha_pinned,
        )
        self.state = DetectorState.from_json(json.loads(json.dumps(out.state.to_json())))
        self.open_alerts = dict(out.transitions.open_alerts)
        self.actions.extend(out.transitions.actions)
        self.verdict = out.verdict
        if out.alpha.changed:
            self.alpha = out.alpha.new_alpha
            self.alpha_changes.append(out.alpha)
        if out.transitions.stop and self.stopped_at is None:
            self.stopped_at = out.evaluation.step
            self.stop_rules = out.transitions.stop_rules
        return out

    def result(self) -> ReplayResult:
        return ReplayResult(
            actions=tuple(self.actions),
            alpha_changes=tuple(self.alpha_changes),
            stopped_at=self.stopped_at,
            stop_rules=self.stop_rules,
            final_alpha=self.alpha,
            open_alerts=dict(self.open_alerts),
            state=self.state,
            verdict=self.verdict,
        )


def replay_detailed(
    trace: Iterable[Mapping[str, Any] | StepRecord],
    config: DetectorConfig | None = None,
    policy: RunPolicy | None = None,
    *,
    group_size: int = 8,
    initial_alpha: float = 1.0,
    stop_on_auto_stop: bool = True,
) -> ReplayResult:
    replayer = Replayer(config, policy, group_size=group_size, initial_alpha=initial_alpha)
    for item in trace:
        out = replayer.ingest(item)
        if stop_on_auto_stop and out is not None and replayer.stopped_at is not None:
            break
    return replayer.result()


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
