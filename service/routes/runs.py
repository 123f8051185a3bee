"""Run registration and run reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from service.body_guard import GuardedRoute
from service.db.models import Run
from service.deps import (
    NO_QUERY,
    BrokerDep,
    FleetReader,
    Operator,
    PrincipalDep,
    RunReader,
    SessionDep,
    SettingsDep,
    TokenCacheDep,
)
from service.schemas.common import Page
from service.schemas.query import QueryParameters
from service.schemas.runs import RunCreate, RunOut, RunRegistered, RunUpdate
from service.storage import runs as run_store
from service.storage import tokens as token_store
from service.wire import RunStatus

_Out = TypeVar("_Out", bound=RunOut)
router = APIRouter(prefix="/api/v1/runs", tags=["runs"], route_class=GuardedRoute)
RunId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Run id")]


@router.post(
    "",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": RunRegistered, "description": "The run existed: a resumed trainer."}},
    summary="Register a run (idempotent on project + name); operator token",
    description="With authentication on, the answer carries a new `ingest_token` for this run: "
    "the trainer uses it to send steps and receive commands.",
)
def register_run(
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    token_cache: TokenCacheDep,
    _: Operator,
) -> RunRegistered:
    run, created = run_store.register(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    token = None
    if settings.auth:
        # A new token for this trainer; a re-registration revokes the previous trainer's.
        token = token_store.rotate_ingest(session, run.id)
        token_cache.clear()
    registered = RunRegistered.model_validate(run)
    return _with_reported_alpha(session, [registered])[0].model_copy(update={"ingest_token": token})


class RunsQuery(QueryParameters):
    project: str | None = Field(None, max_length=128)
    status_: RunStatus | None = Field(None, alias="status")
    cursor: str | None = Field(None, max_length=18, pattern=r"^\d{1,18}$")
    limit: int = Field(100, ge=1, le=1000)


@router.get("", summary="List runs")
def list_runs(
    session: SessionDep, _: FleetReader, query: Annotated[RunsQuery, Query()]
) -> Page[RunOut]:
    rows, next_id = run_store.list_runs(
        session,
        project=query.project,
        status=query.status_,
        after_id=int(query.cursor) if query.cursor else None,
        limit=query.limit,
    )
    return Page[RunOut].of(_shown(session, rows), next_id)


@router.get("/{run_id}", dependencies=[NO_QUERY], summary="One run")
def get_run(run_id: RunId, session: SessionDep, _: RunReader) -> RunOut:
    return _shown(session, [run_store.get(session, run_id)])[0]


@router.patch(
    "/{run_id}",
    dependencies=[NO_QUERY],
    summary="Change a run: end it, its rule settings and policy, or release the α pin",
)
async def update_run(
    run_id: RunId,
    body: RunUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    broker: BrokerDep,
    token_cache: TokenCacheDep,
) -> RunOut:
    if not principal.is_operator:
        own_run_end = (
            principal.can_write_run(run_id)
            and body.status in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.STOPPED)
            and body.model_fields_set <= {"status", "failure_reason"}
        )
        if not own_run_end:
            raise HTTPException(
                403,
                "this token may not change run settings: it needs an operator token "
                "(an ingest token may only end its own run)",
            )
    run = await run_in_threadpool(run_store.update_run, session, run_id, body)
    if run.status in run_store.ENDED:
        token_cache.clear()  # its ingest tokens were revoked: stop honouring cached ones here
    if body.status is not None:
        await broker.publish(run_id)  # a run that ended releases its trainer's long-poll
    return (await run_in_threadpool(_shown, session, [run]))[0]


@router.delete(
    "/{run_id}",
    dependencies=[NO_QUERY],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a run and everything stored about it; operator token",
    description="Steps, per-query rows, alerts, commands, α decisions and the run's ingest "
    "tokens go with it. Not undoable.",
)
async def delete_run(
    run_id: RunId,
    session: SessionDep,
    broker: BrokerDep,
    token_cache: TokenCacheDep,
    _: Operator,
) -> Response:
    await run_in_threadpool(run_store.delete_run, session, run_id)
    token_cache.clear()
    await broker.publish(run_id)  # a trainer still long-polling learns the run is gone
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _shown(session: SessionDep, runs: Sequence[Run]) -> list[RunOut]:
    return _with_reported_alpha(session, [RunOut.model_validate(run) for run in runs])


def _with_reported_alpha(session: SessionDep, shown: list[_Out]) -> list[_Out]:
    """α as the API shows it: the trainer's last acknowledged adjust_alpha (``runs.alpha``),
    else what the run's newest step reports."""
    reported = run_store.reported_alphas(session, [out.id for out in shown if out.alpha is None])
    return [
        out.model_copy(update={"alpha": reported[out.id]}) if out.id in reported else out
        for out in shown
    ]
