"""Alerts (fleet-wide and per run), the collapse summary, and pre-RL triage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from service.body_guard import GuardedRoute
from service.deps import NO_QUERY, FleetReader, RunReader, SessionDep
from service.detectors import RULE_NAMES, TriageRequest, TriageResponse, triage
from service.errors import InvalidInputError
from service.routes.runs import RunId
from service.schemas.alerts import AlertOut, CollapseSummary
from service.schemas.common import Page, UtcDateTime
from service.schemas.query import QueryParameters
from service.storage import alerts as alert_store
from service.storage import runs as run_store
from service.wire import AlertStatus, Severity

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=GuardedRoute)


def _rule(rule: str | None) -> str | None:
    if rule is not None and rule not in RULE_NAMES:
        raise InvalidInputError(
            f"rule {rule!r} is not a rule; known rules: {', '.join(RULE_NAMES)}", field="rule"
        )
    return rule


class RunAlertsQuery(QueryParameters):
    rule: str | None = Field(None, max_length=64)
    severity: Severity | None = None
    status: AlertStatus | None = None
    cursor: str | None = Field(None, max_length=18, pattern=r"^\d{1,18}$")
    limit: int = Field(100, ge=1, le=1000)


class FleetAlertsQuery(RunAlertsQuery):
    run_id: int | None = Field(None, ge=1, le=2**31 - 1)
    project: str | None = Field(None, max_length=128)
    since: UtcDateTime | None = Field(None, description="Alerts updated at or after")


@router.get("/alerts", summary="Alerts across the fleet, newest first")
def fleet_alerts(
    session: SessionDep, _: FleetReader, query: Annotated[FleetAlertsQuery, Query()]
) -> Page[AlertOut]:
    rows, next_id = alert_store.list_alerts(
        session,
        run_id=query.run_id,
        project=query.project,
        rule=_rule(query.rule),
        severity=query.severity,
        status=query.status,
        since=query.since,
        before_id=int(query.cursor) if query.cursor else None,
        limit=query.limit,
    )
    return Page[AlertOut].of(rows, next_id)


@router.get("/runs/{run_id}/alerts", summary="One run's alerts, newest first")
def run_alerts(
    run_id: RunId,
    session: SessionDep,
    _: RunReader,
    query: Annotated[RunAlertsQuery, Query()],
) -> Page[AlertOut]:
    run_store.get(session, run_id)
    rows, next_id = alert_store.list_alerts(
        session,
        run_id=run_id,
        rule=_rule(query.rule),
        severity=query.severity,
        status=query.status,
        before_id=int(query.cursor) if query.cursor else None,
        limit=query.limit,
    )
    return Page[AlertOut].of(rows, next_id)


@router.get(
    "/runs/{run_id}/collapse",
    dependencies=[NO_QUERY],
    summary="Model Collapse Step, best step, verdict and the latest value of each signal",
)
def collapse(run_id: RunId, session: SessionDep, _: RunReader) -> CollapseSummary:
    return alert_store.collapse_summary(session, run_id)


@router.post(
    "/triage",
    dependencies=[NO_QUERY],
    summary="Pre-RL triage of candidate checkpoints (science §1 stage a)",
)
def triage_checkpoints(body: TriageRequest, _: FleetReader) -> TriageResponse:
    return triage(body)
