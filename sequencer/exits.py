"""Ending enrollments: replies, bounces, opt-outs, meetings, removals, and their exit scope."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.leads import FREE_MAIL_DOMAINS
from sequencer.models import LIVE_STATES, Cadence, Enrollment, Lead, Task

if TYPE_CHECKING:
    from sequencer.plugins import Plugins


def end_enrollments(session: so.Session, enrollment_ids: Iterable[int], *, state: str, reason: str, now: datetime,
                    plugins: Plugins | None = None) -> list[int]:
    """End these live enrollments with `state`; close their open tasks; return the ids that ended."""
    ids = list(enrollment_ids)
    if not ids:
        return []
    ended = list(session.scalars(
        sa.update(Enrollment)
        .where(Enrollment.id.in_(ids), Enrollment.state.in_(LIVE_STATES))
        .values(state=state, exit_reason=reason, exited_at=now, next_due_at=None,
                lease_owner=None, lease_until=None, paused_reason=None)
        .returning(Enrollment.id)
    ))
    if ended:
        # Open cadence tasks of an ended enrollment are moot; reply tasks (no enrollment) stay.
        session.execute(
            sa.update(Task).where(Task.enrollment_id.in_(ended), Task.state == "open", Task.kind != "reply")
            .values(state="skipped", notes=f"enrollment ended: {reason}", completed_at=now)
        )
        if plugins is not None:
            for enrollment in session.scalars(sa.select(Enrollment).where(Enrollment.id.in_(ended))
                                              .execution_options(populate_existing=True)):
                plugins.hook.enrollment_exited(enrollment=enrollment, reason=reason)
    return ended


def live_enrollment_ids(session: so.Session, lead_ids: Iterable[int]) -> list[int]:
    return list(session.scalars(
        sa.select(Enrollment.id).where(Enrollment.lead_id.in_(list(lead_ids)), Enrollment.state.in_(LIVE_STATES))
    ))


def end_for_lead(session: so.Session, lead: Lead, *, state: str, reason: str, now: datetime,
                 plugins: Plugins | None = None) -> list[int]:
    """End every live enrollment of the lead (opt-outs, invalid addresses: whatever a cadence lists)."""
    return end_enrollments(session, live_enrollment_ids(session, [lead.id]), state=state, reason=reason,
                           now=now, plugins=plugins)


def end_on_event(session: so.Session, enrollment: Enrollment, *, event: str, state: str, reason: str,
                 now: datetime, plugins: Plugins | None = None) -> list[int]:
    """End an enrollment on a reply or meeting if its cadence exits on it, widening to the exit scope."""
    cadence = session.get(Cadence, enrollment.cadence_id)
    rules = cadence.exit_rules if cadence else {}
    if event not in rules.get("on", ["reply", "meeting"]):
        return []
    scope = rules.get("scope", "lead")
    ids = [enrollment.id]
    if scope in ("lead", "account"):
        lead_ids = [enrollment.lead_id]
        if scope == "account":
            domain = session.scalar(sa.select(Lead.domain).where(Lead.id == enrollment.lead_id))
            # Everyone at gmail.com is not one account.
            if domain and domain not in FREE_MAIL_DOMAINS:
                lead_ids = list(session.scalars(sa.select(Lead.id).where(Lead.domain == domain)))
        ids += live_enrollment_ids(session, lead_ids)
    return end_enrollments(session, set(ids), state=state, reason=reason, now=now, plugins=plugins)


def end_on_reply(session: so.Session, lead_id: int, *, replied_to: int | None, now: datetime,
                 plugins: Plugins | None = None) -> list[int]:
    """End enrollments on a reply from a lead by their exit rules; return the ids that ended.

    The replied-to enrollment goes first (its exit scope may widen), then any other live one of the lead.
    """
    candidates = ([replied_to] if replied_to else []) + live_enrollment_ids(session, [lead_id])
    ended: list[int] = []
    for enrollment_id in dict.fromkeys(candidates):
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment.state in LIVE_STATES:
            ended += end_on_event(session, enrollment, event="reply", state="replied", reason="replied",
                                  now=now, plugins=plugins)
    return ended
