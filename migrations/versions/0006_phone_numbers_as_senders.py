"""phone numbers as senders

Revision ID: 0006_phone_numbers_as_senders
Revises: 0005_lease_and_throttle_indexes
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models


revision = '0006_phone_numbers_as_senders'
down_revision = '0005_lease_and_throttle_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('phone_numbers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_slot_us', sa.BigInteger(), nullable=False),
    sa.Column('cap_day', sa.Integer(), nullable=False),
    sa.Column('cap_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_phone_numbers_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_phone_numbers')),
    sa.UniqueConstraint('number', name=op.f('uq_phone_numbers_number'))
    )
    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_phone_numbers_owner_id'), ['owner_id'], unique=False)

    op.create_table('lead_numbers',
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('phone_number_id', sa.Integer(), nullable=False),
    sa.Column('assigned_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_lead_numbers_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['phone_number_id'], ['phone_numbers.id'], name=op.f('fk_lead_numbers_phone_number_id_phone_numbers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('lead_id', name=op.f('pk_lead_numbers'))
    )
    with op.batch_alter_table('lead_numbers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lead_numbers_phone_number_id'), ['phone_number_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('lead_numbers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lead_numbers_phone_number_id'))

    op.drop_table('lead_numbers')
    with op.batch_alter_table('phone_numbers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_phone_numbers_owner_id'))

    op.drop_table('phone_numbers')
