"""Commands: create, deliver (long-poll side), acknowledge, list.

A command is a state machine held in the database: ``pending → delivered → applied | rejected |
expired``. Every transition is a compare-and-set (an ``UPDATE ... WHERE status IN (...)``), so of
two concurrent transitions of one command exactly one takes effect, and a partial unique index
(revision 0007) keeps at most one outstanding command of each kind per run. Writers that touch a
run's commands lock the run row first (detection does too), so they queue instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import AlphaDecisionRow, Command, Run
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.notifications.events import EventKind, command_event
from service.schemas.commands import CommandAck, CommandCreate
from service.storage._pagination import keyset_page
from service.storage._transactions import begin_write
from service.storage.outbox import enqueue
from service.wire import CommandKind, CommandSource, CommandStatus, RunStatus, Verdict

OUTSTANDING = (CommandStatus.PENDING, CommandStatus.DELIVERED)
CREATE_ATTEMPTS = 3


def _lock_run(session: Session, run_id: int) -> Run:
    """Begin the write and lock the run row (the order every command writer follows)."""
    begin_write(session)
    run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    return run


def _notify(session: Session, kind: EventKind, command: Command) -> None:
    """The command's event, into the outbox of the transaction that moves it (issue 20)."""
    enqueue(
        session,
        command_event(
            kind,
            command.run_id,
            command_id=command.id,
            command_kind=command.kind,
            source=command.source,
            reason=command.reason,
            rules=list(command.rules or []),
            step=command.applied_step if command.applied_step is not None else command.issued_step,
            alpha=command.alpha,
            best_step=command.best_step,
            detail=command.ack_detail,
        ),
    )


def _expire(session: Session, condition: Any, detail: str) -> None:
    """Expire the outstanding commands matching ``condition``, each with its event."""
    expired = session.scalars(
        update(Command)
        .where(condition)
        .values(status=CommandStatus.EXPIRED, ack_detail=detail)
        .returning(Command)
        .execution_options(populate_existing=True)
    ).all()
    for command in expired:
        _notify(session, "command_expired", command)


def outstanding_stop(session: Session, run_id: int) -> Command | None:
    return session.scalars(
        select(Command).where(
            Command.run_id == run_id,
            Command.kind == CommandKind.EARLY_STOP,
            Command.status.in_(OUTSTANDING),
        )
    ).first()


def add_command(
    session: Session,
    run_id: int,
    *,
    kind: str,
    source: str,
    reason: str,
    alpha: float | None = None,
    best_step: int | None = None,
    rules: Sequence[str] = (),
    issued_step: int | None = None,
    expires_in: float | None = None,
) -> Command:
    """Add (not commit) a command. A new adjust_alpha supersedes outstanding ones (expired)."""
    now = utcnow()
    if kind == CommandKind.ADJUST_ALPHA:
        _expire(
            session,
            and_(
                Command.run_id == run_id,
                Command.kind == CommandKind.ADJUST_ALPHA,
                Command.status.in_(OUTSTANDING),
            ),
            "superseded by a newer adjust_alpha",
        )
    command = Command(
        run_id=run_id,
        kind=kind,
        status=CommandStatus.PENDING,
        source=source,
        reason=reason[:1024],
        alpha=alpha,
        best_step=best_step,
        rules=list(rules),
        issued_step=issued_step,
        created_at=now,
        expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
    )
    session.add(command)
    session.flush()
    if source == CommandSource.DETECTOR:
        stop = kind == CommandKind.EARLY_STOP
        _notify(session, "stop_issued" if stop else "alpha_changed", command)
    return command


def create_operator_command(session: Session, run_id: int, spec: CommandCreate) -> Command:
    """Issue an operator's command in one transaction: an adjust_alpha replaces the outstanding
    one; an early_stop while one is outstanding is a 409. The unique index is the guarantee; a
    writer that lost a race to it retries (a stop then sees the winner and gets its 409)."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return _create_operator_command(session, run_id, spec)
        except IntegrityError:
            session.rollback()
            if attempt + 1 == CREATE_ATTEMPTS:
                raise ConflictError(
                    f"run {run_id} has a concurrent {spec.kind} outstanding; retry",
                    field="kind",
                ) from None
    raise AssertionError("unreachable")


def _create_operator_command(session: Session, run_id: int, spec: CommandCreate) -> Command:
    run = _lock_run(session, run_id)
    if run.status in (RunStatus.FINISHED, RunStatus.FAILED):
        session.rollback()
        raise ConflictError(
            f"run {run_id} is {run.status}; commands go only to live runs", field="run_id"
        )
    if spec.kind == CommandKind.EARLY_STOP and outstanding_stop(session, run_id) is not None:
        session.rollback()
        raise ConflictError(
            f"run {run_id} already has an early_stop outstanding; wait for its ack", field="kind"
        )
    command = add_command(
        session,
        run_id,
        kind=spec.kind,
        source=CommandSource.OPERATOR,
        reason=spec.reason,
        alpha=spec.alpha,
        best_step=spec.best_step,
        expires_in=spec.expires_in,
        issued_step=run.last_step,
    )
    if spec.kind == CommandKind.EARLY_STOP:
        run.verdict = Verdict.STOPPED
        run.stop_reason = spec.reason
    if spec.kind == CommandKind.ADJUST_ALPHA:
        # The operator's α holds until an operator releases it (science.md §7): the controller
        # sends no adjust_alpha while pinned. Release: PATCH the run with alpha_pinned false.
        run.alpha_pinned = True
    session.commit()
    return command


def deliver(session: Session, run_id: int) -> list[Command]:
    """Outstanding commands, oldest first; pending ones become delivered. Expired ones drop out.

    Delivered-but-unacknowledged commands are returned again, so a trainer that died between
    receiving and applying a command gets it after it resumes (it deduplicates by id). Both
    transitions are conditional updates: an ack that lands meanwhile is never overwritten."""
    now = utcnow()
    _expire(
        session,
        and_(
            Command.run_id == run_id,
            Command.status == CommandStatus.PENDING,
            Command.expires_at.is_not(None),
            Command.expires_at < now,
        ),
        "expired before delivery",
    )
    session.execute(
        update(Command)
        .where(Command.run_id == run_id, Command.status == CommandStatus.PENDING)
        .values(status=CommandStatus.DELIVERED, delivered_at=now)
    )
    commands = list(
        session.scalars(
            select(Command)
            .where(Command.run_id == run_id, Command.status.in_(OUTSTANDING))
            .order_by(Command.id)
            .execution_options(populate_existing=True)
        )
    )
    session.commit()
    return commands


def acknowledge(session: Session, run_id: int, command_id: int, ack: CommandAck) -> Command:
    """Record the trainer's ack as a compare-and-set: only an outstanding command moves, so of
    concurrent acks exactly one wins; the same ack again is idempotent (200, nothing changes); a
    different one gets 409 and changes nothing. The run's α or status follows in the same
    transaction."""
    if ack.status == CommandStatus.APPLIED and ack.step is None:
        raise InvalidInputError("step is required when status is applied", field="step")
    run = _lock_run(session, run_id)
    now = utcnow()
    moved = session.execute(
        update(Command)
        .where(
            Command.id == command_id,
            Command.run_id == run_id,
            Command.status.in_(OUTSTANDING),
        )
        .values(
            status=ack.status,
            applied_step=ack.step,
            ack_detail=ack.detail,
            acked_at=now,
            delivered_at=func.coalesce(Command.delivered_at, now),
        )
        .execution_options(synchronize_session=False)
    )
    won = bool(moved.rowcount)  # type: ignore[attr-defined]
    command = session.scalars(
        select(Command).where(Command.id == command_id).execution_options(populate_existing=True)
    ).first()
    if command is None or command.run_id != run_id:
        session.rollback()
        raise NotFoundError(f"run {run_id} has no command {command_id}", field="command_id")
    if not won:
        session.rollback()
        if command.status in (CommandStatus.APPLIED, CommandStatus.REJECTED):
            same_step = ack.step is None or ack.step == command.applied_step
            if command.status == ack.status and same_step:
                return command
            raise ConflictError(
                f"command {command_id} was already acknowledged as {command.status} at step "
                f"{command.applied_step}; an ack cannot be changed",
                field="status",
            )
        raise ConflictError(
            f"command {command_id} expired ({command.ack_detail}); do not apply it",
            field="command_id",
        )
    applied = ack.status == CommandStatus.APPLIED
    if applied and command.kind == CommandKind.EARLY_STOP:
        run.status = RunStatus.STOPPED
        run.verdict = Verdict.STOPPED
        run.stop_reason = command.reason
    if applied and command.kind == CommandKind.ADJUST_ALPHA:
        run.alpha = command.alpha
    _notify(session, "command_applied" if applied else "command_rejected", command)
    session.commit()
    return command


def history(
    session: Session,
    run_id: int,
    *,
    kind: CommandKind | None = None,
    status: CommandStatus | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> tuple[list[Command], int | None]:
    query = select(Command).where(Command.run_id == run_id).order_by(Command.id.desc())
    if kind is not None:
        query = query.where(Command.kind == kind)
    if status is not None:
        query = query.where(Command.status == status)
    if before_id is not None:
        query = query.where(Command.id < before_id)
    return keyset_page(session, query, limit)


def alpha_decisions(session: Session, run_id: int, limit: int = 1000) -> list[AlphaDecisionRow]:
    return list(
        session.scalars(
            select(AlphaDecisionRow)
            .where(AlphaDecisionRow.run_id == run_id)
            .order_by(AlphaDecisionRow.id.desc())
            .limit(limit)
        )
    )


def detection_summary(session: Session, run_id: int) -> tuple[bool, float | None, int | None]:
    """In one query: whether an early_stop is outstanding, the α of the newest outstanding
    adjust_alpha (the α controller's working value while the trainer has not applied it), and
    the step at which the run's newest applied adjust_alpha took effect."""
    return detection_summary_of(
        session.connection().execute(_DETECTION_SUMMARY, {"run_id": run_id}).one()
    )


def detection_summary_of(row: Any) -> tuple[bool, float | None, int | None]:
    """:func:`detection_summary` from a row holding ``DETECTION_SUMMARY``'s columns."""
    return bool(row.stop), row.alpha, row.applied_step


_OF_RUN = Command.run_id == bindparam("run_id")
_DETECTION_SUMMARY = select(
    exists()
    .where(_OF_RUN, Command.kind == CommandKind.EARLY_STOP, Command.status.in_(OUTSTANDING))
    .label("stop"),
    select(Command.alpha)
    .where(_OF_RUN, Command.kind == CommandKind.ADJUST_ALPHA, Command.status.in_(OUTSTANDING))
    .order_by(Command.id.desc())
    .limit(1)
    .scalar_subquery()
    .label("alpha"),
    select(func.max(Command.applied_step))
    .where(
        _OF_RUN,
        Command.kind == CommandKind.ADJUST_ALPHA,
        Command.status == CommandStatus.APPLIED,
    )
    .scalar_subquery()
    .label("applied_step"),
)
#: :func:`detection_summary`'s columns (``stop``, ``alpha``, ``applied_step``; parameter
#: ``run_id``) as a one-row subquery, for a statement that reads them with other rows.
DETECTION_SUMMARY = _DETECTION_SUMMARY.subquery("command_summary")
