"""alerts commands and alpha decisions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:17:19.927196
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('first_step', sa.Integer(), nullable=False),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.Column('resolved_step', sa.Integer(), nullable=True),
    sa.Column('observed', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('thresholds', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('message', sa.String(length=1024), nullable=False),
    sa.Column('action', sa.String(length=1024), nullable=False),
    sa.Column('rollback_step', sa.Integer(), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_alerts_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_run_id_status', ['run_id', 'status'], unique=False)
        batch_op.create_index('ix_alerts_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('uq_alerts_one_open_per_rule', ['run_id', 'rule'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('commands',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=True),
    sa.Column('best_step', sa.Integer(), nullable=True),
    sa.Column('rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('issued_step', sa.Integer(), nullable=True),
    sa.Column('applied_step', sa.Integer(), nullable=True),
    sa.Column('ack_detail', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('early_stop', 'adjust_alpha')", name=op.f('ck_commands_kind_known')),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'applied', 'rejected', 'expired')", name=op.f('ck_commands_status_known')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_commands_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commands'))
    )
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.create_index('ix_commands_run_id_status', ['run_id', 'status'], unique=False)

    op.create_table('alpha_decisions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('old_alpha', sa.Float(), nullable=False),
    sa.Column('new_alpha', sa.Float(), nullable=False),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('inputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('command_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['command_id'], ['commands.id'], name=op.f('fk_alpha_decisions_command_id_commands'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_alpha_decisions_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alpha_decisions'))
    )
    with op.batch_alter_table('alpha_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alpha_decisions_run_id'), ['run_id'], unique=False)

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detector_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('policy', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('detector_state', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('verdict', sa.String(length=16), server_default='healthy', nullable=False))
        batch_op.add_column(sa.Column('alpha', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('model_collapse_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('best_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('finished_at')
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('best_step')
        batch_op.drop_column('model_collapse_step')
        batch_op.drop_column('alpha')
        batch_op.drop_column('verdict')
        batch_op.drop_column('detector_state')
        batch_op.drop_column('policy')
        batch_op.drop_column('detector_config')

    with op.batch_alter_table('alpha_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alpha_decisions_run_id'))

    op.drop_table('alpha_decisions')
    with op.batch_alter_table('commands', schema=None) as batch_op:
        batch_op.drop_index('ix_commands_run_id_status')

    op.drop_table('commands')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('uq_alerts_one_open_per_rule', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.drop_index('ix_alerts_status_id')
        batch_op.drop_index('ix_alerts_run_id_status')

    op.drop_table('alerts')
