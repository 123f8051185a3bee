"""``process_step``: the one call the service makes per ingested step —
evaluate → alert transitions → α decision → verdict, threading the state through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.detectors.alpha import AlphaDecision, decide_alpha
from service.detectors.config import DetectorConfig
from service.detectors.evaluate import evaluate
from service.detectors.policy import RunPolicy
from service.detectors.records import StepRecord
from service.detectors.results import Evaluation
from service.detectors.state import DetectorState
from service.detectors.transitions import OpenAlert, Transitions, compute_transitions
from service.detectors.verdict import Verdict, verdict

__all__ = ["StepOutcome", "process_step"]


@dataclass(frozen=True, slots=True)
class StepOutcome:
    evaluation: Evaluation
    transitions: Transitions
    alpha: AlphaDecision
    #: The state to persist (includes resolves and the α adjustment step).
    state: DetectorState
    #: Verdict after the transitions (``stopped`` if already stopped or a stop was requested).
    verdict: Verdict


def process_step(
    config: DetectorConfig,
    policy: RunPolicy,
    group_size: int,
    history: Sequence[StepRecord],
    state: DetectorState,
    open_alerts: Mapping[str, OpenAlert],
    current_alpha: float,
    *,
    stopped: bool = False,
    alpha_pinned: bool = False,
) -> StepOutcome:
    """Everything the service needs for one ingested step. Persist ``outcome.state``, apply
    ``outcome.transitions.actions``, stop the run if ``outcome.transitions.stop``, and send an
    alpha-adjust command if ``outcome.alpha.changed`` — all in the same transaction, with the run
    row locked (``SELECT ... FOR UPDATE``) so that concurrent workers serialise per run.
    ``alpha_pinned``: an operator pinned α at ``current_alpha``; the controller changes nothing."""
    ev = evaluate(config, group_size, history, state)
    tr = compute_transitions(config, policy, ev, open_alerts)
    stopping = stopped or tr.stop
    al = decide_alpha(
        policy,
        config,
        history,
        ev,
        tr.state,
        current_alpha,
        stopping=stopping,
        pinned=alpha_pinned,
    )
    return StepOutcome(ev, tr, al, al.state, verdict(tr.open_alerts, stopped=stopping))
