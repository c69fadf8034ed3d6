"""Manual message tasks sent from the web app: the rendered draft, and the rep's edit sent through its channel.

A manual email or SMS step opens a task (the engine's _open_task); the rep edits the draft and
sends it. The send keeps the engine's at-most-once contract: the touch is committed as `sending`
with a new attempt (and the channel's Message-ID) before the channel is called, and the answer
is recorded after. An answer that is not known (a crash, a timeout) leaves the touch `unknown`
for `sequencer touches resolve`, never a second send.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import suppressions
from sequencer.channels import Channel, OutboundTouch, Sender, SendResult
from sequencer.engine import advance
from sequencer.messages import context_for_enrollment, render_step
from sequencer.models import Enrollment, Lead, Mailbox, Task, Touch, TouchAttempt, User
from sequencer.rendering import TemplateProblem
from sequencer.runtime import Runtime
from sequencer.calls import step_of


class ManualError(ValueError):
    """A manual send that cannot go out; the message names the reason and the fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        # The form field the reason belongs beside (subject, body), None for the whole task.
        self.field = field


@dataclass(frozen=True)
class Draft:
    """What the rep edits: the message as its step renders it for the lead, and where it goes."""

    task_id: int
    channel: str
    to: str
    subject: str | None
    body: str
    # The conversation it replies in (the enrollment's last Message-ID), None for a first message.
    in_reply_to: str | None
    # Why it cannot be sent as things stand (no channel to send with, a template problem), else None.
    problem: str | None


def sending_channel(runtime: Runtime, name: str) -> Channel:
    """Return the channel that sends `name` touches; ManualError when none can send now."""
    channel = runtime.plugins.channel(name)
    if channel is None or channel.sender_kind is None or not channel.automatic:
        raise ManualError(f"no installed plugin sends {name} messages; install and configure one "
                          f"(sequencer plugins list), or send it yourself and mark the task done")
    reason = channel.unavailable_reason()
    if reason:
        raise ManualError(f"the {name} channel cannot send now: {reason}")
    return channel


def draft(session: so.Session, runtime: Runtime, task_id: int) -> Draft:
    """Return the task's message rendered for its lead, for the rep to edit."""
    task, touch, enrollment, lead = _parts(session, task_id)
    to = (lead.email if touch.channel == "email" else lead.phone) or ""
    step, variant = step_of(session, touch)
    problem = None
    subject, body = touch.subject, task.instructions
    try:
        sending_channel(runtime, touch.channel)
    except ManualError as exc:
        problem = str(exc)
    if step is not None:
        threaded = enrollment.thread_message_id is not None
        try:
            rendered = render_step(runtime.renderer, step, variant, context_for_enrollment(session, enrollment, runtime),
                                   as_email=touch.channel == "email")
            subject, body = rendered.subject, rendered.text
        except TemplateProblem as exc:
            problem = problem or f"the step's template cannot be rendered for this lead: {exc.reason}"
        if threaded and enrollment.thread_subject:
            subject = _re(enrollment.thread_subject)
    return Draft(task.id, touch.channel, to, subject, body, enrollment.thread_message_id, problem)


def send(runtime: Runtime, task_id: int, *, subject: str | None, body: str, user_id: int) -> SendResult:
    """Send the rep's edit of a manual message task through its channel; the task is done when it went out.

    ManualError (with the form field) when it cannot go out; nothing was sent then.
    """
    if not body.strip():
        raise ManualError("write the message before sending it", "body")
    with runtime.session() as session:
        task, touch, enrollment, lead = _parts(session, task_id, lock=True)
        channel = sending_channel(runtime, touch.channel)
        if touch.channel == "email" and not (subject or "").strip():
            raise ManualError("an email needs a subject", "subject")
        why = _not_to_contact(session, lead, touch.channel)
        if why:
            raise ManualError(f"{lead.email or lead.phone} {why}: this message may not be sent; skip the task")
        number = (session.scalar(sa.select(sa.func.max(TouchAttempt.number)).where(TouchAttempt.touch_id == touch.id))
                  or 0) + 1
        context = context_for_enrollment(session, enrollment, runtime)
        outbound = OutboundTouch(
            touch_id=touch.id, attempt=number, channel=touch.channel, to_email=lead.email, to_phone=lead.phone,
            to_name=lead.full_name, sender=_sender(session, channel, enrollment, lead), subject=subject or None,
            text=body, html=None, message_id=touch.message_id, unsubscribe_url=context["unsubscribe_url"],
            # Always in the enrollment's conversation: the rep's message follows what the lead already has.
            thread_id=enrollment.thread_message_id, thread_references=enrollment.thread_references)
        try:
            channel.prepare(outbound)  # the Message-ID, thread headers, footer, segment limits
        except ValueError as exc:
            raise ManualError(str(exc), "body") from None
        # At most once: committed as sending before the channel is called.
        touch.status, touch.subject, touch.body_text, touch.message_id = ("sending", outbound.subject, outbound.text,
                                                                          outbound.message_id)
        touch.mailbox_id, touch.updated_at = enrollment.mailbox_id, runtime.now()
        session.add(TouchAttempt(touch_id=touch.id, number=number, started_at=runtime.now()))
    try:
        [result] = channel.send_batch([outbound])
    except Exception as exc:  # noqa: BLE001 - whatever the plugin did, the answer is unknown, and recorded
        result = SendResult(touch.id, accepted=False, provider_status="unknown", error=f"channel crashed: {exc!r}")
    _record(runtime, task_id, touch.id, number, result, user_id)
    return result


def _record(runtime: Runtime, task_id: int, touch_id: int, number: int, result: SendResult, user_id: int) -> None:
    """Record the channel's answer: sent (task done, enrollment on), refused (task stays open) or unknown."""
    now = runtime.now()
    with runtime.session() as session:
        touch, task = session.get(Touch, touch_id), session.get(Task, task_id)
        attempt = session.scalar(sa.select(TouchAttempt).where(TouchAttempt.touch_id == touch_id,
                                                               TouchAttempt.number == number))
        attempt.finished_at, touch.updated_at, touch.provider_status = now, now, result.provider_status
        enrollment = session.get(Enrollment, touch.enrollment_id)
        if result.accepted:
            touch.provider_id, touch.error = result.provider_id, None
            # As the engine records it: one that counts only once its plugin reports it done waits placed.
            touch.status, touch.sent_at = ("placed", None) if result.sent_when_reported else ("sent", now)
            if touch.message_id:
                # Later `thread = true` steps reply to this one, as after an automatic send.
                if enrollment.thread_message_id is None:
                    enrollment.thread_subject = touch.subject
                enrollment.thread_references = " ".join(filter(None, [enrollment.thread_references,
                                                                      touch.message_id]))
                enrollment.thread_message_id = touch.message_id
            task.state, task.outcome, task.completed_at = "done", "sent", now
            task.notes = f"sent by hand (user {user_id})"
            if enrollment.state == "waiting_task":
                session.flush()
                advance(session.scalars(sa.select(Enrollment).where(Enrollment.id == enrollment.id).options(
                    so.joinedload(Enrollment.lead), so.joinedload(Enrollment.cadence))).unique().one(), now,
                    runtime.plugins)
            return
        attempt.error = touch.error = result.error or result.recipient_problem or result.sender_problem
        # Surely not sent: the rep may try again. Not known: a person must check before anything is resent.
        surely_not = result.retryable or result.recipient_problem or result.sender_problem or result.defer_until
        touch.status = "pending" if surely_not and result.provider_status != "unknown" else "unknown"


def _parts(session: so.Session, task_id: int, *, lock: bool = False) -> tuple[Task, Touch, Enrollment, Lead]:
    task = session.get(Task, task_id, with_for_update=lock)
    if task is None:
        raise ManualError(f"no task {task_id}")
    if task.state != "open":
        raise ManualError(f"task {task_id} is already {task.state}")
    if task.kind == "call":
        # Sending a call step's text through its channel would place a voicemail drop, not the rep's call.
        raise ManualError(f"task {task_id} is a call: call the lead (`sequencer calls dial {task_id}` or the "
                          "Call button) and log the outcome; only email and text tasks are sent from here")
    touch = session.get(Touch, task.touch_id) if task.touch_id else None
    enrollment = session.get(Enrollment, task.enrollment_id) if task.enrollment_id else None
    lead = session.get(Lead, task.lead_id) if task.lead_id else None
    if touch is None or enrollment is None or lead is None:
        raise ManualError(f"task {task_id} is not a message of a cadence step; do it by hand and mark it done")
    if touch.status not in ("pending",):
        raise ManualError(f"task {task_id}'s message is {touch.status}; check it with `sequencer touches` "
                          "before sending anything again")
    return task, touch, enrollment, lead


def _not_to_contact(session: so.Session, lead: Lead, channel: str) -> str | None:
    if lead.opted_out_at is not None:
        return "opted out"
    blocked = suppressions.blocked_leads(session, [lead], channel if channel in suppressions.CHANNELS else "all")
    return f"is suppressed ({blocked[lead.id]})" if lead.id in blocked else None


def _sender(session: so.Session, channel: Channel, enrollment: Enrollment, lead: Lead) -> Sender | None:
    """Return what the message goes out from, as the channel declares it (the engine's rule, for one touch)."""
    if channel.sender_kind == "mailbox":
        mailbox = session.get(Mailbox, enrollment.mailbox_id) if enrollment.mailbox_id else None
        if mailbox is None:
            raise ManualError("the enrollment has no mailbox to send from; add one with `sequencer mailboxes add`")
        return Sender(address=mailbox.address, display_name=mailbox.display_name, signature=mailbox.signature,
                      transport=mailbox.transport or {}, owner_id=mailbox.owner_id)
    owner = session.get(User, lead.owner_id) if lead.owner_id else None
    if owner is None:
        raise ManualError(f"lead {lead.id} has no owner to send from; give the lead an owner")
    return Sender(address=owner.phone or "", display_name=owner.name, owner_id=owner.id)


def _re(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def snooze(session: so.Session, task_id: int, *, until: datetime, now: datetime) -> Task:
    """Put an open task off until `until` (it leaves Today until then); ManualError for a time not ahead."""
    task = session.get(Task, task_id, with_for_update=True)
    if task is None or task.state != "open":
        raise ManualError(f"task {task_id} is not open", "until")
    if until <= now:
        raise ManualError("pick a time in the future to snooze until", "until")
    task.due_at = until
    return task
