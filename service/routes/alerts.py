"""Alerts (fleet-wide and per run), the collapse summary, and pre-RL triage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.body_guard import GuardedRoute
from service.deps import FleetReader, RunReader, SessionDep
from service.detectors import RULE_NAMES, TriageRequest, TriageResponse, triage
from service.errors import InvalidInputError
from service.routes.runs import RunId
from service.schemas.alerts import AlertOut, CollapseSummary
from service.schemas.common import Page, UtcDateTime
from service.storage import alerts as alert_store
from service.storage import runs as run_store
from service.wire import AlertStatus, Severity

router = APIRouter(prefix="/api/v1", tags=["alerts"], route_class=GuardedRoute)

Cursor = Annotated[str | None, Query(max_length=18, pattern=r"^\d{1,18}$")]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _rule(rule: str | None) -> str | None:
    if rule is not None and rule not in RULE_NAMES:
        raise InvalidInputError(
            f"rule {rule!r} is not a rule; known rules: {', '.join(RULE_NAMES)}", field="rule"
        )
    return rule


@router.get("/alerts", summary="Alerts across the fleet, newest first")
def fleet_alerts(
    session: SessionDep,
    _: FleetReader,
    run_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    project: Annotated[str | None, Query(max_length=128)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
    since: Annotated[UtcDateTime | None, Query(description="Alerts updated at or after")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[AlertOut]:
    rows, next_id = alert_store.list_alerts(
        session,
        run_id=run_id,
        project=project,
        rule=_rule(rule),
        severity=severity,
        status=status,
        since=since,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    return Page[AlertOut].of(rows, next_id)


@router.get("/runs/{run_id}/alerts", summary="One run's alerts, newest first")
def run_alerts(
    run_id: RunId,
    session: SessionDep,
    _: RunReader,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[AlertOut]:
    run_store.get(session, run_id)
    rows, next_id = alert_store.list_alerts(
        session,
        run_id=run_id,
        rule=_rule(rule),
        severity=severity,
        status=status,
        before_id=int(cursor) if cursor else None,
        limit=limit,
    )
    return Page[AlertOut].of(rows, next_id)


@router.get(
    "/runs/{run_id}/collapse",
    summary="Model Collapse Step, best step, verdict and the latest value of each signal",
)
def collapse(run_id: RunId, session: SessionDep, _: RunReader) -> CollapseSummary:
    return alert_store.collapse_summary(session, run_id)


@router.post("/triage", summary="Pre-RL triage of candidate checkpoints (science §1 stage a)")
def triage_checkpoints(body: TriageRequest, _: FleetReader) -> TriageResponse:
    return triage(body)
