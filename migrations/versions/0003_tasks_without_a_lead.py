"""tasks without a lead

Revision ID: 0003_tasks_without_a_lead
Revises: 0002_mailbox_imap_polling
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0003_tasks_without_a_lead'
down_revision = '0002_mailbox_imap_polling'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.alter_column('lead_id',
               existing_type=sa.INTEGER(),
               nullable=True)



def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.alter_column('lead_id',
               existing_type=sa.INTEGER(),
               nullable=False)

