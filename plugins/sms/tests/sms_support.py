"""What the SMS plugin's tests share besides fixtures: the configured numbers and texts in the database."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from sequencer.channels import OutboundTouch
from sequencer.models import Cadence, Enrollment, Lead, Touch, User

POOL = ("+14155550100", "+14155550101")
HELP_TEXT = "Acme: reply STOP to opt out. Help: help@acme.example"
BASE_URL = "https://sequencer.test"  # [web] base_url of sequencer.testing's config
LEAD = "+14155552671"


def sending_touch(runtime, phone: str, *, owner: str | None = None, text: str = "Hi") -> int:
    """Return the id of a new SMS touch being sent to the lead with this phone (added, owned by `owner`, if new)."""
    now: datetime = runtime.now()
    with runtime.session() as session:
        enrollment = session.scalar(sa.select(Enrollment).join(Lead, Lead.id == Enrollment.lead_id)
                                    .where(Lead.phone == phone))
        if enrollment is None:
            owner_id = session.scalar(sa.select(User.id).where(User.email == owner)) if owner else None
            lead = Lead(phone=phone, owner_id=owner_id, first_name="Jane", created_at=now, updated_at=now)
            cadence = Cadence(name=f"texts to {phone}", version=1, definition_hash="x", created_at=now)
            session.add_all([lead, cadence])
            session.flush()
            enrollment = Enrollment(lead_id=lead.id, cadence_id=cadence.id, cadence_name=cadence.name,
                                    anchor_at=now, enrolled_at=now)
            session.add(enrollment)
            session.flush()
        steps = session.scalar(sa.select(sa.func.count()).where(Touch.enrollment_id == enrollment.id))
        touch = Touch(enrollment_id=enrollment.id, step_key=f"text{steps + 1}", lead_id=enrollment.lead_id,
                      channel="sms", status="sending", body_text=text, created_at=now, updated_at=now)
        session.add(touch)
        session.flush()
        return touch.id


def outbound(touch_id: int, phone: str | None = LEAD, text: str = "Hi Jane") -> OutboundTouch:
    """The rendered touch the engine hands send_batch."""
    return OutboundTouch(touch_id=touch_id, attempt=1, channel="sms", to_email=None, to_phone=phone, to_name="Jane",
                         sender=None, subject=None, text=text, html=None)
