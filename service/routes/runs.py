"""Run registration and run reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service.deps import SessionDep
from service.schemas.common import Page
from service.schemas.runs import RunCreate, RunOut, RunStatus
from service.storage import runs as run_store

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
RunId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Run id")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": RunOut, "description": "The run existed: a resumed trainer."}},
    summary="Register a run (idempotent on project + name)",
)
def register_run(body: RunCreate, session: SessionDep, response: Response) -> RunOut:
    run, created = run_store.register(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return RunOut.model_validate(run)


@router.get("", summary="List runs")
def list_runs(
    session: SessionDep,
    project: Annotated[str | None, Query(max_length=128)] = None,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    cursor: Annotated[str | None, Query(max_length=32, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[RunOut]:
    rows, next_id = run_store.list_runs(
        session,
        project=project,
        status=status_,
        after_id=int(cursor) if cursor else None,
        limit=limit,
    )
    return Page[RunOut](
        items=[RunOut.model_validate(run) for run in rows],
        next_cursor=None if next_id is None else str(next_id),
    )


@router.get("/{run_id}", summary="One run")
def get_run(run_id: RunId, session: SessionDep) -> RunOut:
    return RunOut.model_validate(run_store.get(session, run_id))
