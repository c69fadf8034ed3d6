"""core tables

Revision ID: 0001_core_tables
Revises: 
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import sequencer.models
from sqlalchemy.dialects import postgresql

revision = '0001_core_tables'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('object_type', sa.String(length=50), nullable=False),
    sa.Column('object_id', sa.String(length=100), nullable=True),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('cadences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('schedule', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('exit_rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('definition_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cadences')),
    sa.UniqueConstraint('name', 'version', name='uq_cadences_name_version')
    )
    with op.batch_alter_table('cadences', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cadences_name'), ['name'], unique=False)

    op.create_table('plugin_states',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('settings', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('updated_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_plugin_states'))
    )
    op.create_table('suppressions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('value', sa.String(length=320), nullable=True),
    sa.Column('value_hash', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=50), nullable=False),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
    sa.UniqueConstraint('kind', 'value_hash', 'channel', name='uq_suppressions_kind_hash_channel')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('admin', 'ops', 'rep', name='role', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('leads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('email_normalized', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('external_id', sa.String(length=200), nullable=True),
    sa.Column('first_name', sa.String(length=200), nullable=True),
    sa.Column('last_name', sa.String(length=200), nullable=True),
    sa.Column('company', sa.String(length=300), nullable=True),
    sa.Column('domain', sa.String(length=255), nullable=True),
    sa.Column('title', sa.String(length=300), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('timezone_source', sa.String(length=20), nullable=True),
    sa.Column('candidate_zones', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('custom', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('consents', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('email_invalid', sa.Boolean(), nullable=False),
    sa.Column('phone_wrong', sa.Boolean(), nullable=False),
    sa.Column('opted_out_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_leads_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leads')),
    sa.UniqueConstraint('email_normalized', name=op.f('uq_leads_email_normalized')),
    sa.UniqueConstraint('external_id', name=op.f('uq_leads_external_id'))
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leads_domain'), ['domain'], unique=False)
        batch_op.create_index(batch_op.f('ix_leads_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_leads_phone'), ['phone'], unique=False)

    op.create_table('mailboxes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('transport', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('daily_cap', sa.Integer(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('held_reason', sa.Text(), nullable=True),
    sa.Column('held_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_mailboxes_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mailboxes')),
    sa.UniqueConstraint('address', name=op.f('uq_mailboxes_address'))
    )
    op.create_table('steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cadence_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('wait', sa.String(length=40), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('template', sa.String(length=300), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('thread', sa.Boolean(), nullable=False),
    sa.Column('variants', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['cadence_id'], ['cadences.id'], name=op.f('fk_steps_cadence_id_cadences'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_steps')),
    sa.UniqueConstraint('cadence_id', 'key', name='uq_steps_cadence_id_key')
    )
    op.create_table('enrollments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('cadence_id', sa.Integer(), nullable=False),
    sa.Column('cadence_name', sa.String(length=200), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.Enum('active', 'waiting_task', 'paused', 'needs_review', 'finished', 'replied', 'bounced', 'opted_out', 'failed', 'removed', name='enrollment_state', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('step_position', sa.Integer(), nullable=False),
    sa.Column('next_due_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('anchor_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('paused_reason', sa.String(length=100), nullable=True),
    sa.Column('resume_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('exit_reason', sa.String(length=200), nullable=True),
    sa.Column('exited_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.Column('lease_until', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('thread_message_id', sa.String(length=300), nullable=True),
    sa.Column('thread_subject', sa.Text(), nullable=True),
    sa.Column('thread_references', sa.Text(), nullable=True),
    sa.Column('enrolled_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cadence_id'], ['cadences.id'], name=op.f('fk_enrollments_cadence_id_cadences')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_enrollments_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_enrollments_mailbox_id_mailboxes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollments'))
    )
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollments_cadence_id'), ['cadence_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrollments_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrollments_mailbox_id'), ['mailbox_id'], unique=False)
        batch_op.create_index('ix_enrollments_state_next_due_at', ['state', 'next_due_at'], unique=False)
        batch_op.create_index('uq_enrollments_live_lead_cadence', ['lead_id', 'cadence_name'], unique=True, sqlite_where=sa.text('exited_at IS NULL'), postgresql_where=sa.text('exited_at IS NULL'))

    op.create_table('touches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('step_key', sa.String(length=100), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('mailbox_id', sa.Integer(), nullable=True),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('variant_key', sa.String(length=100), nullable=True),
    sa.Column('status', sa.Enum('pending', 'sending', 'sent', 'delivered', 'failed', 'unknown', 'completed', 'skipped', name='touch_status', native_enum=False, create_constraint=True, length=20), nullable=False),
    sa.Column('provider_status', sa.String(length=50), nullable=True),
    sa.Column('provider_id', sa.String(length=300), nullable=True),
    sa.Column('message_id', sa.String(length=300), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('body_text', sa.Text(), nullable=True),
    sa.Column('body_html', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=50), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('due_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('sent_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('retry_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], name=op.f('fk_touches_enrollment_id_enrollments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_touches_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_touches_mailbox_id_mailboxes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_touches')),
    sa.UniqueConstraint('enrollment_id', 'step_key', name='uq_touches_enrollment_id_step_key'),
    sa.UniqueConstraint('message_id', name=op.f('uq_touches_message_id'))
    )
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_touches_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_touches_mailbox_id'), ['mailbox_id'], unique=False)
        batch_op.create_index('ix_touches_status_retry', ['status'], unique=False)

    op.create_table('inbound_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('received_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('mailbox_id', sa.Integer(), nullable=True),
    sa.Column('message_id', sa.String(length=300), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('classification', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_inbound_events_lead_id_leads'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['mailbox_id'], ['mailboxes.id'], name=op.f('fk_inbound_events_mailbox_id_mailboxes')),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], name=op.f('fk_inbound_events_touch_id_touches'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_events'))
    )
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_events_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_events_message_id'), ['message_id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=True),
    sa.Column('enrollment_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=False),
    sa.Column('due_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=50), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('completed_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['enrollment_id'], ['enrollments.id'], name=op.f('fk_tasks_enrollment_id_enrollments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_tasks_lead_id_leads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_tasks_owner_id_users')),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], name=op.f('fk_tasks_touch_id_touches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tasks_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index('ix_tasks_owner_state_due', ['owner_id', 'state', 'due_at'], unique=False)

    op.create_table('touch_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('touch_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('started_at', sequencer.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('retry_at', sequencer.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['touch_id'], ['touches.id'], name=op.f('fk_touch_attempts_touch_id_touches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_touch_attempts')),
    sa.UniqueConstraint('touch_id', 'number', name='uq_touch_attempts_touch_id_number')
    )


def downgrade() -> None:
    op.drop_table('touch_attempts')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_owner_state_due')
        batch_op.drop_index(batch_op.f('ix_tasks_lead_id'))

    op.drop_table('tasks')
    with op.batch_alter_table('inbound_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_events_message_id'))
        batch_op.drop_index(batch_op.f('ix_inbound_events_lead_id'))

    op.drop_table('inbound_events')
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_index('ix_touches_status_retry')
        batch_op.drop_index(batch_op.f('ix_touches_mailbox_id'))
        batch_op.drop_index(batch_op.f('ix_touches_lead_id'))

    op.drop_table('touches')
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('uq_enrollments_live_lead_cadence', sqlite_where=sa.text('exited_at IS NULL'), postgresql_where=sa.text('exited_at IS NULL'))
        batch_op.drop_index('ix_enrollments_state_next_due_at')
        batch_op.drop_index(batch_op.f('ix_enrollments_mailbox_id'))
        batch_op.drop_index(batch_op.f('ix_enrollments_lead_id'))
        batch_op.drop_index(batch_op.f('ix_enrollments_cadence_id'))

    op.drop_table('enrollments')
    op.drop_table('steps')
    op.drop_table('mailboxes')
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leads_phone'))
        batch_op.drop_index(batch_op.f('ix_leads_owner_id'))
        batch_op.drop_index(batch_op.f('ix_leads_domain'))

    op.drop_table('leads')
    op.drop_table('users')
    op.drop_table('suppressions')
    op.drop_table('plugin_states')
    with op.batch_alter_table('cadences', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cadences_name'))

    op.drop_table('cadences')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
