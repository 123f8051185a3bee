"""raw Z' step columns and the operator's α pin

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:55:00.000000

Raw Z' (from the advantages before IAC) was stored in ``steps.extras``; it becomes three standard
columns (science.md §7: the α controller and zprime_pressure read it). Existing values move from
``extras`` into the columns, and back on downgrade. ``runs.alpha_pinned``: an operator's
adjust_alpha pins α until an operator releases it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RAW_COLUMNS = ('log_zprime_raw_mean', 'log_zprime_raw_p90', 'zprime_raw_gt1_frac')


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite batch mode rebuilds the table, and dropping the
    # old ``runs`` would cascade-delete every step of every run (foreign keys are on).
    op.add_column(
        'runs', sa.Column('alpha_pinned', sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    for name in RAW_COLUMNS:
        op.add_column('steps', sa.Column(name, sa.Float(), nullable=True))
    postgres = op.get_bind().dialect.name == 'postgresql'
    for name in RAW_COLUMNS:  # fixed names, not input: safe to format into the statement
        if postgres:
            op.execute(
                f"UPDATE steps SET {name} = (extras ->> '{name}')::float, "
                f"extras = extras - '{name}' WHERE extras ? '{name}'"
            )
        else:
            op.execute(
                f"UPDATE steps SET {name} = json_extract(extras, '$.{name}'), "
                f"extras = json_remove(extras, '$.{name}') "
                f"WHERE json_type(extras, '$.{name}') IS NOT NULL"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for name in RAW_COLUMNS:
        if postgres:
            op.execute(
                f"UPDATE steps SET extras = extras || jsonb_build_object('{name}', {name}) "
                f"WHERE {name} IS NOT NULL"
            )
        else:
            op.execute(
                f"UPDATE steps SET extras = json_set(extras, '$.{name}', {name}) "
                f"WHERE {name} IS NOT NULL"
            )
    # DROP COLUMN (SQLite >= 3.35) for the same reason: no table rebuild.
    for name in reversed(RAW_COLUMNS):
        op.drop_column('steps', name)
    op.drop_column('runs', 'alpha_pinned')
