"""mailbox imap polling

Revision ID: 0002_mailbox_imap_polling
Revises: 0001_core_tables
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models
from sqlalchemy.dialects import postgresql

revision = '0002_mailbox_imap_polling'
down_revision = '0001_core_tables'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inbound', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False,
                                      server_default=sa.text("'{}'")))  # existing mailboxes: no IMAP
        batch_op.add_column(sa.Column('imap_uidvalidity', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('imap_last_uid', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('inbound_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('inbound_failures', sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column('inbound_checked_at', sequencer.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('inbound_retry_at', sequencer.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('mailboxes', schema=None) as batch_op:
        batch_op.drop_column('inbound_retry_at')
        batch_op.drop_column('inbound_checked_at')
        batch_op.drop_column('inbound_failures')
        batch_op.drop_column('inbound_error')
        batch_op.drop_column('imap_last_uid')
        batch_op.drop_column('imap_uidvalidity')
        batch_op.drop_column('inbound')

