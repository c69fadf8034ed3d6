"""sign in: user locale and active flag, login failures

Revision ID: 0007_sign_in
Revises: 0006_phone_numbers_as_senders
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0007_sign_in'
down_revision = '0006_phone_numbers_as_senders'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        # Existing users keep working: English, active.
        batch_op.add_column(sa.Column('locale', sa.String(length=5), nullable=False, server_default='en'))
        batch_op.add_column(sa.Column('active', sa.Boolean(), nullable=False, server_default=sa.true()))

    op.create_table('login_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('failed_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_login_failures_email_failed_at', ['email', 'failed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_login_failures_email_failed_at')

    op.drop_table('login_failures')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('active')
        batch_op.drop_column('locale')
