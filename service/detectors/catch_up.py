"""``decide_pass``: one detection pass over a run's not-yet-evaluated steps, as pure decisions.

The service loads a :class:`RunSnapshot` (the run row, its open alerts, outstanding commands and
step history), calls :func:`decide_pass`, and stores the :class:`PassDecisions` in the same
transaction: each step's alert actions, then its stop request, then its α command, in step order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.detectors.alpha import AlphaDecision
from service.detectors.config import DetectorConfig
from service.detectors.pipeline import StepOutcome, process_step
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.state import DetectorState
from service.detectors.transitions import OpenAlert
from service.wire.enums import RunStatus, Verdict

__all__ = [
    "DEFAULT_ALPHA",
    "PassDecisions",
    "RunSnapshot",
    "StepDecision",
    "StopRequest",
    "decide_pass",
]

DEFAULT_ALPHA = 1.0


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What a detection pass reads of a run, with the run row locked."""

    config: DetectorConfig
    policy: RunPolicy
    group_size: int
    state: DetectorState
    #: Stored step records, ascending; they hold every step of ``pending`` and the
    #: ``config.history_needed()`` steps before each.
    records: Sequence[StepRecord]
    #: The steps to evaluate, ascending (newer than ``state.last_step``).
    pending: Sequence[int]
    open_alerts: Mapping[str, OpenAlert]
    status: str
    verdict: str
    best_step: int | None
    alpha_pinned: bool
    #: α of the newest outstanding ``adjust_alpha`` (not yet applied by the trainer).
    commanded_alpha: float | None
    #: α of the newest applied ``adjust_alpha`` and the step it took effect at.
    acknowledged_alpha: float | None
    acknowledged_step: int | None
    stop_outstanding: bool


@dataclass(frozen=True, slots=True)
class StopRequest:
    """An automatic ``early_stop`` to issue."""

    step: int
    rules: tuple[str, ...]
    reason: str
    best_step: int | None


@dataclass(frozen=True, slots=True)
class StepDecision:
    outcome: StepOutcome
    #: The run's best step while this step's alert events are written (their rollback fallback).
    best_step: int | None
    stop: StopRequest | None
    #: The controller's change of α (an ``adjust_alpha`` command and its decision row).
    alpha: AlphaDecision | None


@dataclass(frozen=True, slots=True)
class PassDecisions:
    steps: tuple[StepDecision, ...]
    state: DetectorState
    best_step: int | None
    #: The run's verdict after the pass; None leaves it (nothing evaluated, or the run failed).
    verdict: str | None


def decide_pass(run: RunSnapshot) -> PassDecisions:
    """Evaluate ``run.pending`` in step order, each with the last ``history_needed()`` records,
    threading the detector state, the open alerts and the working α through."""
    need = run.config.history_needed()
    position = {record.step: index for index, record in enumerate(run.records)}
    state = run.state
    open_alerts = dict(run.open_alerts)
    commanded = run.commanded_alpha
    # A stop once requested stays requested: the verdict says so even when the trainer's ack of
    # the stop committed between the reads of the run and of its commands.
    stopping = (
        run.status == RunStatus.STOPPED or run.verdict == Verdict.STOPPED or run.stop_outstanding
    )
    best_step = run.best_step
    reported = _alpha_before(run, position[run.pending[0]]) if run.pending else None
    decisions: list[StepDecision] = []
    outcome: StepOutcome | None = None
    for step in run.pending:
        index = position[step]
        history = run.records[max(0, index - need + 1) : index + 1]
        newest = _reported_alpha(run, history[-1])
        if newest is not None:
            reported = newest
        working = commanded
        if working is None:
            working = reported if reported is not None else DEFAULT_ALPHA
        outcome = process_step(
            run.config,
            _policy_for(run.policy, history[-1]),
            run.group_size,
            history,
            state,
            open_alerts,
            working,
            stopped=stopping,
            alpha_pinned=run.alpha_pinned,
        )
        state = outcome.state
        open_alerts = dict(outcome.transitions.open_alerts)
        events_best_step = best_step
        stop = None
        if outcome.transitions.stop and not stopping:
            stop = _stop_request(outcome, best_step)
            stopping = True
            if stop.best_step is not None:
                best_step = stop.best_step  # the run, its alert and its stop name one best step
        alpha = outcome.alpha if outcome.alpha.changed else None
        if alpha is not None:
            commanded = alpha.new_alpha
        decisions.append(StepDecision(outcome, events_best_step, stop, alpha))
    if state.peak is not None and not (stopping and best_step is not None):
        best_step = state.peak.step  # an issued stop's best step stays the run's best step
    verdict = None
    # A failed run keeps its verdict until it is reopened.
    if outcome is not None and run.status != RunStatus.FAILED:
        verdict = Verdict.STOPPED.value if stopping else outcome.verdict.value
    return PassDecisions(tuple(decisions), state, best_step, verdict)


def _reported_alpha(run: RunSnapshot, record: StepRecord) -> float | None:
    """The α a step record reports, unless it is older than the step an applied adjust_alpha
    took effect at (a late record must not undo an acknowledged change)."""
    if run.acknowledged_step is not None and record.step < run.acknowledged_step:
        return None
    return record.value("alpha")


def _alpha_before(run: RunSnapshot, index: int) -> float | None:
    """The α in effect before ``run.records[index]``: the newest record before it that reports
    one (and counts), else the acknowledged α."""
    for record in reversed(run.records[:index]):
        alpha = _reported_alpha(run, record)
        if alpha is not None:
            return alpha
    return run.acknowledged_alpha


def _policy_for(policy: RunPolicy, newest: StepRecord) -> RunPolicy:
    """The policy for this step: a trainer that reports IAC off (metric ``iac`` = 0) cannot
    apply an α, so the controller sends it none."""
    if policy.auto_alpha and newest.value("iac") == 0.0:
        return policy.model_copy(update={"auto_alpha": False})
    return policy


def _stop_request(outcome: StepOutcome, best_step: int | None) -> StopRequest:
    transitions = outcome.transitions
    firings = [
        a.firing
        for a in transitions.actions
        if a.firing is not None and a.rule in transitions.stop_rules
    ]
    rollback = next((f.rollback_step for f in firings if f.rollback_step is not None), None)
    reason = "; ".join(f.message for f in firings) or (
        "automatic stop: " + ", ".join(transitions.stop_rules)
    )
    return StopRequest(
        step=transitions.step,
        rules=tuple(transitions.stop_rules),
        reason=reason,
        best_step=rollback if rollback is not None else best_step,
    )
