"""Putting leads into cadences, and resuming enrollments that waited on a mailbox."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import cadences, suppressions
from sequencer.calendar import NoOpening, Wait
from sequencer.models import LIVE_STATES, Enrollment, Lead, Mailbox

CHUNK = 500


@dataclass
class EnrollReport:
    enrolled: list[int] = field(default_factory=list)  # enrollment ids
    skipped: dict[int, str] = field(default_factory=dict)  # lead id -> reason


def enroll_leads(session: so.Session, *, lead_ids: list[int], cadence_name: str, now: datetime) -> EnrollReport:
    """Enroll leads in the latest version of a cadence; skip suppressed, opted-out and already active ones."""
    cadence = cadences.latest(session, cadence_name)
    if cadence.state in ("draft", "archived"):
        raise ValueError(f"cadence '{cadence_name}' is {cadence.state}; run `sequencer cadence resume {cadence_name}`"
                         " or apply it with state = \"active\" before enrolling")
    if not cadence.steps:
        raise ValueError(f"cadence '{cadence_name}' has no steps")
    channels = {step.channel for step in cadence.steps}
    first_wait = Wait.parse(cadence.steps[0].wait)
    report = EnrollReport()
    for start in range(0, len(lead_ids), CHUNK):
        chunk = lead_ids[start:start + CHUNK]
        leads = list(session.scalars(sa.select(Lead).where(Lead.id.in_(chunk))))
        found = {lead.id for lead in leads}
        for lead_id in chunk:
            if lead_id not in found:
                report.skipped[lead_id] = "no such lead"
        active = set(session.scalars(sa.select(Enrollment.lead_id).where(
            Enrollment.lead_id.in_(found), Enrollment.cadence_name == cadence_name,
            Enrollment.state.in_(LIVE_STATES))))
        blocked: dict[int, str] = {}
        for channel in channels:
            # A channel suppressions have no scope of (a to-do) is blocked only by those on all channels.
            scope = channel if channel in suppressions.CHANNELS else "all"
            for lead_id, reason in suppressions.blocked_leads(session, leads, scope).items():
                blocked.setdefault(lead_id, reason)
        mailboxes = _owner_mailboxes(session, {lead.owner_id for lead in leads if lead.owner_id})
        rows = []
        for lead in leads:
            reason = ("already active in this cadence" if lead.id in active
                      else "opted out" if lead.opted_out_at
                      else f"suppressed: {blocked[lead.id]}" if lead.id in blocked else None)
            if reason is None:
                try:
                    due = cadences.calendar_for_lead(cadence.schedule, lead).due_at(now, first_wait)
                except NoOpening as exc:
                    reason = f"its sending window never opens: {exc}"
            if reason:
                report.skipped[lead.id] = reason
                continue
            rows.append({
                "lead_id": lead.id, "cadence_id": cadence.id, "cadence_name": cadence.name,
                "mailbox_id": mailboxes.get(lead.owner_id), "state": "active", "step_position": 0,
                "next_due_at": due,
                "anchor_at": now, "enrolled_at": now,
            })
        if rows:
            report.enrolled += list(session.scalars(sa.insert(Enrollment).returning(Enrollment.id), rows))
    return report


def _owner_mailboxes(session: so.Session, owner_ids: set[int]) -> dict[int, int]:
    """Map each owner to their mailbox (the oldest active one): a thread always comes from one sender."""
    if not owner_ids:
        return {}
    result: dict[int, int] = {}
    for owner_id, mailbox_id in session.execute(
        sa.select(Mailbox.owner_id, Mailbox.id).where(Mailbox.owner_id.in_(owner_ids)).order_by(Mailbox.id)
    ):
        result.setdefault(owner_id, mailbox_id)
    return result


def resume_mailbox_enrollments(session: so.Session, *, mailbox_id: int, now: datetime) -> int:
    """Resume enrollments that waited because their mailbox was held; return how many."""
    result = session.execute(
        sa.update(Enrollment)
        .where(Enrollment.mailbox_id == mailbox_id, Enrollment.state == "paused",
               Enrollment.paused_reason == "mailbox_held")
        .values(state="active", paused_reason=None, next_due_at=now)
    )
    return result.rowcount
