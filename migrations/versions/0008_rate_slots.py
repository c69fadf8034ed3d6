"""rate slots: a provider account's rate shared by every worker

Revision ID: 0008_rate_slots
Revises: 0007_sign_in
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_rate_slots'
down_revision = '0007_sign_in'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_slots',
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('next_slot_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_slots'))
    )


def downgrade() -> None:
    op.drop_table('rate_slots')
