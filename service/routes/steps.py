"""Step ingest and series reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import Field, TypeAdapter, ValidationError

from service import ingest
from service.body_guard import GuardedRoute
from service.deps import NO_QUERY, BrokerDep, MetricsDep, RunReader, RunWriter, SessionDep
from service.errors import InvalidInputError
from service.routes.runs import RunId
from service.schemas.common import MAX_INT32, MetricName
from service.schemas.query import QueryParameters
from service.schemas.steps import (
    QueryHistory,
    QueryId,
    StepBatchIn,
    StepBatchResult,
    StepDetail,
    StepSeries,
)
from service.storage import runs as run_store
from service.storage import steps as step_store

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["steps"], route_class=GuardedRoute)
_METRIC_LIST: TypeAdapter[list[str]] = TypeAdapter(list[MetricName])


@router.post(
    "/steps",
    dependencies=[NO_QUERY],
    summary="Ingest step records (idempotent; all or nothing)",
    responses={
        404: {"description": "Unknown run"},
        409: {"description": "A re-sent step differs from the stored one"},
        422: {"description": "A field is invalid; the message names it"},
    },
)
async def ingest_steps(
    run_id: RunId,
    body: StepBatchIn,
    session: SessionDep,
    metrics: MetricsDep,
    broker: BrokerDep,
    _: RunWriter,
) -> StepBatchResult:
    return await ingest.ingest_steps(session, run_id, body, metrics=metrics, broker=broker)


class StepRange(QueryParameters):
    from_: int | None = Field(None, alias="from", ge=0, le=MAX_INT32)
    to: int | None = Field(None, ge=0, le=MAX_INT32)


class StepSeriesQuery(StepRange):
    metrics: str | None = Field(
        None, max_length=4096, description="Comma-separated metric names; default all."
    )
    limit: int = Field(1000, ge=1, le=10000)
    cursor: str | None = Field(
        None,
        max_length=10,
        pattern=r"^\d{1,10}$",
        description="`next_cursor` of the previous page (the paging shape of every listing).",
    )


@router.get("/steps", summary="Step series of a run")
def step_series(
    run_id: RunId,
    session: SessionDep,
    _: RunReader,
    query: Annotated[StepSeriesQuery, Query()],
) -> StepSeries:
    run_store.get(session, run_id)
    names = _metric_list(query.metrics)
    start = query.from_ if query.cursor is None else max(query.from_ or 0, int(query.cursor))
    return step_store.series(
        session, run_id, start=start, stop=query.to, metrics=names, limit=query.limit
    )


@router.get("/steps/{step}", dependencies=[NO_QUERY], summary="One step with its per-query rows")
def step_detail(
    run_id: RunId,
    step: Annotated[int, Path(ge=0, le=MAX_INT32)],
    session: SessionDep,
    _: RunReader,
) -> StepDetail:
    run_store.get(session, run_id)
    return step_store.detail(session, run_id, step)


@router.get(
    "/queries/{query_id:path}",
    summary="One query's history across steps",
    description="The query id is the rest of the path, so ids such as `gsm8k/train/000017` "
    "work as they are; percent-encode characters that URLs reserve (`?`, `#`, `%`, spaces).",
)
def query_history(
    run_id: RunId,
    query_id: QueryId,
    session: SessionDep,
    _: RunReader,
    steps: Annotated[StepRange, Query()],
) -> QueryHistory:
    run_store.get(session, run_id)
    return step_store.query_history(session, run_id, query_id, start=steps.from_, stop=steps.to)


def _metric_list(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    try:
        return _METRIC_LIST.validate_python(names)
    except ValidationError as exc:
        raise InvalidInputError(
            f"metrics: {exc.errors()[0]['msg']} (comma-separated metric names)", field="metrics"
        ) from exc
