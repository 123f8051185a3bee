"""ORM models. Known step metrics are real columns (fast series queries, Grafana SQL); unknown
ones are kept in ``extras``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column
from sqlalchemy.orm.decl_api import DeclarativeAttributeIntercept

from service.db.base import Base, JSONType, UTCDateTime, utcnow
from service.db.vocabulary import one_of
from service.wire import AlertStatus, CommandKind, CommandStatus, RunSource, RunStatus, Verdict
from service.wire.metrics import STEP_COLUMNS
from service.wire.query import QUERY_FIELDS

BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def _nullable_columns(name: str, fields: Iterable[tuple[str, type[Any]]]) -> type:
    """A declarative mixin with one nullable column per (name, int or float) of a wire table."""
    columns = {
        field: mapped_column(Integer if kind is int else Float, nullable=True)
        for field, kind in fields
    }
    return type(name, (), columns)


# One nullable float column per metric the wire's table stores as a column (STEP_COLUMNS), and
# one nullable column per per-query field (QUERY_FIELDS): the tables are the only list of them.
if TYPE_CHECKING:  # the type checker sees any of the tables' names as a nullable column

    class _TableColumns(DeclarativeAttributeIntercept):
        def __getattr__(self, name: str) -> InstrumentedAttribute[Any]: ...

    class _StepMetricColumns(metaclass=_TableColumns):
        def __getattr__(self, name: str) -> float | None: ...

    class _QueryFieldColumns(metaclass=_TableColumns):
        def __getattr__(self, name: str) -> float | None: ...

else:
    _StepMetricColumns = _nullable_columns("_StepMetricColumns", ((n, float) for n in STEP_COLUMNS))
    _QueryFieldColumns = _nullable_columns(
        "_QueryFieldColumns", ((f.name, f.type) for f in QUERY_FIELDS)
    )


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("project", "name"),
        CheckConstraint("group_size >= 1", name="group_size_positive"),
        one_of("source", RunSource, name="source_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    group_size: Mapped[int] = mapped_column(Integer)
    kl_beta: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_step_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Detection (revision 0002): per-run rule settings and policy (null = defaults), the
    # detectors' persisted state, and what they concluded.
    detector_config: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    detector_state: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    verdict: Mapped[str] = mapped_column(
        String(16), default=Verdict.HEALTHY, server_default=Verdict.HEALTHY.value
    )
    alpha: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Revision 0008: an operator's adjust_alpha pins α (the controller sends none) until an
    # operator releases it (PATCH {"alpha_pinned": false}); science.md §7.
    alpha_pinned: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false(), nullable=False
    )
    model_collapse_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    best_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # Revision 0006: why the run failed, as the trainer reported it (the hooks' error or its own).
    failure_reason: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Revision 0005: ``live`` (a trainer streamed it) or ``imported`` (``sharpwatch import``
    # replayed its logged curves); the live page marks imported runs.
    source: Mapped[str] = mapped_column(
        String(16), default=RunSource.LIVE, server_default=RunSource.LIVE.value
    )
    # Revision 0011: bumped by every ingest that stores steps, in its transaction; the detectors'
    # per-process history cache is used only at the epoch it was filled at (several workers).
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)


class Step(_StepMetricColumns, Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    content_hash: Mapped[str] = mapped_column(String(64))
    extras: Mapped[dict[str, float | None]] = mapped_column(JSONType, default=dict)
    non_finite: Mapped[list[str]] = mapped_column(JSONType, default=list)
    n_queries: Mapped[int] = mapped_column(Integer, default=0)
    # Revision 0003: bucketed per-query success rate and log Z' of the step, computed at ingest by
    # service.query_histograms so /metrics never scans query_stats (null on older rows).
    query_histograms: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class QueryStat(_QueryFieldColumns, Base):
    """One query's group at one step."""

    __tablename__ = "query_stats"
    __table_args__ = (
        UniqueConstraint("run_id", "query_id", "step"),
        CheckConstraint("successes >= 0 AND successes <= group_size", name="successes_in_range"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # Revision 0012: no foreign key (PostgreSQL's per-row check doubled the cost of a batched
    # COPY, issue 21). ``storage.runs.delete_run`` deletes a run's rows explicitly; ingest writes
    # them after its steps rows, whose key holds the run (``storage.steps._ingest_once``).
    run_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    query_id: Mapped[str] = mapped_column(String(256))
    group_size: Mapped[int] = mapped_column(Integer)
    successes: Mapped[int] = mapped_column(Integer)


Index("ix_query_stats_run_id_step", QueryStat.run_id, QueryStat.step)


class Alert(Base):
    """One alert: a rule that fired on a run, from its first to its last firing step. At most one
    open alert per (run, rule), enforced by a partial unique index."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.OPEN)
    first_step: Mapped[int] = mapped_column(Integer)
    last_step: Mapped[int] = mapped_column(Integer)
    resolved_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    observed: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    thresholds: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    message: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(1024))
    rollback_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


Index("ix_alerts_run_id_status", Alert.run_id, Alert.status)
Index("ix_alerts_status_id", Alert.status, Alert.id)
Index(
    "uq_alerts_one_open_per_rule",
    Alert.run_id,
    Alert.rule,
    unique=True,
    sqlite_where=Alert.status == AlertStatus.OPEN,
    postgresql_where=Alert.status == AlertStatus.OPEN,
)


class Command(Base):
    """A command to a trainer: pending → delivered → applied | rejected | expired."""

    __tablename__ = "commands"
    __table_args__ = (
        one_of("kind", CommandKind, name="kind_known"),
        one_of("status", CommandStatus, name="status_known"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.PENDING)
    source: Mapped[str] = mapped_column(String(16))  # a CommandSource
    reason: Mapped[str] = mapped_column(String(1024))
    alpha: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rules: Mapped[list[str]] = mapped_column(JSONType, default=list)
    issued_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    applied_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ack_detail: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


Index("ix_commands_run_id_status", Command.run_id, Command.status)
# Revision 0007: at most one outstanding (pending or delivered) command of each kind per run, so
# two concurrent early_stops cannot both be issued and a new adjust_alpha must replace the old.
_OUTSTANDING = Command.status.in_((CommandStatus.PENDING, CommandStatus.DELIVERED))
Index(
    "uq_commands_one_outstanding_per_kind",
    Command.run_id,
    Command.kind,
    unique=True,
    sqlite_where=_OUTSTANDING,
    postgresql_where=_OUTSTANDING,
)


class AlphaDecisionRow(Base):
    """Every α-controller decision that changed α (or was refused by bounds), with its reason."""

    __tablename__ = "alpha_decisions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    old_alpha: Mapped[float] = mapped_column(Float)
    new_alpha: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(1024))
    inputs: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    command_id: Mapped[int | None] = mapped_column(
        ForeignKey("commands.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("kind IN ('ingest', 'operator', 'read')", name="kind_known"),
        CheckConstraint("kind != 'ingest' OR run_id IS NOT NULL", name="ingest_has_run"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ProjectRetention(Base):
    """How long a project keeps its per-query rows at full resolution (revision 0009).

    ``sharpwatch gc`` keeps the query rows of a run's last ``full_steps`` step numbers
    (step > last_step − full_steps) and, of older steps, only those of every ``keep_every``-th
    step (step % keep_every == 0; 0 keeps none). Step rows, their series and per-step query
    histograms are never pruned. A project without a row keeps everything."""

    __tablename__ = "project_retention"
    __table_args__ = (
        CheckConstraint("full_steps >= 1", name="full_steps_positive"),
        CheckConstraint("keep_every >= 0", name="keep_every_non_negative"),
    )

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    full_steps: Mapped[int] = mapped_column(Integer)
    keep_every: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class NotificationChannel(Base):
    """Where notifications go (issue 20): a signed JSON webhook, a Slack or a Discord webhook.
    ``url`` and ``signing_secret`` are secrets: the API shows only ``url_hint``."""

    __tablename__ = "notification_channels"
    __table_args__ = (
        CheckConstraint("kind IN ('webhook', 'slack', 'discord')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    url_hint: Mapped[str] = mapped_column(String(128))
    signing_secret: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class NotificationSubscription(Base):
    """Which events of which runs a channel hears: a project, a run, or (both null) every run;
    an empty list of severities, rules or events means all of them."""

    __tablename__ = "notification_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE"), index=True
    )
    project: Mapped[str | None] = mapped_column(String(128), nullable=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=True
    )
    severities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    rules: Mapped[list[str]] = mapped_column(JSONType, default=list)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxRow(Base):
    """One notification to one channel, written in the transaction of its event and delivered
    by service.notifications.worker: ``pending → sent | dead``. A worker claims a row by
    setting ``locked_until`` (a lease) and ``claim``; an expired lease frees the row again."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'dead')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("notification_channels.id", ondelete="CASCADE")
    )
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claim: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


Index("ix_outbox_status_next_attempt_at", OutboxRow.status, OutboxRow.next_attempt_at)
