"""Runs: register (idempotent on project + name), fetch, list."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Table, and_, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.models import QueryStat, Run, Step
from service.errors import NotFoundError
from service.schemas.runs import RunCreate, RunUpdate
from service.storage import tokens as token_store
from service.storage._pagination import keyset_page
from service.storage._transactions import begin_write
from service.wire import RunStatus, Verdict

ENDED = (RunStatus.FINISHED, RunStatus.FAILED)


def register(session: Session, spec: RunCreate) -> tuple[Run, bool]:
    """The run named ``spec.project``/``spec.name``, created if new. Returns (run, created)."""
    existing = _find(session, spec.project, spec.name)
    if existing is not None:
        return existing, False
    run = Run(
        project=spec.project,
        name=spec.name,
        group_size=spec.group_size,
        kl_beta=spec.kl_beta,
        config=spec.config,
        tags=spec.tags,
        status=RunStatus.RUNNING,
        detector_config=None if spec.detectors is None else spec.detectors.model_dump(mode="json"),
        policy=None if spec.policy is None else spec.policy.model_dump(mode="json"),
        source=spec.source,
    )
    session.add(run)
    try:
        session.commit()
    except IntegrityError:
        # Another request registered the same run between our read and our insert.
        session.rollback()
        existing = _find(session, spec.project, spec.name)
        if existing is None:
            raise
        return existing, False
    return run, True


def _find(session: Session, project: str, name: str) -> Run | None:
    return session.scalars(select(Run).where(Run.project == project, Run.name == name)).first()


def get(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    return run


def reported_alphas(session: Session, run_ids: Collection[int]) -> dict[int, float]:
    """The α that each run's newest stored step reports (runs without one left out). A run
    shows it as its α until the trainer acknowledges an adjust_alpha: ``runs.alpha`` has one
    writer, the ack (``commands.acknowledge``)."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(Run.id, Step.alpha)
        .join(Step, and_(Step.run_id == Run.id, Step.step == Run.last_step))
        .where(Run.id.in_(run_ids), Step.alpha.is_not(None))
    )
    return {run_id: alpha for run_id, alpha in rows if alpha is not None}


def list_runs(
    session: Session,
    *,
    project: str | None = None,
    status: RunStatus | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> tuple[Sequence[Run], int | None]:
    """A page of runs ordered by id, and the id to continue after (None on the last page)."""
    query = select(Run).order_by(Run.id)
    if project is not None:
        query = query.where(Run.project == project)
    if status is not None:
        query = query.where(Run.status == status)
    if after_id is not None:
        query = query.where(Run.id > after_id)
    return keyset_page(session, query, limit)


def update_run(session: Session, run_id: int, change: RunUpdate) -> Run:
    run = get(session, run_id)
    if change.status is not None and change.status != run.status:
        run.status = change.status
        run.finished_at = utcnow() if change.status in ENDED else None
        if change.status in ENDED:
            # The run's ingest tokens end with it (a later re-registration issues a new one).
            token_store.revoke_ingest_tokens(session, run_id)
        if change.status == RunStatus.RUNNING and run.verdict in (Verdict.STOPPED, Verdict.FAILED):
            run.verdict = Verdict.HEALTHY
            run.failure_reason = None
        if change.status == RunStatus.FAILED:
            run.verdict = Verdict.FAILED  # never healthy beside a failure
    if change.failure_reason is not None:
        run.failure_reason = change.failure_reason
    if change.detectors is not None:
        run.detector_config = change.detectors.model_dump(mode="json")
    if change.policy is not None:
        run.policy = change.policy.model_dump(mode="json")
    if change.tags is not None:
        run.tags = dict(change.tags)
    if change.alpha_pinned is not None:
        run.alpha_pinned = change.alpha_pinned
    session.commit()
    return run


def delete_run(session: Session, run_id: int) -> None:
    """Delete the run and every row that belongs to it: its per-query rows explicitly
    (``query_stats`` has no foreign key, revision 0012), the other tables' rows by their
    ON DELETE CASCADE; one transaction, bulk statements.

    No per-query row outlives its run, with ingest racing (several workers): the run row is
    locked first (``FOR UPDATE``; on SQLite ``begin_write`` takes the single write lock). An
    ingest writes its steps rows before its per-query rows, and the steps' foreign key takes a
    KEY SHARE lock on the run row until its commit (``storage.steps._ingest_once``): the lock
    here waits for that commit, and the DELETE below, a new statement, sees its rows. An ingest
    whose steps INSERT comes after this lock waits for this commit, then fails the steps' key
    (its retry answers 404) before writing any per-query row."""
    begin_write(session)
    locked = session.execute(
        select(Run.id).where(Run.id == run_id).with_for_update()
    ).scalar_one_or_none()
    if locked is None:
        session.rollback()
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    session.execute(delete(_QUERY_TABLE).where(_QUERY_TABLE.c.run_id == run_id))
    session.execute(delete(_RUN_TABLE).where(_RUN_TABLE.c.id == run_id))
    session.commit()


_QUERY_TABLE = cast(Table, QueryStat.__table__)
_RUN_TABLE = cast(Table, Run.__table__)
