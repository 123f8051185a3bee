"""one outstanding command per kind and run

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:55:00

At most one outstanding (pending or delivered) early_stop and one outstanding adjust_alpha per
run, enforced by a partial unique index (issue 14). Rows that already break the rule are settled
first, as the service settles them from now on: the newest adjust_alpha stays (a newer one
replaces the older), the oldest early_stop stays (a second stop waits for the first's ack).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTSTANDING = "status IN ('pending', 'delivered')"


def upgrade() -> None:
    for kind, keep, detail in (
        ("adjust_alpha", "MAX", "superseded by a newer adjust_alpha"),
        ("early_stop", "MIN", "duplicate of an earlier outstanding early_stop"),
    ):
        op.execute(
            sa.text(
                f"UPDATE commands SET status = 'expired', ack_detail = :detail "
                f"WHERE kind = :kind AND {OUTSTANDING} AND id != ("
                f"SELECT {keep}(c2.id) FROM commands c2 WHERE c2.run_id = commands.run_id "
                f"AND c2.kind = :kind AND c2.{OUTSTANDING})"
            ).bindparams(kind=kind, detail=detail)
        )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index('uq_commands_one_outstanding_per_kind', ['run_id', 'kind'], unique=True, sqlite_where=sa.text(OUTSTANDING), postgresql_where=sa.text(OUTSTANDING))


def downgrade() -> None:
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index('uq_commands_one_outstanding_per_kind', sqlite_where=sa.text(OUTSTANDING), postgresql_where=sa.text(OUTSTANDING))
