"""call outcomes: script and version on touches, the calls log and its objections

Revision ID: 0009_call_outcomes
Revises: 0008_rate_slots
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0009_call_outcomes'
down_revision = '0008_rate_slots'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('script_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('script_version', sa.String(length=16), nullable=True))

    op.create_table('calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('rep_id', sa.Integer(), nullable=True),
    sa.Column('cadence_name', sa.String(length=200), nullable=True),
    sa.Column('script_key', sa.String(length=300), nullable=True),
    sa.Column('script_version', sa.String(length=16), nullable=True),
    sa.Column('outcome', sa.String(length=50), nullable=False),
    sa.Column('logged_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_calls_lead_id_leads'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['rep_id'], ['users.id'], name=op.f('fk_calls_rep_id_users')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_calls_task_id_tasks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], name=op.f('fk_calls_touch_id_touches'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calls')),
    sa.UniqueConstraint('task_id', name=op.f('uq_calls_task_id'))
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calls_cadence_name'), ['cadence_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_calls_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_calls_logged_at'), ['logged_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_calls_rep_id'), ['rep_id'], unique=False)
        batch_op.create_index('ix_calls_script_key_script_version', ['script_key', 'script_version'], unique=False)

    op.create_table('call_objections',
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=50), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_call_objections_call_id_calls'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('call_id', 'key', name=op.f('pk_call_objections'))
    )
    with op.batch_alter_table('call_objections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_objections_key'), ['key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('call_objections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_objections_key'))

    op.drop_table('call_objections')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_script_key_script_version')
        batch_op.drop_index(batch_op.f('ix_calls_rep_id'))
        batch_op.drop_index(batch_op.f('ix_calls_logged_at'))
        batch_op.drop_index(batch_op.f('ix_calls_lead_id'))
        batch_op.drop_index(batch_op.f('ix_calls_cadence_name'))

    op.drop_table('calls')
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_column('script_version')
        batch_op.drop_column('script_key')
