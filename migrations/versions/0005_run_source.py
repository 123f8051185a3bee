"""run source: live or imported

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(
            sa.Column('source', sa.String(length=16), server_default='live', nullable=False)
        )
        batch.create_check_constraint(op.f('ck_runs_source_known'), "source IN ('live', 'imported')")


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('ck_runs_source_known'), type_='check')
        batch.drop_column('source')
