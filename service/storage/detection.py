"""The detectors' side of the store: load what a detection pass reads of a run (with the run
row locked), and save what the pass decided: alert transitions, automatic early_stop and
adjust_alpha commands with their events, α decision rows, the run's verdict and detector state.

A pass runs in the transaction that stored the steps, inside a savepoint (``service.ingest``):
:func:`load_pending` reads, :func:`save` writes, the caller releases the savepoint, or rolls back
to it if anything failed (the steps still commit), commits, and then hands the pass to
:func:`remember`, which fills the history cache. The decisions are ``service.detectors``'.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, Row, String, Table, and_, bindparam, func, select, update
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
    StepRecord,
)
from service.detectors.catch_up import PassDecisions, RunSnapshot, StepDecision
from service.errors import NotFoundError
from service.notifications.events import alert_event
from service.storage import _history_cache as history_cache
from service.storage import commands as command_store
from service.storage import outbox
from service.storage._history_cache import database_key
from service.storage._transactions import begin_write
from service.wire import AlertStatus, CommandKind, CommandSource
from service.wire.metrics import STEP_METRIC_NAMES

MAX_CATCH_UP = 1000


@dataclass(frozen=True, slots=True)
class PendingPass:
    """A begun detection pass: the locked run, its open alert rows, the snapshot the detectors
    read, and what the history cache needs after the commit."""

    run_id: int
    open_rows: dict[str, Alert]
    snapshot: RunSnapshot
    database: str
    epoch: int
    created_at: Any
    cacheable: bool
    complete: bool


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


#: What a pass reads of the run row, as plain columns (no ORM object to load, track and flush);
#: the pass writes it back with one UPDATE (_SAVE_RUN). The step write's epoch bump returns them
#: (``storage.steps``), so a pass after it needs no statement of its own to lock and read the row.
PASS_RUN_COLUMNS = (
    Run.created_at,
    Run.epoch,
    Run.detector_config,
    Run.detector_state,
    Run.policy,
    Run.group_size,
    Run.status,
    Run.verdict,
    Run.best_step,
    Run.alpha_pinned,
    Run.alpha,
)
_LOCK_RUN = select(*PASS_RUN_COLUMNS).where(Run.id == bindparam("run_id")).with_for_update()
_RUNS = cast(Table, Run.__table__)
_SAVE_RUN = (
    update(Run)
    .where(Run.id == bindparam("run_id"))
    .values(
        detector_state=bindparam("detector_state", type_=_RUNS.c.detector_state.type),
        model_collapse_step=bindparam("model_collapse_step", type_=Integer()),
        best_step=bindparam("best_step", type_=Integer()),
        # None leaves these as they are (no verdict: nothing evaluated; no stop requested).
        verdict=func.coalesce(bindparam("verdict", type_=String()), Run.verdict),
        stop_reason=func.coalesce(bindparam("stop_reason", type_=String()), Run.stop_reason),
    )
)
#: The run's open alerts and the command summary (``commands.detection_summary``) in one round
#: trip; read after the run row is locked, so both see every commit made before the lock was
#: granted. One row with no alert when none is open.
_SUMMARY = command_store.DETECTION_SUMMARY
_OPEN_ALERTS_AND_SUMMARY = (
    select(Alert, _SUMMARY.c.stop, _SUMMARY.c.alpha, _SUMMARY.c.applied_step)
    .select_from(_SUMMARY)
    .outerjoin(
        Alert,
        and_(Alert.run_id == bindparam("run_id"), Alert.status == AlertStatus.OPEN),
    )
)


def load_pending(
    session: Session,
    run_id: int,
    written: history_cache.Written | None = None,
    locked_run: Row[Any] | None = None,
) -> PendingPass | None:
    """Lock the run row and read every stored step newer than the last one the detectors saw
    (at most ``MAX_CATCH_UP``), with its history; None when there is none. ``written``: the
    steps this transaction stored (not yet committed), which the history cache does not hold
    yet; ``locked_run``: the run row's ``PASS_RUN_COLUMNS`` as this transaction's write of it
    returned them (the row is locked since, so no statement is needed to lock and read it).
    Catching up from the persisted state, rather than taking only the request's own steps,
    means a detection that failed (a lock timeout, an exception rolled back to its savepoint)
    is made good by the next ingest of the run."""
    run = locked_run
    if run is None:
        begin_write(session)
        run = session.connection().execute(_LOCK_RUN, {"run_id": run_id}).first()
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    config = DetectorConfig.model_validate(run.detector_config or {}, strict=False)
    state = DetectorState.from_json(run.detector_state)
    need = config.history_needed()
    database = database_key(session)
    if written is not None and (written.database, written.run_id, written.epoch) == (
        database,
        run_id,
        run.epoch,
    ):
        cached = history_cache.CACHE.lookup_after(written)
    else:
        cached = history_cache.CACHE.lookup(database, run_id, run.created_at, run.epoch)
    plan = None if cached is None else _plan_from_cache(*cached, state.last_step, need)
    if plan is None:
        ordered, records, complete = _plan_from_database(session, run_id, state.last_step, need)
        cacheable = len(ordered) < MAX_CATCH_UP  # records hold every stored step from [0] on
    else:
        ordered, records, complete = plan
        cacheable = True
    if not ordered:
        return None
    rows = session.execute(_OPEN_ALERTS_AND_SUMMARY, {"run_id": run_id}).all()
    open_rows = {row[0].rule: row[0] for row in rows if row[0] is not None}
    stop_outstanding, commanded_alpha, applied_step = command_store.detection_summary_of(rows[0])
    snapshot = RunSnapshot(
        config=config,
        policy=RunPolicy.model_validate(run.policy or {}, strict=False),
        group_size=run.group_size,
        state=state,
        records=records,
        pending=ordered,
        open_alerts={
            rule: OpenAlert(rule, row.first_step, row.last_step, Severity(row.severity))
            for rule, row in open_rows.items()
        },
        status=run.status,
        verdict=run.verdict,
        best_step=run.best_step,
        alpha_pinned=run.alpha_pinned,
        commanded_alpha=commanded_alpha,
        acknowledged_alpha=run.alpha,
        acknowledged_step=applied_step,
        stop_outstanding=stop_outstanding,
    )
    return PendingPass(
        run_id, open_rows, snapshot, database, run.epoch, run.created_at, cacheable, complete
    )


def save(session: Session, pending: PendingPass, decisions: PassDecisions) -> int:
    """Write the pass's decisions in step order (the caller commits); returns how many
    commands it created."""
    run_id = pending.run_id
    created = 0
    stop_reason = None
    for decision in decisions.steps:
        _apply_alert_actions(session, run_id, decision, pending.open_rows)
        if decision.stop is not None:
            stop_reason = _request_stop(session, run_id, decision)
            created += 1
        if decision.alpha is not None:
            _adjust_alpha(session, run_id, decision)
            created += 1
    state = decisions.state
    session.connection().execute(
        _SAVE_RUN,
        {
            "run_id": run_id,
            "detector_state": state.to_json(),
            "model_collapse_step": state.model_collapse_step,
            "best_step": decisions.best_step,
            "verdict": decisions.verdict,
            "stop_reason": stop_reason,
        },
    )
    return created


def remember(pending: PendingPass) -> None:
    """After the pass's transaction committed: keep its step records in the history cache."""
    snapshot = pending.snapshot
    if pending.cacheable:
        history_cache.CACHE.store(
            pending.database,
            pending.run_id,
            pending.created_at,
            pending.epoch,
            list(snapshot.records),
            complete=pending.complete,
            keep=snapshot.config.history_needed(),
        )


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


def _notify_alert(
    session: Session, run_id: int, alert: Alert, *, opened: bool, step: int, best_step: int | None
) -> None:
    """The alert's event, into the outbox of this same transaction (issue 20)."""
    outbox.enqueue(
        session,
        alert_event(
            "alert_opened" if opened else "alert_resolved",
            run_id,
            rule=alert.rule,
            severity=alert.severity,
            step=step,
            observed=dict(alert.observed),
            thresholds=dict(alert.thresholds),
            message=alert.message,
            action=alert.action,
            best_step=alert.rollback_step if alert.rollback_step is not None else best_step,
        ),
    )


def _apply_alert_actions(
    session: Session, run_id: int, decision: StepDecision, open_rows: dict[str, Alert]
) -> None:
    now = utcnow()
    best_step = decision.best_step
    for action in decision.outcome.transitions.actions:
        if action.kind is ActionKind.RESOLVE:
            alert = open_rows.pop(action.rule, None)
            if alert is not None:
                alert.status = AlertStatus.RESOLVED
                alert.resolved_step = action.step
                alert.resolved_at = now
                alert.updated_at = now
                session.flush()  # free the one-open-per-rule slot before a reopen
                _notify_alert(
                    session, run_id, alert, opened=False, step=action.step, best_step=best_step
                )
            continue
        firing = action.firing
        assert firing is not None
        alert = open_rows.get(action.rule)
        opened = action.kind is ActionKind.OPEN or alert is None
        if opened or alert is None:
            alert = Alert(
                run_id=run_id,
                rule=action.rule,
                status=AlertStatus.OPEN,
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
            _notify_alert(
                session, run_id, alert, opened=True, step=action.step, best_step=best_step
            )


def _request_stop(session: Session, run_id: int, decision: StepDecision) -> str:
    """Add the early_stop; returns the run's stop reason."""
    stop = decision.stop
    assert stop is not None
    command_store.add_command(
        session,
        run_id,
        kind=CommandKind.EARLY_STOP,
        source=CommandSource.DETECTOR,
        reason=stop.reason,
        best_step=stop.best_step,
        rules=list(stop.rules),
        issued_step=stop.step,
    )
    return stop.reason[:1024]


def _adjust_alpha(session: Session, run_id: int, decision: StepDecision) -> None:
    alpha = decision.alpha
    assert alpha is not None
    command = command_store.add_command(
        session,
        run_id,
        kind=CommandKind.ADJUST_ALPHA,
        source=CommandSource.DETECTOR,
        reason=alpha.reason,
        alpha=alpha.new_alpha,
        rules=list(alpha.triggers),
        issued_step=alpha.step,
    )
    session.add(
        AlphaDecisionRow(
            run_id=run_id,
            step=alpha.step,
            action=alpha.action.value,
            old_alpha=alpha.old_alpha,
            new_alpha=alpha.new_alpha,
            reason=alpha.reason[:1024],
            inputs={k: float(v) for k, v in alpha.inputs.items()},
            command_id=command.id,
        )
    )
