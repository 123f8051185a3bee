"""Ingest of a batch of step records, start to end: store the steps and run a detection pass over
the run's new steps (its alerts and commands) in one transaction, the pass in a savepoint so that
its failure never loses the steps; count, and wake the trainer's command long-poll when the pass
issued a command.

The storage modules load and save; this module owns the transaction (its savepoint and commit)
and the retries; the decisions are the pure ``service.detectors``'.
"""

from __future__ import annotations

import logging
import time

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from service.broker.base import CommandBroker
from service.detectors.catch_up import decide_pass
from service.observability import ServiceMetrics
from service.schemas.steps import StepBatchIn, StepBatchResult
from service.storage import _history_cache as history_cache
from service.storage import detection as detection_store
from service.storage import steps as step_store

__all__ = ["DETECTION_ATTEMPTS", "STORE_ATTEMPTS", "ingest_steps", "store_and_detect"]

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 2
DETECTION_ATTEMPTS = 2


async def ingest_steps(
    session: Session,
    run_id: int,
    batch: StepBatchIn,
    *,
    metrics: ServiceMetrics,
    broker: CommandBroker,
) -> StepBatchResult:
    """Store, detect, count, publish. Idempotent: re-sent steps are duplicates."""
    # One trip to the thread pool for store + detect (each trip costs a context switch).
    result, commands = await run_in_threadpool(store_and_detect, session, run_id, batch, metrics)
    metrics.ingested_steps.inc(len(result.accepted))
    metrics.ingested_query_rows.inc(result.rows)
    metrics.duplicate_steps.inc(len(result.duplicates))
    if commands:
        await broker.publish(run_id)
    return StepBatchResult(accepted=result.accepted, duplicates=result.duplicates)


def store_and_detect(
    session: Session, run_id: int, batch: StepBatchIn, metrics: ServiceMetrics
) -> tuple[step_store.IngestResult, int]:
    """Store the batch and run the detectors on the run's new steps, in one transaction;
    returns the ingest result and how many commands detection created.

    The detection pass runs inside a savepoint: when it fails, it is rolled back to that
    savepoint and the steps commit without it (the run's next ingest catches up, see
    ``storage.detection.load_pending``). A failing commit stores nothing and the request fails,
    unacknowledged: the steps are acknowledged by the response, which goes out only after the
    commit. The history cache learns of the transaction only once it has committed."""
    result = _store(session, run_id, batch)
    written = result.written
    if written is None:
        session.rollback()  # read only: end it here rather than in another thread-pool trip
        return result, 0
    start = time.perf_counter()
    pending, created = _detect(session, run_id, result, metrics)
    seconds = time.perf_counter() - start
    session.commit()
    history_cache.CACHE.noted(written)
    if pending is not None:
        detection_store.remember(pending)
        metrics.detector_seconds.observe(seconds / len(pending.snapshot.pending))
    return result, created


def _store(session: Session, run_id: int, batch: StepBatchIn) -> step_store.IngestResult:
    for attempt in range(STORE_ATTEMPTS):
        try:
            return step_store.ingest(session, run_id, batch)
        except IntegrityError:
            # A concurrent request stored one of these steps first: classify again.
            if attempt + 1 == STORE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _detect(
    session: Session, run_id: int, stored: step_store.IngestResult, metrics: ServiceMetrics
) -> tuple[detection_store.PendingPass | None, int]:
    """The detection pass in a savepoint of the open transaction: (the saved pass, commands
    created), or (None, 0) when there was nothing to evaluate or the pass failed (rolled back to
    the savepoint, counted and logged)."""
    for attempt in range(DETECTION_ATTEMPTS):
        savepoint = session.begin_nested()
        try:
            pending = detection_store.load_pending(session, run_id, stored.written, stored.run)
            if pending is None:
                savepoint.rollback()
                return None, 0
            created = detection_store.save(session, pending, decide_pass(pending.snapshot))
            savepoint.commit()
            return pending, created
        except OperationalError:
            # A lock wait ran out (a PostgreSQL deadlock or lock timeout): try again; if it
            # still fails, the next ingest of this run catches up from the detectors' persisted
            # state.
            savepoint.rollback()
            if attempt + 1 == DETECTION_ATTEMPTS:
                metrics.detector_failures.inc()
                log.warning("detectors deferred: database busy", extra={"run_id": run_id})
        except Exception:
            savepoint.rollback()
            metrics.detector_failures.inc()
            log.exception("detectors failed", extra={"run_id": run_id})
            break
    return None, 0
