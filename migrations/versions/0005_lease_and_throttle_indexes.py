"""indexes for leases and throttles

Revision ID: 0005_lease_and_throttle_indexes
Revises: 0004_unbounded_provider_status
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0005_lease_and_throttle_indexes'
down_revision = '0004_unbounded_provider_status'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index('ix_enrollments_lease_until', ['lease_until'], unique=False, sqlite_where=sa.text('lease_until IS NOT NULL'), postgresql_where=sa.text('lease_until IS NOT NULL'))

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_touches_lead_id'))
        batch_op.drop_index(batch_op.f('ix_touches_mailbox_id'))
        batch_op.create_index('ix_touches_lead_id_created_at', ['lead_id', 'created_at'], unique=False)
        batch_op.create_index('ix_touches_mailbox_id_created_at', ['mailbox_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_mailbox_id_created_at')
        batch_op.drop_index('ix_touches_lead_id_created_at')
        batch_op.create_index(batch_op.f('ix_touches_mailbox_id'), ['mailbox_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_lead_id'), ['lead_id'], unique=False)

    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_lease_until', sqlite_where=sa.text('lease_until IS NOT NULL'), postgresql_where=sa.text('lease_until IS NOT NULL'))

