"""ORM models. Known step metrics are real columns (fast series queries, Grafana SQL); unknown
ones are kept in ``extras``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base, JSONType, UTCDateTime, utcnow

BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("project", "name"),
        CheckConstraint("group_size >= 1", name="group_size_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    group_size: Mapped[int] = mapped_column(Integer)
    kl_beta: Mapped[float] = mapped_column(Float)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_step_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Step(Base):
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
    # One column per standard metric of service.metric_names.STEP_METRICS (a test keeps them equal).
    entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    success_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    degenerate_all_fail: Mapped[float | None] = mapped_column(Float, nullable=True)
    degenerate_all_pass: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_zprime_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_zprime_p90: Mapped[float | None] = mapped_column(Float, nullable=True)
    zprime_gt1_frac: Mapped[float | None] = mapped_column(Float, nullable=True)
    reward_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    label_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    proxy_reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    gt_reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_length: Mapped[float | None] = mapped_column(Float, nullable=True)
    repetition_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    kl: Mapped[float | None] = mapped_column(Float, nullable=True)
    alpha: Mapped[float | None] = mapped_column(Float, nullable=True)
    mu: Mapped[float | None] = mapped_column(Float, nullable=True)
    probe_success: Mapped[float | None] = mapped_column(Float, nullable=True)
    probe_entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)


class QueryStat(Base):
    """One query's group at one step."""

    __tablename__ = "query_stats"
    __table_args__ = (
        UniqueConstraint("run_id", "query_id", "step"),
        CheckConstraint("successes >= 0 AND successes <= group_size", name="successes_in_range"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    query_id: Mapped[str] = mapped_column(String(256))
    group_size: Mapped[int] = mapped_column(Integer)
    successes: Mapped[int] = mapped_column(Integer)
    entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_zprime: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_zprime_raw: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_modes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reward_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_length: Mapped[float | None] = mapped_column(Float, nullable=True)


Index("ix_query_stats_run_id_step", QueryStat.run_id, QueryStat.step)
