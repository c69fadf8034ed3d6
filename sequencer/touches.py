"""Touches whose outcome is unknown (a worker died mid-send), and how a person resolves them."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.engine import advance
from sequencer.models import Cadence, Enrollment, Lead, Touch, TouchAttempt

if TYPE_CHECKING:
    from sequencer.plugins import Plugins


class ResolveError(ValueError):
    """The touch cannot be resolved that way; the message says why."""


def unknown_touches(session: so.Session) -> list[dict[str, Any]]:
    """List touches whose send may or may not have happened, oldest first."""
    rows = session.execute(
        sa.select(Touch, Lead.email, Lead.phone, Enrollment.cadence_name)
        .join(Lead, Lead.id == Touch.lead_id).join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .where(Touch.status == "unknown").order_by(Touch.updated_at, Touch.id))
    return [{"id": t.id, "lead_email": email, "lead_phone": phone, "cadence": cadence, "step": t.step_key,
             "channel": t.channel, "message_id": t.message_id, "subject": t.subject, "since": t.updated_at,
             "error": t.error} for t, email, phone, cadence in rows]


def resolve_touch(session: so.Session, touch_id: int, *, sent: bool, now: datetime,
                  plugins: Plugins | None = None) -> Touch:
    """Settle an unknown touch: sent moves the enrollment on; not sent makes a new attempt now."""
    touch = session.get(Touch, touch_id, with_for_update=True)
    if touch is None:
        raise ResolveError(f"no touch {touch_id}; list them with `sequencer touches unknown`")
    if touch.status != "unknown":
        raise ResolveError(f"touch {touch_id} is {touch.status}, not unknown: there is nothing to resolve")
    enrollment = session.scalars(
        sa.select(Enrollment).where(Enrollment.id == touch.enrollment_id)
        .options(so.joinedload(Enrollment.lead), so.joinedload(Enrollment.cadence).selectinload(Cadence.steps))
    ).unique().one()
    last_attempt = session.scalar(sa.select(TouchAttempt).where(TouchAttempt.touch_id == touch.id)
                                  .order_by(TouchAttempt.number.desc()).limit(1))
    if last_attempt is not None and last_attempt.finished_at is None:
        last_attempt.finished_at = now
    touch.updated_at = now
    if sent:
        touch.status, touch.sent_at, touch.error = "sent", touch.sent_at or now, None
        if enrollment.state == "needs_review":
            advance(enrollment, now, plugins)
    else:
        touch.status, touch.error = "pending", "resolved as not sent; sending again"
        if enrollment.state == "needs_review":
            enrollment.state, enrollment.paused_reason, enrollment.next_due_at = "active", None, now
    return touch
