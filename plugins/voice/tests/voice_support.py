"""What the voice plugin's tests share besides fixtures: the configured numbers and calls in the database."""
from __future__ import annotations

import sqlalchemy as sa

from sequencer.channels import OutboundTouch
from sequencer.models import Cadence, Enrollment, InboundEvent, Lead, Task, Touch, User

POOL = ("+14155550100", "+14155550101")
BASE_URL = "https://sequencer.test"  # [web] base_url of sequencer.testing's config
LEAD = "+12125550123"  # New York
REP, REP_PHONE = "rep@acme.example", "+14155550150"
GREETING = "Hello, this is Acme. We will call you back shortly. Goodbye."
NOTICE = "This call is recorded."


def lead_with_touch(runtime, *, phone: str = LEAD, action: str = "auto", text: str = "Hi Jane, it is Acme.",
                    owner: str | None = REP, zone: str = "America/New_York", country: str = "US") -> int:
    """Add a lead (owned by `owner`) in a one-step voice cadence and return the id of its voice touch.

    An automatic touch is being sent (a voicemail drop); a manual one is pending with its call task.
    """
    now = runtime.now()
    with runtime.session() as session:
        owner_id = session.scalar(sa.select(User.id).where(User.email == owner)) if owner else None
        lead = Lead(phone=phone, owner_id=owner_id, first_name="Jane", last_name="Doe", company="Globex",
                    timezone=zone, country=country, created_at=now, updated_at=now)
        cadence = Cadence(name=f"calls to {phone}", version=1, definition_hash="x", created_at=now)
        session.add_all([lead, cadence])
        session.flush()
        enrollment = Enrollment(lead_id=lead.id, cadence_id=cadence.id, cadence_name=cadence.name,
                                anchor_at=now, enrolled_at=now)
        session.add(enrollment)
        session.flush()
        touch = Touch(enrollment_id=enrollment.id, step_key="call", lead_id=lead.id, channel="voice", action=action,
                      status="sending" if action == "auto" else "pending", body_text=text, created_at=now,
                      updated_at=now)
        session.add(touch)
        session.flush()
        if action == "manual":
            session.add(Task(owner_id=owner_id, lead_id=lead.id, touch_id=touch.id, enrollment_id=enrollment.id,
                             kind="call", title="Call Jane Doe (Globex)", due_at=now, priority=30, created_at=now))
        return touch.id


def task_of(runtime, touch_id: int) -> int:
    with runtime.session() as session:
        return session.scalar(sa.select(Task.id).where(Task.touch_id == touch_id))


def outbound(touch_id: int, phone: str = LEAD, text: str = "Hi Jane, it is Acme.") -> OutboundTouch:
    """The rendered touch the engine hands send_batch."""
    return OutboundTouch(touch_id=touch_id, attempt=1, channel="voice", to_email=None, to_phone=phone,
                         to_name="Jane Doe", sender=None, subject=None, text=text, html=None)


def settle(runtime, touch_id: int, result) -> None:
    """Record an accepted drop as the engine's settle does: placed, sent only once its message was played."""
    assert result.sent_when_reported
    with runtime.session() as session:
        session.execute(sa.update(Touch).where(Touch.id == touch_id).values(
            status="placed", provider_id=result.provider_id, provider_status=result.provider_status))


def touch(runtime, touch_id: int) -> Touch:
    with runtime.session() as session:
        return session.get(Touch, touch_id)


def events(runtime, kind: str | None = None) -> list[InboundEvent]:
    with runtime.session() as session:
        query = sa.select(InboundEvent).order_by(InboundEvent.id)
        if kind:
            query = query.where(InboundEvent.kind == kind)
        return list(session.scalars(query))


def tasks(runtime) -> list[Task]:
    with runtime.session() as session:
        return list(session.scalars(sa.select(Task).order_by(Task.id)))
