"""What a channel that dials (the voice plugin) asks of the core beyond Core.call_result.

A rep's click-to-call starts from a call task; a voicemail drop is an automatic step whose call
only counts when the message was played: `placed` when the provider took the call, `sent` when
played. Plugins reach these as Core methods (`core.call_task(...)`, sequencer.receiving.PluginCore);
each function takes that Core first and uses only its public side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import sqlalchemy as sa

from sequencer import suppressions
from sequencer.channels import Core, DialError, Receipt, SentTouch
from sequencer.leads import infer_zones
from sequencer.models import InboundEvent, Lead, RateSlot, Task, Touch, TouchAttempt, User
from sequencer.numbers import Slot, _instant, _us

# The outcome a voicemail drop's touch gets when its message was played to the end.
LEFT_VOICEMAIL = "left_voicemail"
# How a not-played drop's error starts: the touch failed because nobody heard the message.
NOT_PLAYED = "voicemail not played"
# The call statuses that end a call (sequencer.channels.CallStatus; sequencer.receiving.CALL_RANK's last).
CALL_OVER = ("completed", "busy", "no_answer", "failed", "canceled")


@dataclass(frozen=True)
class CallTask:
    """An open call task, with what dialing it needs."""

    task_id: int
    touch_id: int | None
    lead_id: int
    lead_phone: str
    lead_name: str
    rep_email: str
    rep_phone: str
    # The zones the lead may be in; contact hours must hold in every one (COMPLIANCE.md rule 8).
    zones: tuple[str, ...]


def call_task(core: Core, task_id: int) -> CallTask:
    """Return an open call task with the lead's number and its owner's phone; raise DialError saying what is missing."""
    with core.session() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise DialError(f"no task {task_id}; list them with `sequencer tasks`")
        if task.state != "open":
            raise DialError(f"task {task_id} is already {task.state}")
        if task.kind != "call" or task.lead_id is None:
            raise DialError(f"task {task_id} is a {task.kind} task, not a call to a lead")
        lead = session.get(Lead, task.lead_id)
        assert lead is not None, "a task's lead is deleted with it"
        if not lead.phone or lead.phone_wrong:
            raise DialError(f"lead {lead.id} has {'a wrong' if lead.phone else 'no'} phone number; correct it with "
                            "`sequencer leads import` before calling")
        if lead.opted_out_at is not None:
            raise DialError(f"lead {lead.id} opted out; nobody may call them")
        blocked = suppressions.blocked_leads(session, [lead], "voice")
        if lead.id in blocked:
            raise DialError(f"lead {lead.id} is suppressed ({blocked[lead.id]}); nobody may call them")
        rep = session.get(User, task.owner_id) if task.owner_id is not None else None
        if rep is None:
            raise DialError(f"task {task_id} has no owner to ring; give the lead an owner first")
        if not rep.phone:
            raise DialError(f"{rep.email} has no phone to ring; `sequencer users set {rep.email} --phone +E164`")
        zones = lead.zones() or tuple(infer_zones(lead.phone, lead.country)[0])
        if not zones:
            raise DialError(f"lead {lead.id}'s time zone is unknown, so its contact hours are too; set the lead's "
                            "timezone or country")
        return CallTask(task.id, task.touch_id, lead.id, lead.phone, lead.full_name or lead.phone, rep.email,
                        rep.phone, zones)


def call_placed(core: Core, touch_id: int, provider_id: str) -> None:
    """Put a rep's call on the task's touch, so that its call_result reports land on the lead's timeline.

    A new call from the same task starts the touch's call progress over: the last call is the one reported.
    """
    with core.session() as session:
        session.execute(sa.update(Touch).where(Touch.id == touch_id).values(
            provider_id=provider_id, provider_status="queued", updated_at=core.now()))


@dataclass(frozen=True)
class Drop:
    """A voicemail drop's touch as its call's TwiML needs it."""

    touch_id: int
    lead_id: int
    lead_country: str | None
    # The message as the engine rendered and recorded it for this touch.
    text: str
    status: str


def drop(core: Core, touch_id: int) -> Drop | None:
    """Return the automatic voice touch a drop call plays, or None when there is no such touch."""
    with core.session() as session:
        row = session.execute(sa.select(Touch, Lead.country).join(Lead, Lead.id == Touch.lead_id)
                              .where(Touch.id == touch_id, Touch.channel == "voice", Touch.action == "auto")).first()
        if row is None:
            return None
        touch, country = row
        return Drop(touch.id, touch.lead_id, country, touch.body_text or "", touch.status)


def voicemail_played(core: Core, touch_id: int, touch_sent: Callable[[SentTouch], None] | None = None) -> Receipt:
    """Record that a drop's message was played to the end: the touch is sent now, `left_voicemail`.

    The engine recorded the drop `placed` when the provider took the call; this report makes it
    `sent` (sent_at: now) and calls `touch_sent` with it, inside the report's transaction. Once
    the call's final status is in (it came first, or failed the drop as not played: callbacks
    out of order), the drop is `completed`, as a played drop's call ends either way. A report
    that comes while the engine still records the provider's answer (`sending`) makes it `sent`,
    and the engine's record keeps that. Forward-only and replay-safe.
    """
    now = core.now()
    with core.session() as session:
        touch = session.get(Touch, touch_id, with_for_update=True)
        if touch is None:
            return Receipt("unknown_id", detail=f"no touch {touch_id}")
        if touch.outcome == LEFT_VOICEMAIL:
            return Receipt("unchanged", lead_id=touch.lead_id, touch_id=touch.id,
                           detail=f"touch {touch.id} already left a voicemail")
        touch.outcome, touch.updated_at = LEFT_VOICEMAIL, now
        before, first_sent = touch.status, touch.sent_at is None
        not_played = before == "failed" and (touch.error or "").startswith(NOT_PLAYED)
        if before in ("sending", "placed") or not_played:
            over = not_played or touch.provider_status in CALL_OVER
            touch.status, touch.error = "completed" if over else "sent", None
            touch.sent_at = touch.sent_at or now
        session.add(InboundEvent(kind="voicemail", channel="voice", received_at=now, lead_id=touch.lead_id,
                                 touch_id=touch.id, summary="voicemail left: the message was played",
                                 classification={"outcome": LEFT_VOICEMAIL, "at": now.isoformat()}))
        session.flush()
        # While the engine has not recorded the call (its attempt unfinished), touch_sent is the engine's to send.
        recorded = session.scalar(sa.select(sa.func.count()).select_from(TouchAttempt).where(
            TouchAttempt.touch_id == touch.id, TouchAttempt.finished_at.is_(None))) == 0
        if touch_sent is not None and first_sent and recorded and (before == "placed" or not_played):
            touch_sent(SentTouch(touch.id, touch.lead_id, touch.channel, touch.step_key, touch.provider_id,
                                 touch.message_id, touch.sent_at))
        return Receipt("updated", changed=True, lead_id=touch.lead_id, touch_id=touch.id,
                       detail=f"touch {touch.id} left a voicemail")


def voicemail_missed(core: Core, provider_id: str, why: str, touch_id: int | None = None) -> Receipt:
    """Fail a drop whose call ended without its message played (a person answered, no answer, busy).

    Call it after the call's final call_result. A placed drop fails; one that left its voicemail
    stays as it is, and so does a failed one. `touch_id` finds a drop whose call ended before the
    worker recorded its provider id (calls of a group go out one a second): it fails as well, and
    the worker's record keeps that.
    """
    with core.session() as session:
        touch = session.scalars(sa.select(Touch).where(Touch.provider_id == provider_id, Touch.channel == "voice")
                                .with_for_update()).first()
        if touch is None and touch_id is not None:
            touch = session.scalars(sa.select(Touch).where(
                Touch.id == touch_id, Touch.channel == "voice", Touch.action == "auto", Touch.status == "sending",
                Touch.provider_id.is_(None)).with_for_update()).first()
            if touch is not None:
                touch.provider_id = provider_id
        if touch is None:
            return Receipt("unknown_id", detail=f"no touch has provider id voice {provider_id}")
        if touch.outcome == LEFT_VOICEMAIL or touch.status == "failed":
            return Receipt("unchanged", lead_id=touch.lead_id, touch_id=touch.id,
                           detail=f"touch {touch.id} is already {touch.outcome or touch.status}")
        touch.status, touch.error, touch.updated_at = "failed", f"{NOT_PLAYED}: {why}"[:2000], core.now()
        return Receipt("failed", changed=True, lead_id=touch.lead_id, touch_id=touch.id,
                       detail=f"touch {touch.id} failed: {NOT_PLAYED}: {why}")


def call_back_task(core: Core, touch_id: int, instructions: str) -> int | None:
    """Give the lead's owner a task to call back the person who answered a drop; once per touch.

    Returns the task's id (the existing one on a replay), or None when the touch is not ours.
    The task stands alone (no touch, no enrollment): the cadence moved on when the call was placed.
    """
    now = core.now()
    with core.session() as session:
        touch = session.get(Touch, touch_id, with_for_update=True)
        if touch is None:
            return None
        title_prefix = f"Call back (voicemail drop {touch.id})"
        existing = session.scalar(sa.select(Task.id).where(Task.lead_id == touch.lead_id,
                                                           Task.title.startswith(title_prefix)))
        if existing is not None:
            return existing
        lead = session.get(Lead, touch.lead_id)
        assert lead is not None
        who = lead.full_name or lead.phone or f"lead {lead.id}"
        task = Task(owner_id=lead.owner_id, lead_id=lead.id, kind="call",
                    title=f"{title_prefix}: {who}" + (f" ({lead.company})" if lead.company else ""),
                    instructions=instructions, due_at=now, state="open", priority=30, created_at=now)
        session.add(task)
        session.flush()
        return task.id


def call_recording(core: Core, provider_id: str, recording_id: str, url: str, duration: int | None) -> Receipt:
    """Put a call's recording on the lead's timeline (a `call_recording` event); once per recording id.

    Recordings are reported after the call ended, when its call_result is already final, so
    they are kept as events of their own rather than on the final result.
    """
    now = core.now()
    with core.session() as session:
        touch = session.scalars(sa.select(Touch).where(Touch.provider_id == provider_id)).first()
        if touch is None:
            return Receipt("unknown_id", detail=f"no touch has provider id {provider_id}")
        seen = session.scalar(sa.select(InboundEvent.id).where(InboundEvent.kind == "call_recording",
                                                               InboundEvent.message_id == recording_id))
        if seen is not None:
            return Receipt("unchanged", lead_id=touch.lead_id, touch_id=touch.id,
                           detail=f"recording {recording_id} is already on the timeline")
        length = f" ({duration} s)" if duration is not None else ""
        session.add(InboundEvent(kind="call_recording", channel="voice", received_at=now, lead_id=touch.lead_id,
                                 touch_id=touch.id, message_id=recording_id, summary=f"call recording {url}{length}",
                                 classification={"recording_url": url, "duration": duration,
                                                 "at": now.isoformat()}))
        return Receipt("recorded", changed=True, lead_id=touch.lead_id, touch_id=touch.id,
                       detail=f"recording {recording_id} of touch {touch.id}", kind="call_recording")


def account_slot(core: Core, key: str, per_second: float, latest: datetime) -> Slot:
    """Take the next slot of a rate shared by every worker (calls per second of a provider account).

    One conditional UPDATE ... RETURNING (one slot at a time, unlike numbers.reserve_slots): PostgreSQL
    serializes it on the row lock, SQLite on its single writer. Nothing is taken (`reserved`
    False) when the next free slot starts after `latest`; `at` then says when to try again.
    """
    if per_second <= 0:
        raise ValueError(f"per_second must be positive, not {per_second!r}")
    interval = math.ceil(1_000_000 / per_second)
    now_us = _us(core.now())
    with core.session() as session:
        if session.get(RateSlot, key) is None:
            try:
                with session.begin_nested():
                    session.add(RateSlot(key=key, next_slot_us=0))
            except sa.exc.IntegrityError:
                pass  # another worker added it first
        start = sa.case((RateSlot.next_slot_us > now_us, RateSlot.next_slot_us), else_=now_us)
        taken = session.execute(
            sa.update(RateSlot).where(RateSlot.key == key, RateSlot.next_slot_us <= _us(latest))
            .values(next_slot_us=start + interval).returning(RateSlot.next_slot_us)
            .execution_options(synchronize_session=False)).scalar()
        if taken is not None:
            return Slot(_instant(taken - interval), reserved=True)
        busy_until = session.scalar(sa.select(RateSlot.next_slot_us).where(RateSlot.key == key))
        return Slot(_instant(max(busy_until, now_us)), reserved=False)
