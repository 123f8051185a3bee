"""per-project retention of per-query rows

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 11:50:00.000000

``project_retention``: per project, how many of a run's newest steps keep their per-query rows at
full resolution and which older steps keep theirs (every ``keep_every``-th; ``sharpwatch gc``
applies it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "project_retention",
        sa.Column("project", sa.String(length=128), nullable=False),
        sa.Column("full_steps", sa.Integer(), nullable=False),
        sa.Column("keep_every", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "full_steps >= 1", name=op.f("ck_project_retention_full_steps_positive")
        ),
        sa.CheckConstraint(
            "keep_every >= 0", name=op.f("ck_project_retention_keep_every_non_negative")
        ),
        sa.PrimaryKeyConstraint("project", name=op.f("pk_project_retention")),
    )


def downgrade() -> None:
    op.drop_table("project_retention")
