"""Run the detectors on freshly ingested steps and persist what they decide: alert transitions,
the α controller's decision, an automatic early_stop, the run's verdict and detector state.

Runs in its own transaction after the steps are committed (an ingest is acknowledged for what it
stored even if detection fails), with the run row locked so several workers serialise per run.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import Alert, AlphaDecisionRow, Run, Step
from service.detectors import (
    ActionKind,
    DetectorConfig,
    DetectorState,
    OpenAlert,
    RunPolicy,
    Severity,
    StepOutcome,
    StepRecord,
    process_step,
)
from service.errors import NotFoundError
from service.notifications.events import alert_event
from service.storage import _history_cache as history_cache
from service.storage import commands as command_store
from service.storage import outbox
from service.storage._history_cache import database_key
from service.storage._transactions import begin_write
from service.wire.metrics import STEP_METRIC_NAMES

DEFAULT_ALPHA = 1.0
MAX_CATCH_UP = 1000


@dataclass(frozen=True, slots=True)
class DetectionResult:
    steps_evaluated: int
    commands_created: int
    verdict: str


_METRIC_ORDER = tuple(sorted(STEP_METRIC_NAMES))
#: What the detectors read of a stored step (not the per-query histograms, not the timestamps).
_HISTORY_COLUMNS = (
    Step.step,
    Step.extras,
    Step.non_finite,
    *(getattr(Step, name) for name in _METRIC_ORDER),
)


def _history_record(row: Row[Any]) -> StepRecord:
    """The detectors' view of a row of ``_HISTORY_COLUMNS`` (positional: no ORM object per
    step): standard metrics and extras, missing values left out."""
    step, extras, non_finite, *values = tuple(row)
    metrics: dict[str, float | None] = dict(zip(_METRIC_ORDER, values, strict=True))
    metrics.update(extras)
    return StepRecord(
        step=step,
        metrics={k: v for k, v in metrics.items() if v is not None},
        non_finite=frozenset(non_finite),
    )


def run_detectors(session: Session, run_id: int) -> DetectionResult:
    """Evaluate every stored step newer than the last one the detectors saw (at most
    ``MAX_CATCH_UP`` per call), in step order. Catching up from the persisted state, rather than
    evaluating only the request's own steps, means a detection that failed (a lock timeout, a
    crash between commit and detection) is made good by the next ingest of the run."""
    begin_write(session)
    run = session.scalars(
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    config = DetectorConfig.model_validate(run.detector_config or {}, strict=False)
    policy = RunPolicy.model_validate(run.policy or {}, strict=False)
    state = DetectorState.from_json(run.detector_state)
    need = config.history_needed()
    database = database_key(session)
    cached = history_cache.CACHE.lookup(database, run_id, run.created_at, run.epoch)
    plan = None if cached is None else _plan_from_cache(*cached, state.last_step, need)
    if plan is None:
        ordered, records, complete = _plan_from_database(session, run_id, state.last_step, need)
        cacheable = len(ordered) < MAX_CATCH_UP  # records hold every stored step from [0] on
    else:
        ordered, records, complete = plan
        cacheable = True
    if not ordered:
        session.rollback()
        return DetectionResult(0, 0, run.verdict)
    epoch, created_at = run.epoch, run.created_at
    open_rows = {
        alert.rule: alert
        for alert in session.scalars(
            select(Alert).where(Alert.run_id == run_id, Alert.status == "open")
        )
    }
    stop_outstanding, commanded_alpha = command_store.outstanding_summary(session, run_id)
    # An acknowledged α change is newer than any step before the one it took effect at: a step
    # record that arrives late (the trainer's sender lags its command poller) must not undo it.
    alpha_since = command_store.last_applied_alpha_step(session, run_id)
    # A stop once requested stays requested: the verdict says so even when the trainer's ack
    # of the stop committed between this pass's reads of the run and of its commands.
    stopping = run.status == "stopped" or run.verdict == "stopped" or stop_outstanding
    created = 0
    outcome: StepOutcome | None = None
    position = {record.step: index for index, record in enumerate(records)}
    for step in ordered:
        index = position[step]
        history = records[max(0, index - need + 1) : index + 1]
        reported_alpha = history[-1].value("alpha")
        if reported_alpha is not None and (alpha_since is None or step >= alpha_since):
            run.alpha = reported_alpha
        working_alpha = commanded_alpha
        if working_alpha is None:
            working_alpha = run.alpha if run.alpha is not None else DEFAULT_ALPHA
        outcome = process_step(
            config,
            _policy_for(policy, history[-1]),
            run.group_size,
            history,
            state,
            {
                rule: OpenAlert(rule, row.first_step, row.last_step, Severity(row.severity))
                for rule, row in open_rows.items()
            },
            working_alpha,
            stopped=stopping,
            alpha_pinned=run.alpha_pinned,
        )
        state = outcome.state
        _apply_alert_actions(session, run, outcome, open_rows)
        if outcome.transitions.stop and not stopping:
            created += _request_stop(session, run, outcome)
            stopping = True
        if outcome.alpha.changed:
            created += _adjust_alpha(session, run_id, outcome)
            commanded_alpha = outcome.alpha.new_alpha
    run.detector_state = state.to_json()
    run.model_collapse_step = state.model_collapse_step
    if state.peak is not None and not (stopping and run.best_step is not None):
        run.best_step = state.peak.step  # an issued stop's best step stays the run's best step
    if outcome is not None and run.status != "failed":  # failed keeps its verdict until reopened
        run.verdict = "stopped" if stopping else outcome.verdict.value
    verdict_now = run.verdict
    session.commit()
    if cacheable:
        history_cache.CACHE.store(
            database, run_id, created_at, epoch, records, complete=complete, keep=need
        )
    return DetectionResult(len(ordered), created, verdict_now)


def _plan_from_database(
    session: Session, run_id: int, last_step: int | None, need: int
) -> tuple[list[int], list[StepRecord], bool]:
    """(steps to evaluate, their history records ascending, whether the records start at the
    run's first step), read from the stored steps."""
    ordered = list(
        session.scalars(
            select(Step.step)
            .where(Step.run_id == run_id, Step.step > (-1 if last_step is None else last_step))
            .order_by(Step.step)
            .limit(MAX_CATCH_UP)
        )
    )
    if not ordered:
        return [], [], False
    # Plain rows of the needed columns, not ORM objects: this runs on every cache miss.
    limit = need + len(ordered)
    rows = session.execute(
        select(*_HISTORY_COLUMNS)
        .where(Step.run_id == run_id, Step.step <= ordered[-1])
        .order_by(Step.step.desc())
        .limit(limit)
    ).all()
    return ordered, [_history_record(row) for row in reversed(rows)], len(rows) < limit


def _plan_from_cache(
    records: list[StepRecord], complete: bool, last_step: int | None, need: int
) -> tuple[list[int], list[StepRecord], bool] | None:
    """The same plan from a current cache entry, or None when the entry cannot give every step
    newer than ``last_step`` with ``need`` steps of history before the first of them."""
    last = -1 if last_step is None else last_step
    first_new = bisect_right([r.step for r in records], last)
    if not complete and (first_new == 0 or first_new < need - 1):
        return None  # steps (or history) older than the entry may be missing
    ordered = [r.step for r in records[first_new : first_new + MAX_CATCH_UP]]
    return ordered, records, complete


def _policy_for(policy: RunPolicy, newest: StepRecord) -> RunPolicy:
    """The policy for this step: a trainer that reports IAC off (metric ``iac`` = 0) cannot
    apply an α, so the controller sends it none."""
    if policy.auto_alpha and newest.value("iac") == 0.0:
        return policy.model_copy(update={"auto_alpha": False})
    return policy


def _notify_alert(session: Session, run: Run, alert: Alert, *, opened: bool, step: int) -> None:
    """The alert's event, into the outbox of this same transaction (issue 20)."""
    outbox.enqueue(
        session,
        alert_event(
            "alert_opened" if opened else "alert_resolved",
            run.id,
            rule=alert.rule,
            severity=alert.severity,
            step=step,
            observed=dict(alert.observed),
            thresholds=dict(alert.thresholds),
            message=alert.message,
            action=alert.action,
            best_step=alert.rollback_step if alert.rollback_step is not None else run.best_step,
        ),
    )


def _apply_alert_actions(
    session: Session, run: Run, outcome: StepOutcome, open_rows: dict[str, Alert]
) -> None:
    run_id = run.id
    now = utcnow()
    for action in outcome.transitions.actions:
        if action.kind is ActionKind.RESOLVE:
            alert = open_rows.pop(action.rule, None)
            if alert is not None:
                alert.status = "resolved"
                alert.resolved_step = action.step
                alert.resolved_at = now
                alert.updated_at = now
                session.flush()  # free the one-open-per-rule slot before a reopen
                _notify_alert(session, run, alert, opened=False, step=action.step)
            continue
        firing = action.firing
        assert firing is not None
        alert = open_rows.get(action.rule)
        opened = action.kind is ActionKind.OPEN or alert is None
        if opened or alert is None:
            alert = Alert(
                run_id=run_id,
                rule=action.rule,
                status="open",
                first_step=action.first_step,
                opened_at=now,
            )
            session.add(alert)
            open_rows[action.rule] = alert
        alert.severity = action.severity.value
        alert.last_step = action.step
        alert.observed = {k: float(v) for k, v in firing.observed.items()}
        alert.thresholds = {k: float(v) for k, v in firing.thresholds.items()}
        alert.message = firing.message[:1024]
        alert.action = firing.action[:1024]
        alert.rollback_step = firing.rollback_step
        alert.updated_at = now
        if opened:
            _notify_alert(session, run, alert, opened=True, step=action.step)


def _request_stop(session: Session, run: Run, outcome: StepOutcome) -> int:
    firings = [
        a.firing
        for a in outcome.transitions.actions
        if a.firing is not None and a.rule in outcome.transitions.stop_rules
    ]
    best_step = next((f.rollback_step for f in firings if f.rollback_step is not None), None)
    if best_step is None:
        best_step = run.best_step
    reason = "; ".join(f.message for f in firings) or (
        "automatic stop: " + ", ".join(outcome.transitions.stop_rules)
    )
    command_store.add_command(
        session,
        run.id,
        kind="early_stop",
        source="detector",
        reason=reason,
        best_step=best_step,
        rules=list(outcome.transitions.stop_rules),
        issued_step=outcome.transitions.step,
    )
    run.stop_reason = reason[:1024]
    if best_step is not None:
        run.best_step = best_step  # the run, its alert and its stop name the same best step
    return 1


def _adjust_alpha(session: Session, run_id: int, outcome: StepOutcome) -> int:
    decision = outcome.alpha
    command = command_store.add_command(
        session,
        run_id,
        kind="adjust_alpha",
        source="detector",
        reason=decision.reason,
        alpha=decision.new_alpha,
        rules=list(decision.triggers),
        issued_step=decision.step,
    )
    session.add(
        AlphaDecisionRow(
            run_id=run_id,
            step=decision.step,
            action=decision.action.value,
            old_alpha=decision.old_alpha,
            new_alpha=decision.new_alpha,
            reason=decision.reason[:1024],
            inputs={k: float(v) for k, v in decision.inputs.items()},
            command_id=command.id,
        )
    )
    return 1
