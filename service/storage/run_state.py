"""What ``/metrics`` exports for each run, read in one pass at scrape time (``run_metrics.py``
renders it): the runs still exported, their newest step's columns, open alerts and commands."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from service.db.models import Alert, Command, Run, Step
from service.wire import AlertStatus


@dataclass(frozen=True)
class ExportedRuns:
    """``runs``: one row per exported run, by id, with the run's columns (``id``, ``project``,
    ``name``, ``group_size``, ``status``, ``verdict``, ``alpha``, ``alpha_pinned``,
    ``model_collapse_step``, ``last_step``, ``last_step_at``), the requested step columns of its
    newest step, ``step_alpha``, ``non_finite`` and ``query_histograms`` (None without a step);
    ``open_alerts``: run id → (rule, severity, count); ``commands``: run id → (kind, status) →
    count."""

    runs: Sequence[Any]  # sqlalchemy Rows
    open_alerts: dict[int, list[tuple[str, str, int]]]
    commands: dict[int, dict[tuple[str, str], int]]


def read_run_state(
    session: Session, *, finished_after: datetime, step_columns: Sequence[str]
) -> ExportedRuns:
    """The runs not finished, or finished after ``finished_after`` (the grace period)."""
    exported = or_(Run.finished_at.is_(None), Run.finished_at > finished_after)
    runs = session.execute(
        select(
            Run.id,
            Run.project,
            Run.name,
            Run.group_size,
            Run.status,
            Run.verdict,
            Run.alpha,
            Run.alpha_pinned,
            Run.model_collapse_step,
            Run.last_step,
            Run.last_step_at,
            *(getattr(Step, column) for column in step_columns),
            Step.alpha.label("step_alpha"),
            Step.non_finite,
            Step.query_histograms,
        )
        .outerjoin(Step, and_(Step.run_id == Run.id, Step.step == Run.last_step))
        .where(exported)
        .order_by(Run.id)
    ).all()
    alerts: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    for run_id, rule, severity, count in session.execute(
        select(Alert.run_id, Alert.rule, Alert.severity, func.count())
        .where(Alert.status == AlertStatus.OPEN)
        .group_by(Alert.run_id, Alert.rule, Alert.severity)
    ):
        alerts[run_id].append((rule, severity, count))
    commands: dict[int, dict[tuple[str, str], int]] = defaultdict(dict)
    exported_ids = select(Run.id).where(exported).scalar_subquery()
    for run_id, kind, status, count in session.execute(
        select(Command.run_id, Command.kind, Command.status, func.count())
        .where(Command.run_id.in_(exported_ids))
        .group_by(Command.run_id, Command.kind, Command.status)
    ):
        commands[run_id][(kind, status)] = count
    return ExportedRuns(runs, alerts, commands)
