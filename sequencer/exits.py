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


# The statements of ending, built once: they run for every inbound reply and every exit, and
# building them anew cost more than executing them.
_END = (
    sa.update(Enrollment)
    .where(Enrollment.id.in_(sa.bindparam("ids", expanding=True)), Enrollment.state.in_(LIVE_STATES))
    .values(state=sa.bindparam("end_state"), exit_reason=sa.bindparam("end_reason"),
            exited_at=sa.bindparam("end_at", type_=Enrollment.exited_at.type), next_due_at=None,
            lease_owner=None, lease_until=None, paused_reason=None)
    .returning(Enrollment.id)
)
# Open cadence tasks of an ended enrollment are moot; reply tasks (no enrollment) stay.
_SKIP_TASKS = (
    sa.update(Task)
    .where(Task.enrollment_id.in_(sa.bindparam("ids", expanding=True)), Task.state == "open", Task.kind != "reply")
    .values(state="skipped", notes=sa.bindparam("task_notes"),
            completed_at=sa.bindparam("end_at", type_=Task.completed_at.type))
)
_LIVE_OF_LEAD_OR_REPLIED_TO = (
    sa.select(Enrollment.id, Enrollment.lead_id, Cadence.exit_rules)
    .outerjoin(Cadence, Cadence.id == Enrollment.cadence_id)
    .where(sa.or_(Enrollment.lead_id == sa.bindparam("lead_id"), Enrollment.id == sa.bindparam("replied_to")),
           Enrollment.state.in_(LIVE_STATES))
    .order_by(Enrollment.id)
)


def end_enrollments(session: so.Session, enrollment_ids: Iterable[int], *, state: str, reason: str, now: datetime,
                    plugins: Plugins | None = None) -> list[int]:
    """End these live enrollments with `state`; close their open tasks; return the ids that ended."""
    ids = list(enrollment_ids)
    if not ids:
        return []
    ended = list(session.scalars(_END, {"ids": ids, "end_state": state, "end_reason": reason, "end_at": now}))
    if ended:
        session.execute(_SKIP_TASKS, {"ids": ended, "task_notes": f"enrollment ended: {reason}", "end_at": now})
        # Read back only for a plugin that listens: this runs on every reply.
        if plugins is not None and plugins.hook.enrollment_exited.get_hookimpls():
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
    rules = session.scalar(sa.select(Cadence.exit_rules).where(Cadence.id == enrollment.cadence_id)) or {}
    if not _exits_on(rules, event):
        return []
    return end_enrollments(session, _in_scope(session, enrollment.id, enrollment.lead_id, rules), state=state,
                           reason=reason, now=now, plugins=plugins)


def end_on_reply(session: so.Session, lead_id: int, *, replied_to: int | None, now: datetime,
                 plugins: Plugins | None = None) -> list[int]:
    """End enrollments on a reply from a lead by their exit rules; return the ids that ended.

    The replied-to enrollment and every other live one of the lead are read with their cadence's
    exit rules in one query: this runs for every inbound reply, on every channel.
    """
    live = session.execute(_LIVE_OF_LEAD_OR_REPLIED_TO, {"lead_id": lead_id, "replied_to": replied_to}).all()
    live_of_lead = [row.id for row in live if row.lead_id == lead_id]
    ending: set[int] = set()
    for row in live:
        if row.id not in ending and _exits_on(row.exit_rules or {}, "reply"):
            ending |= _in_scope(session, row.id, row.lead_id, row.exit_rules or {},
                                live_of_lead if row.lead_id == lead_id else None)
    return end_enrollments(session, ending, state="replied", reason="replied", now=now, plugins=plugins)


def _exits_on(rules: dict, event: str) -> bool:
    return event in rules.get("on", ["reply", "meeting"])


def _in_scope(session: so.Session, enrollment_id: int, lead_id: int, rules: dict,
              live_of_lead: list[int] | None = None) -> set[int]:
    """The enrollment and, by its cadence's exit scope, the other live enrollments of its lead or account."""
    scope = rules.get("scope", "lead")
    ids = {enrollment_id}
    if scope == "lead":
        ids.update(live_of_lead if live_of_lead is not None else live_enrollment_ids(session, [lead_id]))
    elif scope == "account":
        lead_ids = [lead_id]
        domain = session.scalar(sa.select(Lead.domain).where(Lead.id == lead_id))
        # Everyone at gmail.com is not one account.
        if domain and domain not in FREE_MAIL_DOMAINS:
            lead_ids = list(session.scalars(sa.select(Lead.id).where(Lead.domain == domain)))
        ids.update(live_enrollment_ids(session, lead_ids))
    return ids
