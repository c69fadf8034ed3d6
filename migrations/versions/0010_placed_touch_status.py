"""placed touch status: the provider took the touch, which counts as sent once its plugin reports it done

Revision ID: 0010_placed_touch_status
Revises: 0009_call_outcomes
Create Date: 2026-11-30
"""
from alembic import op


revision = '0010_placed_touch_status'
down_revision = '0009_call_outcomes'
branch_labels = None
depends_on = None

# touches.status is VARCHAR + a CHECK that lists the statuses (sequencer.models._enum), so a new
# status is a new CHECK. SQLite cannot alter a constraint: batch mode copies the table (rows,
# indexes, the other constraints) under the new one; PostgreSQL drops and adds it in place.
CONSTRAINT = 'ck_touches_touch_status'
BEFORE = ('pending', 'sending', 'sent', 'delivered', 'failed', 'unknown', 'completed', 'skipped')
AFTER = ('pending', 'sending', 'placed', 'sent', 'delivered', 'failed', 'unknown', 'completed', 'skipped')


def _listing(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"


def upgrade() -> None:
    # Rows keep their status: a drop accepted before this revision is `sent` already, and the
    # played or missed report still settles it as before.
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_constraint(op.f(CONSTRAINT), type_='check')
        batch_op.create_check_constraint(op.f(CONSTRAINT), _listing(AFTER))


def downgrade() -> None:
    # Before this revision a touch the provider took was `sent` at once: placed ones become that again.
    op.execute("UPDATE touches SET status = 'sent', sent_at = COALESCE(sent_at, updated_at) "
               "WHERE status = 'placed'")
    with op.batch_alter_table('touches', schema=None) as batch_op:
        batch_op.drop_constraint(op.f(CONSTRAINT), type_='check')
        batch_op.create_check_constraint(op.f(CONSTRAINT), _listing(BEFORE))
