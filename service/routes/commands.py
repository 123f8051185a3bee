"""Commands: operators issue them, trainers long-poll and acknowledge them."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from sqlalchemy.orm import Session, sessionmaker

from service.body_guard import GuardedRoute
from service.deps import (
    NO_QUERY,
    BrokerDep,
    Operator,
    RunReader,
    RunWriter,
    SessionDep,
    SessionFactoryDep,
    SettingsDep,
)
from service.routes.runs import RunId
from service.schemas.commands import AlphaDecisionOut, CommandAck, CommandCreate, CommandOut
from service.schemas.common import Page
from service.schemas.query import QueryParameters
from service.storage import commands as command_store
from service.storage import runs as run_store
from service.wire import CommandKind, CommandStatus, RunStatus

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["commands"], route_class=GuardedRoute)
CommandId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post(
    "/commands",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_201_CREATED,
    summary="Issue a command (operator): early_stop or adjust_alpha",
)
async def issue_command(
    run_id: RunId, body: CommandCreate, session: SessionDep, broker: BrokerDep, _: Operator
) -> CommandOut:
    command = await run_in_threadpool(command_store.create_operator_command, session, run_id, body)
    await broker.publish(run_id)
    return CommandOut.model_validate(command)


class PollQuery(QueryParameters):
    wait: float = Field(0, ge=0, le=300, description="Seconds to wait (long-poll)")


def _deliver(factory: sessionmaker[Session], run_id: int) -> tuple[list[CommandOut], bool]:
    """Outstanding commands, and whether the run can still receive any (it has not ended)."""
    with factory() as session:
        commands = [CommandOut.model_validate(c) for c in command_store.deliver(session, run_id)]
        live = run_store.get(session, run_id).status == RunStatus.RUNNING
    return commands, live


def _check_run(factory: sessionmaker[Session], run_id: int) -> None:
    with factory() as session:
        run_store.get(session, run_id)


@router.get(
    "/commands",
    summary="Outstanding commands for the trainer (long-poll with wait=SECONDS)",
    description="Returns pending and delivered-but-unacknowledged commands, oldest first, and "
    "marks pending ones delivered. With `wait`, holds the request until a command exists, the "
    "run ends, or the wait ends; a command created by any worker wakes it within milliseconds.",
)
async def poll_commands(
    run_id: RunId,
    factory: SessionFactoryDep,
    broker: BrokerDep,
    settings: SettingsDep,
    _: RunWriter,
    query: Annotated[PollQuery, Query()],
) -> list[CommandOut]:
    await run_in_threadpool(_check_run, factory, run_id)
    deadline = time.monotonic() + min(query.wait, settings.command_poll_max_wait)
    async with broker.listen(run_id) as listener:
        while True:
            commands, live = await run_in_threadpool(_deliver, factory, run_id)
            remaining = deadline - time.monotonic()
            if commands or not live or remaining <= 0:
                return commands
            if not await listener.wait(remaining):
                # Timed out: one last look, in case a wake-up was lost (the store is the truth).
                return (await run_in_threadpool(_deliver, factory, run_id))[0]
            listener.clear()


@router.post(
    "/commands/{command_id}/ack",
    dependencies=[NO_QUERY],
    summary="Acknowledge a command (idempotent): applied at a step, or rejected",
)
def ack_command(
    run_id: RunId, command_id: CommandId, body: CommandAck, session: SessionDep, _: RunWriter
) -> CommandOut:
    return CommandOut.model_validate(command_store.acknowledge(session, run_id, command_id, body))


class HistoryQuery(QueryParameters):
    kind: CommandKind | None = None
    status_: CommandStatus | None = Field(None, alias="status")
    cursor: str | None = Field(None, max_length=18, pattern=r"^\d{1,18}$")
    limit: int = Field(100, ge=1, le=1000)


@router.get("/commands/history", summary="Every command of the run, newest first")
def command_history(
    run_id: RunId, session: SessionDep, _: RunReader, query: Annotated[HistoryQuery, Query()]
) -> Page[CommandOut]:
    run_store.get(session, run_id)
    rows, next_id = command_store.history(
        session,
        run_id,
        kind=query.kind,
        status=query.status_,
        before_id=int(query.cursor) if query.cursor else None,
        limit=query.limit,
    )
    return Page[CommandOut].of(rows, next_id)


@router.get(
    "/alpha-decisions",
    dependencies=[NO_QUERY],
    summary="The α controller's decisions, newest first",
)
def alpha_decisions(run_id: RunId, session: SessionDep, _: RunReader) -> list[AlphaDecisionOut]:
    run_store.get(session, run_id)
    return [
        AlphaDecisionOut.model_validate(d) for d in command_store.alpha_decisions(session, run_id)
    ]
