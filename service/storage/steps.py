"""Step ingest (idempotent, all-or-nothing per batch) and series reads."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Table,
    and_,
    bindparam,
    case,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from service import query_histograms
from service.db.base import UTCDateTime, utcnow
from service.db.models import QueryStat, Run, Step
from service.errors import ConflictError, NotFoundError
from service.schemas.steps import (
    QueryHistory,
    QueryOut,
    QueryPoint,
    StepBatchIn,
    StepDetail,
    StepIn,
    StepOut,
    StepSeries,
)
from service.storage import _history_cache as history_cache
from service.storage._history_cache import database_key, record_of
from service.storage.detection import PASS_RUN_COLUMNS
from service.wire.metrics import STEP_COLUMNS
from service.wire.query import QUERY_FIELDS, QUERY_ROW_FIELDS

_QUERY_COLUMNS = tuple(f.name for f in QUERY_FIELDS)
_STEP_COLUMNS = frozenset(STEP_COLUMNS)


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: list[int]
    duplicates: list[int]
    rows: int  # per-query rows stored
    #: The accepted steps as the history cache takes them once the transaction commits (None
    #: when nothing was written).
    written: history_cache.Written | None = None
    #: The run row after the write, ``storage.detection.PASS_RUN_COLUMNS`` (locked until the
    #: commit); None when nothing was written.
    run: Row[Any] | None = None


_STORED = (
    select(Run.created_at, Step.step, Step.content_hash)  # plain columns: a Core statement
    .outerjoin(
        Step,
        and_(Step.run_id == Run.id, Step.step.in_(bindparam("steps", expanding=True))),
    )
    .where(Run.id == bindparam("run_id"))
)


# The hot path's statements are built once and run on the session's connection: building and
# ORM-executing them per request cost more than running them (issue 21 profile).
_NEWER = or_(Run.last_step.is_(None), Run.last_step < bindparam("newest", type_=Integer()))
_BUMP_RUN = (
    update(Run)
    .where(Run.id == bindparam("run_id"))
    .values(
        epoch=Run.epoch + 1,
        last_step=case((_NEWER, bindparam("newest", type_=Integer())), else_=Run.last_step),
        last_step_at=case((_NEWER, bindparam("now", type_=UTCDateTime())), else_=Run.last_step_at),
    )
    .returning(*PASS_RUN_COLUMNS)  # the row as the detection pass after it reads it, locked
)


def ingest(session: Session, run_id: int, batch: StepBatchIn) -> IngestResult:
    """Write the batch's new steps in the session's transaction, which the caller commits
    (``service.ingest``: with the detection pass; then it gives ``written`` to the history
    cache). Identical re-sends are duplicates; a changed re-send is a 409 and nothing of the
    batch is written. A step a concurrent request stored first raises IntegrityError (rolled
    back; ``service.ingest`` classifies the batch again)."""
    try:
        return _ingest_once(session, run_id, batch)
    except IntegrityError:
        session.rollback()
        raise


def _ingest_once(session: Session, run_id: int, batch: StepBatchIn) -> IngestResult:
    hashes = {record.step: record.content_hash() for record in batch.steps}
    # One round trip: the run (404 if missing) and the batch's steps already stored.
    connection = session.connection()
    found = connection.execute(_STORED, {"run_id": run_id, "steps": list(hashes)}).all()
    if not found:
        raise NotFoundError(f"run {run_id} does not exist", field="run_id")
    created_at = found[0].created_at
    stored = {row.step: row.content_hash for row in found if row.step is not None}
    duplicates: list[int] = []
    fresh: list[StepIn] = []
    for index, record in enumerate(batch.steps):
        previous = stored.get(record.step)
        if previous is None:
            fresh.append(record)
        elif previous == hashes[record.step] or previous == record.legacy_content_hash():
            # (a step stored before digest version 2 carries the legacy digest)
            duplicates.append(record.step)
        else:
            raise ConflictError(
                f"step {record.step} of run {run_id} is already stored with different content; "
                "steps are immutable once acknowledged (re-send the original or use a new step)",
                field=f"steps[{index}].step",
            )
    if not fresh:
        return IngestResult(accepted=[], duplicates=duplicates, rows=0)

    now = utcnow()
    # Core inserts (no per-row ORM work): one executemany for the steps, and for the per-query
    # rows COPY on PostgreSQL or one executemany elsewhere, all in the request's transaction.
    step_rows = [_step_row(run_id, record, hashes[record.step], now) for record in fresh]
    # Steps before per-query rows: the steps' foreign key locks the run row (KEY SHARE, until the
    # commit) or fails if the run is gone, before any row of query_stats (no foreign key,
    # revision 0012) is written; storage.runs.delete_run relies on this order.
    connection.execute(_INSERT_STEPS, step_rows)
    rows = _insert_query_rows(session, run_id, fresh)
    newest = max(record.step for record in fresh)
    # Every write of steps bumps the run's epoch (the detectors' history cache is exact only at
    # the epoch it was filled at; service.storage._history_cache).
    # The UPDATE also locks the run row until the commit (PostgreSQL; SQLite's writer holds
    # the database's write lock from its first INSERT).
    run = connection.execute(_BUMP_RUN, {"run_id": run_id, "newest": newest, "now": now}).one()
    epoch = run.epoch
    accepted = [record.step for record in fresh]
    records = tuple(sorted(map(record_of, fresh), key=lambda r: r.step))
    written = history_cache.Written(database_key(session), run_id, created_at, epoch, records)
    return IngestResult(
        accepted=accepted, duplicates=duplicates, rows=rows, written=written, run=run
    )


_STEP_TABLE = cast(Table, Step.__table__)
_INSERT_STEPS = insert(_STEP_TABLE)
_QUERY_TABLE = cast(Table, QueryStat.__table__)
_QUERY_INSERT_COLUMNS = ("run_id", "step", *QUERY_ROW_FIELDS)
_INSERT_QUERY_ROWS = (
    f"INSERT INTO {_QUERY_TABLE.name} ({', '.join(_QUERY_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_QUERY_INSERT_COLUMNS))})"
)
_COPY_QUERY_ROWS = (
    f"COPY {_QUERY_TABLE.name} ({', '.join(_QUERY_INSERT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)


_INSERT_CHUNK = 4096  # rows materialised at a time (a 32 MB batch holds ~150k of them)


def _query_tuples(run_id: int, fresh: Sequence[StepIn]) -> Iterator[tuple[Any, ...]]:
    for record in fresh:
        # A row is a tuple of QUERY_ROW_FIELDS in order (schemas.query_rows.QueryTuple), zipped
        # straight from the packed columns.
        yield from zip(repeat(run_id), repeat(record.step), *record.queries.columns())


def _insert_query_rows(session: Session, run_id: int, fresh: Sequence[StepIn]) -> int:
    """Store the per-query rows of ``fresh``; returns how many. Rows are built a chunk at a
    time, so a maximum-size batch never holds all its row parameters at once."""
    if not any(record.queries for record in fresh):
        return 0
    connection = session.connection()
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        return _copy_rows(connection, run_id, fresh)
    rows = _query_tuples(run_id, fresh)
    sqlite = connection.dialect.name == "sqlite"
    stored = 0
    while chunk := list(islice(rows, _INSERT_CHUNK)):
        if sqlite:
            # The driver's executemany on plain tuples: SQLAlchemy's per-row parameter
            # processing of dicts cost more than SQLite's insert itself (issue 21 profile).
            connection.exec_driver_sql(_INSERT_QUERY_ROWS, chunk)
            stored += len(chunk)
            continue
        connection.execute(
            insert(_QUERY_TABLE),
            [dict(zip(_QUERY_INSERT_COLUMNS, row, strict=True)) for row in chunk],
        )
        stored += len(chunk)
    return stored


def _copy_rows(connection: Connection, run_id: int, fresh: Sequence[StepIn]) -> int:
    """COPY the per-query rows of ``fresh`` into ``query_stats`` (psycopg 3), inside the
    session's transaction, in COPY's binary format built from the packed arrays (``Copy.
    write_row`` per row was a quarter of a batched request's time, issue 21; binary needs no
    text formatting of floats, which are stored bit for bit). Driver errors come out as
    SQLAlchemy's (IntegrityError, OperationalError, ...) like any statement."""
    import psycopg

    driver_connection: Any = connection.connection.driver_connection
    stored = 0
    try:
        with driver_connection.cursor() as cursor, cursor.copy(_COPY_QUERY_ROWS) as copy:
            copy.write(_BINARY_SIGNATURE)
            for record in fresh:
                count = len(record.queries)
                for start in range(0, count, _INSERT_CHUNK):
                    copy.write(_binary_rows(run_id, record, start, start + _INSERT_CHUNK))
                stored += count
            copy.write(_BINARY_TRAILER)
    except psycopg.Error as exc:
        raise DBAPIError.instance(
            _COPY_QUERY_ROWS, None, exc, psycopg.Error, dialect=connection.dialect
        ) from exc
    return stored


# COPY's binary format (PostgreSQL's COPY documentation): a signature, flags and header
# extension length, then per row the field count and per field its byte length (-1: null) and
# its value in network order, then -1 as the trailer. The row's types: run_id and step int4,
# query_id text (UTF-8), the counts int4, the measurements float8 (a test checks them against
# the table).
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)
_BINARY_ROW_START = struct.Struct(">hiiii")  # field count, run_id, step (with their lengths)
_INT4 = struct.Struct(">i")
_NULL_FIELD = _INT4.pack(-1)
_FIELD_FORMAT = {"l": "ii", "d": "id"}  # a count as int4, a float as float8, after its length
_FIELD_LENGTH = {"l": 4, "d": 8}


def _binary_rows(run_id: int, record: StepIn, start: int, stop: int) -> bytes:
    """Rows ``start:stop`` of ``record`` in COPY's binary format: the fields of each run of
    columns without a null are packed by one ``struct`` call per row; a column holding nulls
    (NaN or -1 in its array) is written field by field."""
    (ids, _), *columns = record.queries.packed()
    prefix = _BINARY_ROW_START.pack(len(_QUERY_INSERT_COLUMNS), 4, run_id, 4, record.step)
    encoded = [query_id.encode() for query_id in ids[start:stop]]
    parts: list[Iterable[bytes]] = [
        [prefix + _INT4.pack(len(query_id)) + query_id for query_id in encoded]
    ]
    layout = ">"
    values: list[Iterable[Any]] = []
    for column, null in columns:
        part = cast("array[Any]", column[start:stop])
        code = part.typecode
        if not null:
            layout += _FIELD_FORMAT[code]
            values += (repeat(_FIELD_LENGTH[code]), part)
            continue
        if values:
            parts.append(map(struct.Struct(layout).pack, *values))
            layout, values = ">", []
        field = struct.Struct(">" + _FIELD_FORMAT[code]).pack
        length = _FIELD_LENGTH[code]
        if code == "d":  # NaN stands for null
            parts.append([_NULL_FIELD if v != v else field(length, v) for v in part])
        else:  # -1 stands for null
            parts.append([_NULL_FIELD if v == -1 else field(length, v) for v in part])
    if values:
        parts.append(map(struct.Struct(layout).pack, *values))
    return b"".join(map(b"".join, zip(*parts, strict=True)))


def _step_row(run_id: int, record: StepIn, content_hash: str, now: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id,
        "step": record.step,
        "time": record.time,
        "received_at": now,
        "content_hash": content_hash,
        "non_finite": list(record.non_finite),
        "n_queries": len(record.queries),
        "query_histograms": query_histograms.summarize(record.queries),
        "extras": {k: v for k, v in record.metrics.items() if k not in _STEP_COLUMNS},
    }
    for name in STEP_COLUMNS:
        row[name] = record.metrics.get(name)
    return row


def _step_out(step: Step, metrics: Sequence[str] | None) -> StepOut:
    values: dict[str, float | None] = {}
    names = STEP_COLUMNS if metrics is None else metrics
    for name in names:
        if name in _STEP_COLUMNS:
            value = getattr(step, name)
            if value is not None or metrics is not None:
                values[name] = value
        elif name in step.extras:
            values[name] = step.extras[name]
    if metrics is None:
        values.update(step.extras)
    return StepOut(
        step=step.step,
        time=step.time,
        received_at=step.received_at,
        metrics=values,
        non_finite=list(step.non_finite),
        n_queries=step.n_queries,
    )


def series(
    session: Session,
    run_id: int,
    *,
    start: int | None = None,
    stop: int | None = None,
    metrics: Sequence[str] | None = None,
    limit: int = 1000,
) -> StepSeries:
    """Steps ``start <= step <= stop`` in order, at most ``limit``; ``metrics`` picks names."""
    query = select(Step).where(Step.run_id == run_id).order_by(Step.step).limit(limit + 1)
    if start is not None:
        query = query.where(Step.step >= start)
    if stop is not None:
        query = query.where(Step.step <= stop)
    rows = session.scalars(query).all()
    next_step = rows[limit].step if len(rows) > limit else None
    return StepSeries(
        run_id=run_id,
        items=[_step_out(step, metrics) for step in rows[:limit]],
        next_cursor=None if next_step is None else str(next_step),
    )


def detail(session: Session, run_id: int, step: int) -> StepDetail:
    row = session.scalars(select(Step).where(Step.run_id == run_id, Step.step == step)).first()
    if row is None:
        raise NotFoundError(f"run {run_id} has no step {step}", field="step")
    queries = session.scalars(
        select(QueryStat)
        .where(QueryStat.run_id == run_id, QueryStat.step == step)
        .order_by(QueryStat.id)
    ).all()
    return StepDetail(
        **_step_out(row, None).model_dump(),
        queries=[
            QueryOut(**{column: getattr(q, column) for column in QUERY_ROW_FIELDS}) for q in queries
        ],
    )


def query_history(
    session: Session,
    run_id: int,
    query_id: str,
    *,
    start: int | None = None,
    stop: int | None = None,
    limit: int = 10000,
) -> QueryHistory:
    query = (
        select(QueryStat)
        .where(QueryStat.run_id == run_id, QueryStat.query_id == query_id)
        .order_by(QueryStat.step)
        .limit(limit)
    )
    if start is not None:
        query = query.where(QueryStat.step >= start)
    if stop is not None:
        query = query.where(QueryStat.step <= stop)
    rows = session.scalars(query).all()
    if not rows and start is None and stop is None:
        raise NotFoundError(f"run {run_id} has no rows for query {query_id!r}", field="query_id")
    return QueryHistory(
        run_id=run_id,
        query_id=query_id,
        points=[
            QueryPoint(
                step=q.step,
                group_size=q.group_size,
                successes=q.successes,
                success_rate=q.successes / q.group_size,
                **{column: getattr(q, column) for column in _QUERY_COLUMNS},
            )
            for q in rows
        ],
    )
