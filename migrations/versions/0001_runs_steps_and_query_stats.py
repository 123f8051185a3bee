"""runs steps and query stats

Revision ID: 0001
Revises:
Create Date: 2026-11-23 15:09:45.617508
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("kl_beta", sa.Float(), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=True),
        sa.Column("last_step_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("group_size >= 1", name=op.f("ck_runs_group_size_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("project", "name", name=op.f("uq_runs_project_name")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)

    op.create_table(
        "query_stats",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.String(length=256), nullable=False),
        sa.Column("group_size", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("entropy", sa.Float(), nullable=True),
        sa.Column("log_zprime", sa.Float(), nullable=True),
        sa.Column("log_zprime_raw", sa.Float(), nullable=True),
        sa.Column("n_modes", sa.Integer(), nullable=True),
        sa.Column("reward_accuracy", sa.Float(), nullable=True),
        sa.Column("response_length", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "successes >= 0 AND successes <= group_size",
            name=op.f("ck_query_stats_successes_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_query_stats_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_stats")),
        sa.UniqueConstraint(
            "run_id", "query_id", "step", name=op.f("uq_query_stats_run_id_query_id_step")
        ),
    )
    with op.batch_alter_table("query_stats", schema=None) as batch_op:
        batch_op.create_index("ix_query_stats_run_id_step", ["run_id", "step"], unique=False)

    op.create_table(
        "steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "extras",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "non_finite",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("n_queries", sa.Integer(), nullable=False),
        sa.Column("entropy", sa.Float(), nullable=True),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("degenerate_all_fail", sa.Float(), nullable=True),
        sa.Column("degenerate_all_pass", sa.Float(), nullable=True),
        sa.Column("log_zprime_mean", sa.Float(), nullable=True),
        sa.Column("log_zprime_p90", sa.Float(), nullable=True),
        sa.Column("zprime_gt1_frac", sa.Float(), nullable=True),
        sa.Column("reward_accuracy", sa.Float(), nullable=True),
        sa.Column("label_accuracy", sa.Float(), nullable=True),
        sa.Column("proxy_reward", sa.Float(), nullable=True),
        sa.Column("gt_reward", sa.Float(), nullable=True),
        sa.Column("response_length", sa.Float(), nullable=True),
        sa.Column("repetition_rate", sa.Float(), nullable=True),
        sa.Column("kl", sa.Float(), nullable=True),
        sa.Column("alpha", sa.Float(), nullable=True),
        sa.Column("mu", sa.Float(), nullable=True),
        sa.Column("probe_success", sa.Float(), nullable=True),
        sa.Column("probe_entropy", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_steps_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("run_id", "step", name=op.f("uq_steps_run_id_step")),
    )


def downgrade() -> None:

    op.drop_table("steps")
    with op.batch_alter_table("query_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_query_stats_run_id_step")

    op.drop_table("query_stats")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_status"))

    op.drop_table("runs")
