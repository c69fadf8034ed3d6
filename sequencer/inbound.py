"""Acting on inbound mail: replies end cadences, auto-replies pause them, bounces and complaints by cause."""
from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import suppressions
from sequencer.calendar import LocalCalendar, Window
from sequencer.exits import end_for_lead, end_on_event, live_enrollment_ids
from sequencer.leads import FREE_MAIL_DOMAINS
from sequencer.mailreading import MailReading, as_dict, read_message
from sequencer.models import LIVE_STATES, Cadence, Enrollment, InboundEvent, Lead, Mailbox, Task, Touch, User
from sequencer.optouts import opt_out

if TYPE_CHECKING:
    from sequencer.plugins import Plugins


@dataclass
class InboundResult:
    kind: str
    lead_id: int | None = None
    actions: list[str] = field(default_factory=list)


def handle_email(session: so.Session, raw: bytes, *, now: datetime, plugins: Plugins,
                 out_of_office_days: int = 3) -> InboundResult:
    """Read one RFC 5322 message, record it against the lead, and act on that reading."""
    reading = read_message(raw, today=now.date())
    touch = _match_touch(session, reading.references)
    lead = (session.get(Lead, touch.lead_id) if touch
            else _lead_by_email(session, reading.sender) or _lead_by_account(session, reading.sender))
    result = InboundResult(kind=reading.kind, lead_id=lead.id if lead else None)
    sentiment = plugins.hook.classify_reply(text=reading.reply_text) if reading.kind == "reply" else None
    if reading.kind in ("bounce", "complaint"):
        _act_on_failures(session, reading, touch, _our_mailbox(session, raw), now, plugins, result)
    elif lead is not None and reading.kind == "reply":
        _act_on_reply(session, reading, lead, touch, now, plugins, result)
    elif lead is not None and reading.kind == "auto_reply":
        _act_on_auto_reply(session, reading, lead, now, result, out_of_office_days)
    elif touch is not None and reading.kind == "delivery_report":
        touch.provider_status = "delivered"
        if touch.status == "sent":
            touch.status = "delivered"
        result.actions.append(f"touch {touch.id} delivered")
    event = InboundEvent(
        kind=reading.kind, channel="email", received_at=now, lead_id=result.lead_id,
        touch_id=touch.id if touch else None, mailbox_id=touch.mailbox_id if touch else None,
        message_id=reading.message_id or None, summary=_summary(reading, result),
        classification={**as_dict(reading), "sentiment": sentiment or reading.sentiment, "actions": result.actions,
                        "cause": _cause(reading)},
        raw=raw.decode("utf-8", errors="replace"),
    )
    session.add(event)
    session.flush()
    plugins.hook.inbound_received(event=event)
    return result


def message_id_of(raw: bytes) -> str | None:
    """Return the message's own <Message-ID>, as handle_email records it."""
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID", "")
    except Exception:  # a header too broken to parse has no usable id
        return None
    found = re.search(r"<[^<>\s]+>", str(value))
    return found.group(0) if found else None


def recorded_event(session: so.Session, message_id: str | None) -> InboundEvent | None:
    """Return the inbound event already recorded for this Message-ID, if any."""
    if not message_id:
        return None
    return session.scalars(sa.select(InboundEvent).where(InboundEvent.message_id == message_id)
                           .order_by(InboundEvent.id).limit(1)).first()


def _act_on_reply(session: so.Session, reading: MailReading, lead: Lead, touch: Touch | None, now: datetime,
                  plugins: Plugins, result: InboundResult) -> None:
    if reading.opt_out:
        opt_out(session, lead, now=now, source="reply", detail=reading.reply_text[:500], plugins=plugins)
        result.actions.append("opted out (asked to be removed)")
    # The replied-to enrollment first (its exit scope may widen), then any other live one of the lead.
    candidates = ([touch.enrollment_id] if touch else []) + live_enrollment_ids(session, [lead.id])
    ended: list[int] = []
    for enrollment_id in dict.fromkeys(candidates):
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment.state in LIVE_STATES:
            ended += end_on_event(session, enrollment, event="reply", state="replied", reason="replied",
                                  now=now, plugins=plugins)
    if ended:
        result.actions.append(f"ended {len(ended)} enrollment(s) as replied")
    who = lead.full_name or lead.email
    session.add(Task(owner_id=lead.owner_id, lead_id=lead.id, touch_id=touch.id if touch else None, kind="reply",
                     title=f"Reply received from {who}: {reading.subject}"[:500],
                     instructions=reading.reply_text, due_at=now, priority=40, created_at=now))
    result.actions.append("opened a reply task for the owner")


def _act_on_auto_reply(session: so.Session, reading: MailReading, lead: Lead, now: datetime,
                       result: InboundResult, default_days: int) -> None:
    """An out-of-office is not a reply: pause until the next working day after the return date."""
    back = reading.return_date
    if back is None:
        if default_days <= 0:
            result.actions.append("auto-reply without a return date: the cadence goes on")
            return
        back = (now + timedelta(days=default_days - 1)).date()
    resume_at = _next_working_morning(back, lead)
    if resume_at <= now:
        return
    paused = session.execute(
        sa.update(Enrollment)
        .where(Enrollment.lead_id == lead.id, Enrollment.state.in_(("active", "waiting_task")))
        .values(state="paused", paused_reason="out_of_office", resume_at=resume_at)
    ).rowcount
    result.actions.append(f"paused {paused} enrollment(s) until {resume_at.isoformat()}")


def _next_working_morning(back: date, lead: Lead) -> datetime:
    """Return the start of the lead's first business day (weekends and their holidays skipped) after `back`."""
    zones = lead.zones() or ("UTC",)
    try:
        calendar = LocalCalendar(Window.ALWAYS, zones[:1], lead.country)
    except ValueError:  # a country the holidays library does not know: weekends only
        calendar = LocalCalendar(Window.ALWAYS, zones[:1], None)
    day = back + timedelta(days=1)
    while not calendar.is_business_day(day):
        day += timedelta(days=1)
    return datetime.combine(day, time(0, 0), ZoneInfo(zones[0])).astimezone(ZoneInfo("UTC"))


def _act_on_failures(session: so.Session, reading: MailReading, touch: Touch | None, our_mailbox: Mailbox | None,
                     now: datetime, plugins: Plugins, result: InboundResult) -> None:
    for address in reading.addresses:
        lead = _lead_by_email(session, address.address) or (session.get(Lead, touch.lead_id) if touch else None)
        if lead is not None:
            result.lead_id = result.lead_id or lead.id
        why = f"{address.status} {address.reason}".strip()
        if address.cause == "recipient_invalid":
            suppressions.add(session, "email", address.address, reason=f"invalid address: {why}"[:1000],
                             source="bounce", now=now)
            if lead is not None:
                lead.email_invalid = True
                end_for_lead(session, lead, state="bounced", reason=f"invalid address: {why}"[:200], now=now,
                             plugins=plugins)
            if touch is not None:
                touch.status, touch.provider_status, touch.error = "failed", "bounced", why
            result.actions.append(f"suppressed {address.address} (invalid address)")
        elif address.cause == "complaint":
            if reading.suppress and lead is not None:
                opt_out(session, lead, now=now, source="complaint", detail=why, plugins=plugins)
                result.actions.append(f"opted out {address.address} (complaint)")
            elif reading.suppress:
                suppressions.add(session, "email", address.address, reason=f"complaint: {why}", source="complaint",
                                 now=now)
                result.actions.append(f"suppressed {address.address} (complaint)")
        elif address.cause == "sender_problem":
            mailbox = session.get(Mailbox, touch.mailbox_id) if touch and touch.mailbox_id else our_mailbox
            if mailbox is not None and mailbox.state != "held":
                _hold_mailbox(session, mailbox, f"a bounce blamed our sending setup: {why}", now)
                result.actions.append(f"held mailbox {mailbox.address}")
        elif address.cause == "transient" and touch is not None:
            if _retry_touch(session, touch, now, why):
                result.actions.append(f"touch {touch.id} will be retried")
        elif address.cause == "other" and touch is not None:
            touch.status, touch.provider_status, touch.error = "failed", "bounced", why
            result.actions.append(f"touch {touch.id} failed: {why}")


def _hold_mailbox(session: so.Session, mailbox: Mailbox, reason: str, now: datetime) -> None:
    """Stop a mailbox sending and tell every admin: the fix is on our side, not the lead's."""
    mailbox.state, mailbox.held_at, mailbox.held_reason = "held", now, reason[:1000]
    for admin_id in session.scalars(sa.select(User.id).where(User.role == "admin")):
        session.add(Task(owner_id=admin_id, lead_id=None, kind="alert", priority=50, due_at=now, created_at=now,
                         title=f"Mailbox {mailbox.address} is on hold"[:500],
                         instructions=f"{reason}\n\nFix the sending setup (`sequencer doctor`), then run "
                                      f"`sequencer mailboxes release {mailbox.address}`."))


def _our_mailbox(session: so.Session, raw: bytes) -> Mailbox | None:
    """Find which of our mailboxes a bounce came back to (its To), when it names none of our messages."""
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    addresses = [a.lower() for _, a in getaddresses([str(headers.get("To", "")), str(headers.get("Delivered-To", ""))])
                 if a]
    if not addresses:
        return None
    return session.scalar(sa.select(Mailbox).where(sa.func.lower(Mailbox.address).in_(addresses)).limit(1))


def _retry_touch(session: so.Session, touch: Touch, now: datetime, why: str) -> bool:
    """Send a temporarily failed touch again, if its enrollment has not moved past the next step."""
    enrollment = session.scalars(
        sa.select(Enrollment).where(Enrollment.id == touch.enrollment_id)
        .options(so.selectinload(Enrollment.cadence).selectinload(Cadence.steps))
    ).one()
    keys = [s.key for s in enrollment.cadence.steps]
    if enrollment.state != "active" or touch.step_key not in keys:
        return False
    position = keys.index(touch.step_key)
    if enrollment.step_position != position + 1:
        return False
    touch.status, touch.error, touch.retry_at = "pending", f"temporary failure: {why}", now + timedelta(hours=1)
    enrollment.step_position, enrollment.next_due_at = position, touch.retry_at
    return True


def _match_touch(session: so.Session, references: tuple[str, ...]) -> Touch | None:
    """Find our touch by the Message-IDs the message refers to, newest reference first."""
    if not references:
        return None
    touches = {t.message_id: t for t in session.scalars(sa.select(Touch).where(Touch.message_id.in_(references)))}
    return next((touches[ref] for ref in references if ref in touches), None)


def _lead_by_email(session: so.Session, address: str) -> Lead | None:
    if not address:
        return None
    return session.scalar(sa.select(Lead).where(Lead.email_normalized == address.strip().lower()))


def _lead_by_account(session: so.Session, address: str) -> Lead | None:
    """Match a reply from a colleague: the lead at the sender's company who is in a cadence, latest enrolled."""
    domain = address.rpartition("@")[2].lower()
    if not domain or domain in FREE_MAIL_DOMAINS:
        return None
    return session.scalar(
        sa.select(Lead).join(Enrollment, Enrollment.lead_id == Lead.id)
        .where(Lead.domain == domain, Enrollment.state.in_(LIVE_STATES))
        .order_by(Enrollment.enrolled_at.desc()).limit(1))


def _cause(reading: MailReading) -> str | None:
    causes = {a.cause for a in reading.addresses}
    return ",".join(sorted(causes)) if causes else None


def _summary(reading: MailReading, result: InboundResult) -> str:
    if reading.kind == "reply":
        return reading.reply_text[:500]
    parts = [f"{a.address}: {a.cause} {a.status} {a.reason}".strip() for a in reading.addresses]
    return "; ".join(parts + result.actions)[:1000] or reading.subject
