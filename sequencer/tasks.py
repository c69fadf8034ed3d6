"""Reps' tasks: the daily list, and logging the outcome of each."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.calendar import ContactHours, NoContactHours, next_contact_opening
from sequencer.calls import MEETING, NOT_INTERESTED, CallLogError, learn_facts, objection_keys, record_call
from sequencer.engine import advance
from sequencer import suppressions
from sequencer.exits import end_enrollments, end_on_event
from sequencer.leads import infer_zones
from sequencer.models import Cadence, Enrollment, Lead, Task, Touch, User

if TYPE_CHECKING:
    from sequencer.plugins import Plugins


class TaskError(ValueError):
    """A task action that cannot be done; the message says why and what to do."""


def list_tasks(session: so.Session, *, rep: User | None, day: date | None, now: datetime) -> list[dict[str, Any]]:
    """Return open tasks due by the end of `day` in the rep's zone (overdue included), most urgent first."""
    zone = ZoneInfo(rep.timezone if rep else "UTC")
    day = day or now.astimezone(zone).date()
    end_of_day = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
    query = (
        sa.select(Task, Lead, Touch.step_key, Touch.channel, Touch.action, Cadence.name)
        .outerjoin(Lead, Lead.id == Task.lead_id)  # admin alerts have no lead
        .outerjoin(Touch, Touch.id == Task.touch_id)
        .outerjoin(Enrollment, Enrollment.id == Task.enrollment_id)
        .outerjoin(Cadence, Cadence.id == Enrollment.cadence_id)
        .where(Task.state == "open", Task.due_at < end_of_day)
        .order_by(Task.priority.desc(), Task.due_at, Task.id)
    )
    if rep is not None:
        query = query.where(Task.owner_id == rep.id)
    found = session.execute(query).all()
    hidden = _not_to_contact(session, [(task, lead, channel) for task, lead, _step, channel, _action, _c in found])
    rows = []
    for task, lead, step_key, channel, action, cadence in found:
        if task.id in hidden:
            continue
        rows.append({
            "id": task.id, "kind": task.kind, "title": task.title, "lead_id": task.lead_id,
            "lead_email": lead and lead.email, "lead_phone": lead and lead.phone,
            "lead_name": lead and lead.full_name, "company": lead and lead.company,
            "channel": channel or task.kind, "action": action or "manual", "cadence": cadence, "step": step_key,
            "due_at": task.due_at, "overdue": task.due_at < now, "state": task.state, "priority": task.priority,
            "instructions": task.instructions,
        })
    return rows


def complete_task(session: so.Session, task_id: int, *, outcome: str | None, notes: str | None, now: datetime,
                  outcomes: list[str], plugins: Plugins | None = None, call_back_at: datetime | None = None,
                  objections: Sequence[str] = (), facts: Mapping[str, str] | None = None,
                  hours: ContactHours | None = None, template_dir: Path | None = None) -> Task:
    """Mark a task done with its outcome, then move the lead's enrollment on (or end it on a meeting).

    A call task done with an outcome is logged as a call (sequencer.calls) with the objections
    heard, under the script its touch carries (or, with `template_dir`, the step's script as it is
    now, for a task opened without one). `facts` become the lead's custom fields.
    With `hours`, a call back is moved into the lead's contact hours.
    """
    task = _open_task(session, task_id)
    if outcome is not None and outcome not in outcomes:
        raise TaskError(f"outcome '{outcome}' is not one of: {', '.join(outcomes)} (configure [tasks] outcomes)")
    try:
        heard = objection_keys(objections)
    except CallLogError as exc:
        raise TaskError(str(exc)) from None
    is_call = task.kind == "call" and outcome is not None
    if heard and task.kind != "call":
        raise TaskError(f"task {task_id} is a {task.kind} task, not a call; remove --objection")
    if heard and not is_call:
        raise TaskError(f"say how the call of task {task_id} ended: --outcome, one of {', '.join(outcomes)}")
    lead = session.get(Lead, task.lead_id) if task.lead_id else None
    if facts and lead is None:
        raise TaskError(f"task {task_id} has no lead to learn facts about; remove --fact")
    task.state, task.outcome, task.notes, task.completed_at = "done", outcome, notes, now
    touch = session.get(Touch, task.touch_id) if task.touch_id else None
    if touch is not None:
        touch.outcome, touch.notes, touch.updated_at = outcome, notes, now
    enrollment = _enrollment(session, task)
    if is_call:
        assert outcome is not None
        record_call(session, task, touch, outcome=outcome, objections=heard, template_dir=template_dir, now=now,
                    cadence_name=enrollment and enrollment.cadence_name)
    if lead is not None:
        learn_facts(lead, facts or {}, now)
    if outcome == "call_back_later" and (why := _not_to_contact(session, [(task, lead, touch and touch.channel)])):
        # Suppressed or opted out since the task opened: no new task; the cadence ends as the engine would end it.
        reason = why[task.id]
        if touch is not None:
            touch.status, touch.error, touch.updated_at = "skipped", reason, now
        if enrollment is not None:
            end_enrollments(session, [enrollment.id], state="opted_out" if lead.opted_out_at else "removed",
                            reason=reason, now=now, plugins=plugins)
        return task
    if outcome == "call_back_later":
        # The same touch stays open: a new task, the enrollment keeps waiting.
        due = _call_back_at(lead, call_back_at or now + timedelta(days=1), hours)
        session.add(Task(owner_id=task.owner_id, lead_id=task.lead_id, touch_id=task.touch_id,
                         enrollment_id=task.enrollment_id, kind=task.kind, title=task.title,
                         instructions=task.instructions, due_at=due, priority=task.priority, created_at=now))
        return task
    if touch is not None:
        touch.status, touch.sent_at = "completed", now
    if outcome == "wrong_number" and lead is not None:
        lead.phone_wrong = True
    if enrollment is None:
        return task
    if outcome == MEETING and end_on_event(session, enrollment, event="meeting", state="finished",
                                           reason="meeting booked", now=now, plugins=plugins):
        return task
    if outcome == NOT_INTERESTED and end_on_event(session, enrollment, event=NOT_INTERESTED, state="finished",
                                                  reason=NOT_INTERESTED, now=now, plugins=plugins):
        return task
    if enrollment.state == "waiting_task":
        advance(enrollment, now, plugins)
    return task


def _call_back_at(lead: Lead | None, wanted: datetime, hours: ContactHours | None) -> datetime:
    """Return `wanted`, or when the lead's contact hours next open after it (COMPLIANCE.md rule 8)."""
    if hours is None or lead is None:
        return wanted
    zones = lead.zones() or tuple(infer_zones(lead.phone, lead.country)[0])
    if not zones:
        return wanted  # nowhere to place the lead: the rep's own time stands, as for any task
    try:
        return next_contact_opening(zones, hours, wanted)
    except NoContactHours:
        # Candidate zones that never share an hour: calling would wait for a person to learn the zone.
        return wanted


def follow_up(session: so.Session, task: Task) -> Task | None:
    """Return the open task a call back opened from `task`, if any."""
    if task.touch_id is None:
        return None
    return session.scalar(sa.select(Task).where(Task.touch_id == task.touch_id, Task.state == "open",
                                                Task.id > task.id).order_by(Task.id))


def skip_task(session: so.Session, task_id: int, *, reason: str, now: datetime,
              plugins: Plugins | None = None) -> Task:
    """Skip a task with a reason; the enrollment continues from now."""
    if not reason.strip():
        raise TaskError("say why the task is skipped: --reason TEXT")
    task = _open_task(session, task_id)
    task.state, task.notes, task.completed_at = "skipped", reason, now
    if task.touch_id:
        touch = session.get(Touch, task.touch_id)
        touch.status, touch.error, touch.updated_at = "skipped", reason, now
    enrollment = _enrollment(session, task)
    if enrollment is not None and enrollment.state == "waiting_task":
        advance(enrollment, now, plugins)
    return task


def _not_to_contact(session: so.Session, tasks: list[tuple[Task, Lead | None, str | None]]) -> dict[int, str]:
    """Return task id -> why, for tasks whose lead opted out or is suppressed on the task's channel.

    One suppression query per channel, whatever the number of tasks. A task with no touch
    (a reply to answer) or on a step only people do is blocked by suppressions on all channels.
    """
    hidden: dict[int, str] = {}
    by_channel: dict[str, list[tuple[Task, Lead]]] = {}
    for task, lead, channel in tasks:
        if lead is None:
            continue  # an admin alert
        if lead.opted_out_at is not None:
            hidden[task.id] = "opted out"
            continue
        by_channel.setdefault(channel if channel in suppressions.CHANNELS else "all", []).append((task, lead))
    for channel, pairs in by_channel.items():
        blocked = suppressions.blocked_leads(session, [lead for _task, lead in pairs], channel)
        hidden.update((task.id, f"suppressed: {blocked[lead.id]}") for task, lead in pairs if lead.id in blocked)
    return hidden


def _open_task(session: so.Session, task_id: int) -> Task:
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise TaskError(f"no task {task_id}; list them with `sequencer tasks`")
    if task.state != "open":
        raise TaskError(f"task {task_id} is already {task.state}")
    return task


def _enrollment(session: so.Session, task: Task) -> Enrollment | None:
    if task.enrollment_id is None:
        return None
    return session.scalars(
        sa.select(Enrollment).where(Enrollment.id == task.enrollment_id)
        .options(so.joinedload(Enrollment.lead), so.joinedload(Enrollment.cadence).selectinload(Cadence.steps))
    ).unique().one()
