"""Commands: create, deliver (long-poll side), acknowledge, list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import AlphaDecisionRow, Command, Run
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.schemas.commands import CommandAck, CommandCreate
from service.storage._pagination import keyset_page

OUTSTANDING = ("pending", "delivered")


def outstanding_stop(session: Session, run_id: int) -> Command | None:
    return session.scalars(
        select(Command).where(
            Command.run_id == run_id,
            Command.kind == "early_stop",
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
    if kind == "adjust_alpha":
        session.execute(
            update(Command)
            .where(
                Command.run_id == run_id,
                Command.kind == "adjust_alpha",
                Command.status.in_(OUTSTANDING),
            )
            .values(status="expired", ack_detail="superseded by a newer adjust_alpha")
        )
    command = Command(
        run_id=run_id,
        kind=kind,
        status="pending",
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
    return command


def create_operator_command(session: Session, run_id: int, spec: CommandCreate) -> Command:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    if run.status in ("finished", "failed"):
        raise ConflictError(
            f"run {run_id} is {run.status}; commands go only to live runs", field="run_id"
        )
    if spec.kind == "early_stop" and outstanding_stop(session, run_id) is not None:
        raise ConflictError(
            f"run {run_id} already has an early_stop outstanding; wait for its ack", field="kind"
        )
    command = add_command(
        session,
        run_id,
        kind=spec.kind,
        source="operator",
        reason=spec.reason,
        alpha=spec.alpha,
        best_step=spec.best_step,
        expires_in=spec.expires_in,
        issued_step=run.last_step,
    )
    if spec.kind == "early_stop":
        run.verdict = "stopped"
        run.stop_reason = spec.reason
    session.commit()
    return command


def deliver(session: Session, run_id: int) -> list[Command]:
    """Outstanding commands, oldest first; pending ones become delivered. Expired ones drop out.

    Delivered-but-unacknowledged commands are returned again, so a trainer that died between
    receiving and applying a command gets it after it resumes (it deduplicates by id)."""
    now = utcnow()
    session.execute(
        update(Command)
        .where(
            Command.run_id == run_id,
            Command.status == "pending",
            Command.expires_at.is_not(None),
            Command.expires_at < now,
        )
        .values(status="expired", ack_detail="expired before delivery")
    )
    commands = list(
        session.scalars(
            select(Command)
            .where(Command.run_id == run_id, Command.status.in_(OUTSTANDING))
            .order_by(Command.id)
        )
    )
    for command in commands:
        if command.status == "pending":
            command.status = "delivered"
            command.delivered_at = now
    session.commit()
    return commands


def has_outstanding(session: Session, run_id: int) -> bool:
    return (
        session.scalar(
            select(Command.id)
            .where(Command.run_id == run_id, Command.status.in_(OUTSTANDING))
            .limit(1)
        )
        is not None
    )


def acknowledge(session: Session, run_id: int, command_id: int, ack: CommandAck) -> Command:
    """Record the trainer's ack; idempotent (the same ack again changes nothing)."""
    command = session.get(Command, command_id)
    if command is None or command.run_id != run_id:
        raise NotFoundError(f"run {run_id} has no command {command_id}", field="command_id")
    if command.status in ("applied", "rejected"):
        if command.status == ack.status and (ack.step is None or ack.step == command.applied_step):
            return command
        raise ConflictError(
            f"command {command_id} was already acknowledged as {command.status} at step "
            f"{command.applied_step}; an ack cannot be changed",
            field="status",
        )
    if command.status == "expired":
        raise ConflictError(
            f"command {command_id} expired ({command.ack_detail}); do not apply it",
            field="command_id",
        )
    if ack.status == "applied" and ack.step is None:
        raise InvalidInputError("step is required when status is applied", field="step")
    now = utcnow()
    command.status = ack.status
    command.applied_step = ack.step
    command.ack_detail = ack.detail
    command.acked_at = now
    if command.delivered_at is None:
        command.delivered_at = now
    run = session.get(Run, run_id)
    assert run is not None
    if ack.status == "applied" and command.kind == "early_stop":
        run.status = "stopped"
        run.verdict = "stopped"
        run.stop_reason = command.reason
    if ack.status == "applied" and command.kind == "adjust_alpha":
        run.alpha = command.alpha
    session.commit()
    return command


def history(
    session: Session,
    run_id: int,
    *,
    kind: str | None = None,
    status: str | None = None,
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


def outstanding_summary(session: Session, run_id: int) -> tuple[bool, float | None]:
    """In one query: whether an early_stop is outstanding, and the α of the newest outstanding
    adjust_alpha (the α controller's working value while the trainer has not applied it)."""
    rows = session.execute(
        select(Command.kind, Command.alpha)
        .where(Command.run_id == run_id, Command.status.in_(OUTSTANDING))
        .order_by(Command.id)
    ).all()
    stop = any(kind == "early_stop" for kind, _ in rows)
    alphas = [alpha for kind, alpha in rows if kind == "adjust_alpha"]
    return stop, alphas[-1] if alphas else None
