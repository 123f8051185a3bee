"""Alert reads: fleet-wide and per run, with cursor pagination; the collapse summary."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Alert, Run, Step
from service.detectors import DetectorConfig
from service.detectors.rules_rewards import MODEL_COLLAPSE_STEP_RULE
from service.schemas.alerts import AlertOut, CollapseSummary, SignalValue
from service.storage import runs as run_store
from service.storage._pagination import keyset_page
from service.wire import AlertStatus, Severity
from service.wire.metrics import STEP_METRIC_NAMES

LATEST_SCAN_STEPS = 200


def list_alerts(
    session: Session,
    *,
    run_id: int | None = None,
    project: str | None = None,
    rule: str | None = None,
    severity: Severity | None = None,
    status: AlertStatus | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> tuple[list[Alert], int | None]:
    """Newest first; the second value is the cursor (an alert id) for the next page."""
    query = select(Alert).order_by(Alert.id.desc())
    if run_id is not None:
        query = query.where(Alert.run_id == run_id)
    if project is not None:
        query = query.join(Run, Run.id == Alert.run_id).where(Run.project == project)
    if rule is not None:
        query = query.where(Alert.rule == rule)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    if status is not None:
        query = query.where(Alert.status == status)
    if since is not None:
        query = query.where(Alert.updated_at >= since)
    if before_id is not None:
        query = query.where(Alert.id < before_id)
    return keyset_page(session, query, limit)


def collapse_summary(session: Session, run_id: int) -> CollapseSummary:
    run = run_store.get(session, run_id)
    config = DetectorConfig.model_validate(run.detector_config or {}, strict=False)
    open_alerts, _ = list_alerts(session, run_id=run_id, status=AlertStatus.OPEN, limit=1000)
    recent = session.scalars(
        select(Step)
        .where(Step.run_id == run_id)
        .order_by(Step.step.desc())
        .limit(LATEST_SCAN_STEPS)
    ).all()
    latest: dict[str, SignalValue] = {}
    for name in sorted(STEP_METRIC_NAMES):
        for row in recent:
            value = getattr(row, name)
            if value is not None or name in row.non_finite:
                latest[name] = SignalValue(step=row.step, value=value)
                break
    return CollapseSummary(
        run_id=run.id,
        verdict=run.verdict,
        status=run.status,
        model_collapse_step=run.model_collapse_step,
        collapse_threshold=config.settings(MODEL_COLLAPSE_STEP_RULE).threshold,
        best_step=run.best_step,
        # runs.alpha is the trainer's last acknowledged α; before any, what the newest step says
        alpha=run.alpha if run.alpha is not None or not recent else recent[0].alpha,
        stop_reason=run.stop_reason,
        open_alerts=[AlertOut.model_validate(alert) for alert in open_alerts],
        latest=latest,
    )
