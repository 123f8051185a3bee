"""Per-project retention settings for per-query rows, and the pass that applies them.

The rule (a project's ``ProjectRetention`` row): a run keeps the per-query rows of its newest
``full_steps`` step numbers (step > last_step − full_steps); of older steps it keeps only those
whose step is a multiple of ``keep_every`` (0: none). Query history then shows every
``keep_every``-th point of the old part of a run and every point of its recent part; step rows
(series, detail's metrics, per-step histograms) are never touched.

``collect`` deletes in step windows of about ``batch_rows`` rows, one short transaction each,
so ingest into the same run (PostgreSQL row locks; SQLite's single writer) waits at most one
window's delete.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, delete, func, select
from sqlalchemy.orm import Session

from service.db.models import ProjectRetention, QueryStat, Run, Step
from service.errors import NotFoundError
from service.schemas.retention import RetentionIn, RunCollected

DEFAULT_BATCH_ROWS = 10_000
_QUERY_TABLE = cast(Table, QueryStat.__table__)


def get(session: Session, project: str) -> ProjectRetention:
    row = session.get(ProjectRetention, project)
    if row is None:
        raise NotFoundError(
            f"project {project!r} has no retention settings (it keeps every per-query row); "
            "set them with PUT /api/v1/projects/{project}/retention",
            field="project",
        )
    return row


def put(session: Session, project: str, spec: RetentionIn) -> ProjectRetention:
    row = session.get(ProjectRetention, project, with_for_update=True)
    if row is None:
        row = ProjectRetention(project=project)
        session.add(row)
    row.full_steps = spec.full_steps
    row.keep_every = spec.keep_every
    session.commit()
    return row


def remove(session: Session, project: str) -> None:
    session.delete(get(session, project))
    session.commit()


def _pruned(cutoff: int, keep_every: int) -> ColumnElement[bool]:
    """Query rows that the rule deletes (of one run): past the window and not kept."""
    old = QueryStat.step <= cutoff
    if keep_every == 0:
        return old
    return old & (QueryStat.step % keep_every != 0)


def collect(
    session: Session,
    *,
    project: str | None = None,
    dry_run: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> list[RunCollected]:
    """Apply each project's retention to its runs (only ``project``'s when given). Returns, per
    run with rows past its window, how many per-query rows were deleted (dry run: would be)."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    query = select(ProjectRetention)
    if project is not None:
        get(session, project)
        query = query.where(ProjectRetention.project == project)
    rules = {row.project: (row.full_steps, row.keep_every) for row in session.scalars(query)}
    runs = session.execute(
        select(Run.id, Run.project, Run.last_step)
        .where(Run.project.in_(list(rules)), Run.last_step.is_not(None))
        .order_by(Run.id)
    ).all()
    session.commit()  # end the read: every window below is its own short transaction
    report: list[RunCollected] = []
    for run_id, run_project, last_step in runs:
        assert last_step is not None  # filtered above
        full_steps, keep_every = rules[run_project]
        cutoff = last_step - full_steps
        if cutoff < 0 or keep_every == 1:
            continue
        if dry_run:
            count = session.scalar(
                select(func.count())
                .select_from(QueryStat)
                .where(QueryStat.run_id == run_id, _pruned(cutoff, keep_every))
            )
            session.commit()
            deleted = int(count or 0)
        else:
            deleted = _prune_run(session, run_id, cutoff, keep_every, batch_rows)
        report.append(
            RunCollected(
                run_id=run_id, project=run_project, cutoff_step=cutoff, rows_deleted=deleted
            )
        )
    return report


def _next_step(session: Session, run_id: int, after: int, cutoff: int) -> int | None:
    """The lowest step in (after, cutoff] that still has query rows (an index seek)."""
    value = session.scalar(
        select(func.min(QueryStat.step)).where(
            QueryStat.run_id == run_id, QueryStat.step > after, QueryStat.step <= cutoff
        )
    )
    return None if value is None else int(value)


def _prune_run(session: Session, run_id: int, cutoff: int, keep_every: int, batch: int) -> int:
    widest = session.scalar(select(func.max(Step.n_queries)).where(Step.run_id == run_id))
    width = max(1, batch // max(1, int(widest or 0)))  # steps per window
    deleted = 0
    low = _next_step(session, run_id, -1, cutoff)
    while low is not None:
        high = min(low + width - 1, cutoff)
        result = cast(
            CursorResult[Any],
            session.execute(
                delete(_QUERY_TABLE).where(
                    QueryStat.run_id == run_id,
                    QueryStat.step >= low,
                    QueryStat.step <= high,
                    _pruned(cutoff, keep_every),
                )
            ),
        )
        deleted += max(0, result.rowcount)
        session.commit()
        low = _next_step(session, run_id, high, cutoff)
        session.commit()
    return deleted
