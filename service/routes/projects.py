"""Per-project settings: retention of per-query rows (applied by ``sharpwatch gc``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from fastapi.concurrency import run_in_threadpool

from service.body_guard import GuardedRoute
from service.deps import NO_QUERY, FleetReader, Operator, SessionDep
from service.schemas.retention import RetentionIn, RetentionOut
from service.storage import retention as retention_store

router = APIRouter(
    prefix="/api/v1/projects/{project}",
    tags=["projects"],
    route_class=GuardedRoute,
    dependencies=[NO_QUERY],  # no route here takes query parameters
)
Project = Annotated[str, Path(min_length=1, max_length=128, description="Project name.")]


@router.get("/retention", summary="A project's retention of per-query rows")
def get_retention(project: Project, session: SessionDep, _: FleetReader) -> RetentionOut:
    return RetentionOut.model_validate(retention_store.get(session, project))


@router.put(
    "/retention",
    summary="Set a project's retention of per-query rows; operator token",
    description="A run keeps the per-query rows of its newest `full_steps` steps; older steps "
    "keep theirs only when step % `keep_every` == 0 (0: none). `sharpwatch gc` applies it. "
    "Steps, step series and per-step histograms are never pruned.",
)
async def put_retention(
    project: Project, body: RetentionIn, session: SessionDep, _: Operator
) -> RetentionOut:
    row = await run_in_threadpool(retention_store.put, session, project, body)
    return RetentionOut.model_validate(row)


@router.delete(
    "/retention",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a project's retention (keep every per-query row); operator token",
)
async def delete_retention(project: Project, session: SessionDep, _: Operator) -> Response:
    await run_in_threadpool(retention_store.remove, session, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
