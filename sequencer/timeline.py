"""A lead's timeline: every enrollment, touch, attempt, task, inbound event and consent, in time order."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.clock import iso_z
from sequencer.consent import consents
from sequencer.models import Enrollment, InboundEvent, Lead, Task, Touch, TouchAttempt, TouchStatus


def lead_timeline(session: so.Session, lead: Lead) -> list[dict[str, Any]]:
    """Return the lead's history as rows with at, kind, channel, status, cadence, step, detail."""
    cadence_of = dict(session.execute(sa.select(Enrollment.id, Enrollment.cadence_name)
                                      .where(Enrollment.lead_id == lead.id)).all())
    rows: list[dict[str, Any]] = []

    def row(at, kind, *, channel=None, status=None, enrollment_id=None, step=None, detail="", **more):  # noqa: ANN001
        rows.append({"at": at, "kind": kind, "channel": channel, "status": status,
                     "cadence": cadence_of.get(enrollment_id), "step": step, "detail": detail, **more})

    for e in session.scalars(sa.select(Enrollment).where(Enrollment.lead_id == lead.id)):
        waits = f" - {e.state.replace('_', ' ')}: {e.paused_reason}" if e.paused_reason else ""
        row(e.enrolled_at, "enrolled", status=e.state, enrollment_id=e.id, detail=f"cadence {e.cadence_name}{waits}")
        if e.exited_at:
            row(e.exited_at, "exited", status=e.state, enrollment_id=e.id, detail=e.exit_reason or "")
    touches = {t.id: t for t in session.scalars(sa.select(Touch).where(Touch.lead_id == lead.id))}
    for t in touches.values():
        # A text has no subject: its first words say which one it was.
        detail = t.subject or _first_words(t.body_text)
        if t.error:
            detail = f"{detail} - {t.error}" if detail else t.error
        if t.status == TouchStatus.placed:
            # Neither sent nor failed yet: say what it waits for (a voicemail drop: its message played).
            waiting = "placed with the provider; sent once reported done"
            detail = f"{detail} - {waiting}" if detail else waiting
        if t.outcome:
            detail = f"{detail} - outcome {t.outcome}" + (f": {t.notes}" if t.notes else "")
        row(t.sent_at or t.created_at, "touch", channel=t.channel, status=t.status, enrollment_id=t.enrollment_id,
            step=t.step_key, detail=detail, touch_id=t.id, message_id=t.message_id, provider_id=t.provider_id,
            variant=t.variant_key)
    if touches:
        for a in session.scalars(sa.select(TouchAttempt).where(TouchAttempt.touch_id.in_(list(touches)))):
            t = touches[a.touch_id]
            row(a.started_at, "attempt", channel=t.channel, status="error" if a.error else "ok",
                enrollment_id=t.enrollment_id, step=t.step_key,
                detail=f"attempt {a.number}" + (f": {a.error}" if a.error else ""))
    for task in session.scalars(sa.select(Task).where(Task.lead_id == lead.id)):
        step = touches[task.touch_id].step_key if task.touch_id in touches else None
        row(task.created_at, "task", channel=task.kind, status="open", enrollment_id=task.enrollment_id, step=step,
            detail=task.title, task_id=task.id)
        if task.completed_at:
            row(task.completed_at, f"task_{task.state}", channel=task.kind, status=task.state,
                enrollment_id=task.enrollment_id, step=step, task_id=task.id,
                detail=", ".join(filter(None, [task.outcome, task.notes])))
    for ev in session.scalars(sa.select(InboundEvent).where(InboundEvent.lead_id == lead.id)):
        row(ev.received_at, ev.kind, channel=ev.channel, status=ev.classification.get("cause"), detail=ev.summary)
    for c in consents(lead).values():
        # At the time it was recorded: a consent given long ago only counts from when we knew of it.
        row(c.recorded_at, "consent", channel=c.channel, status="given",
            detail=f"{c.source} (given {iso_z(c.given_at)}, recorded by {c.recorded_by})")
        if c.revoked_at:
            row(c.revoked_at, "consent_revoked", channel=c.channel, status="revoked", detail=f"by {c.revoked_by}")
    rows.sort(key=lambda r: (r["at"], _ORDER.get(r["kind"], 5)))
    return rows


# Same-instant rows read best in causal order.
_ORDER = {"enrolled": 0, "attempt": 1, "touch": 2, "task": 3, "exited": 9}


def _first_words(text: str | None, limit: int = 60) -> str:
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"
