"""Ingest of a batch of step records, start to end: store the steps (committed), run a detection
pass over the run's new steps (its alerts and commands committed together), count, and wake the
trainer's command long-poll when the pass issued a command.

The storage modules load and save (each commits its own transaction); the decisions are the pure
``service.detectors``'; this module only orders them and owns the retry of a detection pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from service.broker.base import CommandBroker
from service.detectors.catch_up import decide_pass
from service.observability import ServiceMetrics
from service.schemas.steps import StepBatchIn, StepBatchResult
from service.storage import detection as detection_store
from service.storage import steps as step_store

__all__ = ["DETECTION_ATTEMPTS", "STORE_ATTEMPTS", "ingest_steps", "store_and_detect"]

log = logging.getLogger(__name__)
STORE_ATTEMPTS = 2
DETECTION_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class _Pass:
    steps_evaluated: int
    commands_created: int


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
    """Store the batch (committed), then run the detectors on its new steps; returns the ingest
    result and how many commands detection created. Detection runs after the steps are
    committed; its failure never un-acknowledges them."""
    result = _store(session, run_id, batch)
    if not result.accepted:
        return result, 0
    start = time.perf_counter()
    for attempt in range(DETECTION_ATTEMPTS):
        try:
            outcome = _detection_pass(session, run_id)
            break
        except OperationalError:
            # A lock wait ran out (SQLite busy, a PostgreSQL serialization failure or deadlock):
            # try again; if it still fails, the next ingest of this run catches up from the
            # detectors' persisted state.
            session.rollback()
            if attempt + 1 == DETECTION_ATTEMPTS:
                metrics.detector_failures.inc()
                log.warning("detectors deferred: database busy", extra={"run_id": run_id})
                return result, 0
        except Exception:
            session.rollback()
            metrics.detector_failures.inc()
            log.exception("detectors failed", extra={"run_id": run_id})
            return result, 0
    if outcome.steps_evaluated:
        metrics.detector_seconds.observe((time.perf_counter() - start) / outcome.steps_evaluated)
    return result, outcome.commands_created


def _store(session: Session, run_id: int, batch: StepBatchIn) -> step_store.IngestResult:
    for attempt in range(STORE_ATTEMPTS):
        try:
            return step_store.ingest(session, run_id, batch)
        except IntegrityError:
            # A concurrent request stored one of these steps first: classify again.
            if attempt + 1 == STORE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _detection_pass(session: Session, run_id: int) -> _Pass:
    """One transaction: load the run's unevaluated steps (run row locked), decide, save."""
    pending = detection_store.load_pending(session, run_id)
    if pending is None:
        return _Pass(0, 0)
    decisions = decide_pass(pending.snapshot)
    created = detection_store.save(session, pending, decisions)
    return _Pass(len(decisions.steps), created)
