"""runs.epoch: a write counter for the detectors' history cache

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 11:50:00.000000

Every ingest that stores steps bumps ``runs.epoch`` in its transaction; a worker's cached step
history of a run is used only while the run is at the epoch it was filled at.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (not batch mode, which rebuilds ``runs`` on SQLite and would cascade).
    op.add_column('runs', sa.Column('epoch', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    # DROP COLUMN (SQLite >= 3.35): no table rebuild.
    op.drop_column('runs', 'epoch')
