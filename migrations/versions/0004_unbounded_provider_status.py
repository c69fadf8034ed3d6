"""unbounded provider status and exit reason

Revision ID: 0004_unbounded_provider_status
Revises: 0003_tasks_without_a_lead
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0004_unbounded_provider_status'
down_revision = '0003_tasks_without_a_lead'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.alter_column('exit_reason',
               existing_type=sa.VARCHAR(length=200),
               type_=sa.Text(),
               existing_nullable=True)

    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.alter_column('provider_status',
               existing_type=sa.VARCHAR(length=50),
               type_=sa.Text(),
               existing_nullable=True)



def downgrade() -> None:
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.alter_column('provider_status',
               existing_type=sa.Text(),
               type_=sa.VARCHAR(length=50),
               existing_nullable=True)

    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.alter_column('exit_reason',
               existing_type=sa.Text(),
               type_=sa.VARCHAR(length=200),
               existing_nullable=True)

