"""query_stats.run_id without a foreign key

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 19:00:00.000000

PostgreSQL checks a foreign key with one trigger query per inserted row: on ``query_stats``, the
high-volume table, the key doubled the server's cost of a batched COPY (23.7 -> 47.4 ms per
5,120 rows, issue 21). Deleting a run deletes its per-query rows explicitly
(``storage.runs.delete_run``); ingest writes them after the steps rows, which keep their key.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode rebuilds ``query_stats`` on SQLite (nothing references it, so nothing cascades);
    # PostgreSQL drops the constraint in place.
    with op.batch_alter_table("query_stats", schema=None) as batch_op:
        batch_op.drop_constraint("fk_query_stats_run_id_runs", type_="foreignkey")


def downgrade() -> None:
    # Rows of runs deleted meanwhile would fail the key: remove them first.
    op.execute("DELETE FROM query_stats WHERE run_id NOT IN (SELECT id FROM runs)")
    with op.batch_alter_table("query_stats", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_query_stats_run_id_runs", "runs", ["run_id"], ["id"], ondelete="CASCADE"
        )
