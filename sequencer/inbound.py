"""Acting on inbound mail: replies end cadences, auto-replies pause them, bounces and complaints by cause."""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import suppressions
from sequencer.calendar import LocalCalendar, Window
from sequencer.exits import end_for_lead, end_on_event, live_enrollment_ids
from sequencer.leads import FREE_MAIL_DOMAINS, LeadDataError, email_key
from sequencer_email.reading import AddressReading, MailReading, as_dict, read_message
from sequencer.models import LIVE_STATES, Cadence, Enrollment, InboundEvent, Lead, Mailbox, Task, Touch, User
from sequencer.optouts import opt_out

if TYPE_CHECKING:
    from sequencer.plugins import Plugins
    from sequencer.runtime import Runtime

log = logging.getLogger(__name__)
_Reading = TypeVar("_Reading", MailReading, AddressReading)

# Database failures that a later try can get past: the server down or restarting, a lock or a
# serialization conflict, a pool with no free connection. Anything else fails the same way again.
_TEMPORARY = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, sa.exc.DisconnectionError)
# Kinds written by a person: only for these does the sender's address say which lead it is.
# A bounce or notification comes from a mail system (postmaster@ the lead's company is not the lead).
_PERSON_KINDS = ("reply", "auto_reply", "unknown")
# Reads a message's own header block; compat32 never raises on a malformed address.
_HEADERS = BytesHeaderParser(policy=compat32)
# The longest Message-ID the inbound_events column holds; longer ones are kept cut to it, on
# recording and on looking up alike, so a retried delivery still finds the first.
_MESSAGE_ID_CHARS = InboundEvent.message_id.type.length
# How many Message-IDs one query looks up: a References header of 100 KB names thousands,
# more than SQLite lets one statement bind.
_REFERENCES_PER_QUERY = 500


def is_temporary(exc: BaseException) -> bool:
    """Tell a failure worth trying again later (the database unreachable or busy) from one that would recur."""
    return isinstance(exc, _TEMPORARY) or (isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)


@dataclass
class InboundResult:
    kind: str
    lead_id: int | None = None
    actions: list[str] = field(default_factory=list)
    # Why the message could not be acted on (no recipient named, no lead, unreadable...), else None.
    unmatched: str | None = None
    # True when this Message-ID was already recorded and nothing was done again.
    duplicate: bool = False

    def as_json(self) -> dict[str, object]:
        """Return what the pipe prints and the HTTP hook answers."""
        data: dict[str, object] = {"kind": self.kind, "lead_id": self.lead_id, "actions": self.actions}
        if self.unmatched:
            data["unmatched"] = self.unmatched
        if self.duplicate:
            data["duplicate"] = True
        return data


class InboundUnavailable(Exception):
    """Acting on a message failed for a reason that passes (the database); the message says so. Try it again."""


def receive_email(runtime: Runtime, raw: bytes) -> InboundResult:
    """Act once on one message that arrived (MTA pipe, HTTP hook) in a transaction of its own.

    Raises InboundUnavailable only for a temporary failure, so the sender keeps the message
    and delivers it again; see act_once.
    """
    try:
        with runtime.session() as session:
            return act_once(runtime, session, raw)
    except Exception as exc:
        if not is_temporary(exc):
            raise
        raise InboundUnavailable(f"the database is unavailable, try again later: {getattr(exc, 'orig', exc)}") from exc


def act_once(runtime: Runtime, session: so.Session, raw: bytes) -> InboundResult:
    """Act on one arriving message once per Message-ID; raise only for a temporary failure.

    Acting that fails for a reason a retry would not cure (a value the database refuses, a
    plugin's error) is undone and the message recorded as unmatched with the error, so the
    mail behind it still gets read. A temporary failure (see is_temporary) propagates: the
    caller leaves the message where it is, to be tried again.
    """
    message_id = message_id_of(raw)
    existing = recorded_event(session, message_id)
    if existing is not None:
        # MTAs, providers and pollers deliver again after a timeout: act once per Message-ID.
        return InboundResult(kind=existing.kind, lead_id=existing.lead_id, duplicate=True)
    now = runtime.now()
    try:
        with session.begin_nested():
            return handle_email(session, raw, now=now, plugins=runtime.plugins,
                                out_of_office_days=runtime.settings.inbound.out_of_office_default_days)
    except Exception as exc:
        if is_temporary(exc):
            raise
        log.exception("inbound message %s could not be acted on", message_id or "without a Message-ID")
        why = f"acting on it failed ({type(exc).__name__}: {exc}); a person must read it and act"
        event = InboundEvent(kind="unknown", channel="email", received_at=now, message_id=message_id,
                             summary=_storable(f"unmatched: {why}")[:1000],
                             classification={"unmatched": _storable(why)}, raw=_raw_text(raw))
        session.add(event)
        session.flush()
        return InboundResult(kind=event.kind, unmatched=why)


def handle_email(session: so.Session, raw: bytes, *, now: datetime, plugins: Plugins,
                 out_of_office_days: int = 3) -> InboundResult:
    """Read one RFC 5322 message, record it against the lead, and act on that reading.

    What the message says never makes this raise: a message that cannot be acted on (a
    complaint naming no recipient, an address we never wrote to, a notification, an
    unreadable message) is recorded with the reason in `InboundResult.unmatched`, and each
    recipient of a bounce is acted on by itself, so one bad address stops no other.
    """
    reading = _storable_reading(read_message(raw, today=now.date()))
    touch = _match_touch(session, reading.references)
    lead = session.get(Lead, touch.lead_id) if touch else None
    if lead is None and reading.kind in _PERSON_KINDS:
        lead = _lead_by_email(session, reading.sender) or _lead_by_account(session, reading.sender)
    mailbox = session.get(Mailbox, touch.mailbox_id) if touch and touch.mailbox_id else _our_mailbox(session, raw)
    result = InboundResult(kind=reading.kind, lead_id=lead.id if lead else None)
    sentiment = plugins.hook.classify_reply(text=reading.reply_text) if reading.kind == "reply" else None
    if reading.kind in ("bounce", "complaint"):
        _act_on_failures(session, reading, touch, mailbox, now, plugins, result)
    elif lead is not None and reading.kind == "reply":
        _act_on_reply(session, reading, lead, touch, now, plugins, result)
    elif lead is not None and reading.kind == "auto_reply":
        _act_on_auto_reply(session, reading, lead, now, result, out_of_office_days)
    elif touch is not None and reading.kind == "delivery_report":
        touch.provider_status = "delivered"
        if touch.status == "sent":
            touch.status = "delivered"
        result.actions.append(f"touch {touch.id} delivered")
    else:
        result.unmatched = _why_not_acted_on(reading)
    event = InboundEvent(
        kind=reading.kind, channel="email", received_at=now, lead_id=result.lead_id,
        touch_id=touch.id if touch else None, mailbox_id=mailbox.id if mailbox else None,
        message_id=message_id_of(raw), summary=_summary(reading, result),
        classification={**as_dict(reading), "sentiment": sentiment or reading.sentiment, "actions": result.actions,
                        "cause": _cause(reading), "unmatched": result.unmatched},
        raw=_raw_text(raw),
    )
    session.add(event)
    session.flush()
    plugins.hook.inbound_received(event=event)
    return result


def message_id_of(raw: bytes) -> str | None:
    """Return the message's own <Message-ID>, as handle_email records it (cut to what the column holds)."""
    try:
        value = _HEADERS.parsebytes(raw).get("Message-ID", "")
    except Exception:  # a header too broken to parse has no usable id
        return None
    found = re.search(r"<[^<>\s]+>", str(value))
    return _storable(found.group(0))[:_MESSAGE_ID_CHARS] if found else None


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


def _act_on_failures(session: so.Session, reading: MailReading, touch: Touch | None, mailbox: Mailbox | None,
                     now: datetime, plugins: Plugins, result: InboundResult) -> None:
    """Act on each recipient a bounce or complaint names that we wrote to, each apart from the others.

    An address that is no lead's and that the message ties to none of our messages is left
    alone: it is backscatter (mail forged in our name) or a report about someone else, and
    acting on it would suppress strangers or hold a mailbox for a forger's failures.
    """
    ignored: list[str] = []
    acted = 0
    for address in reading.addresses:
        if not address.address.strip():
            continue
        try:
            email_key(address.address)
        except LeadDataError:
            ignored.append(f"'{address.address}', which is not an email address")
            continue
        lead = _lead_by_email(session, address.address) or (session.get(Lead, touch.lead_id) if touch else None)
        if lead is None:
            ignored.append(f"{address.address}, to whom we never wrote")
            continue
        acted += 1
        result.lead_id = result.lead_id or lead.id
        try:
            with session.begin_nested():
                _act_on_failure(session, reading, address, lead, touch, mailbox, now, plugins, result)
        except Exception as exc:
            if is_temporary(exc):
                raise
            log.exception("inbound %s: acting on %s failed", reading.kind, address.address)
            result.actions.append(f"could not act on {address.address}: {type(exc).__name__}: {exc}")
    if acted:
        result.actions += [f"ignored {why}" for why in ignored]
    elif ignored:
        result.unmatched = f"the {reading.kind} names no recipient we wrote to, only " + "; ".join(ignored)
    else:
        result.unmatched = f"the {reading.kind} names no recipient"


def _act_on_failure(session: so.Session, reading: MailReading, address: AddressReading, lead: Lead,
                    touch: Touch | None, our_mailbox: Mailbox | None, now: datetime, plugins: Plugins,
                    result: InboundResult) -> None:
    """Act on one failed recipient of ours by the cause of its failure."""
    why = f"{address.status} {address.reason}".strip()
    if address.cause == "recipient_invalid":
        suppressions.add(session, "email", address.address, reason=f"invalid address: {why}"[:1000],
                         source="bounce", now=now)
        lead.email_invalid = True
        end_for_lead(session, lead, state="bounced", reason=f"invalid address: {why}"[:200], now=now,
                     plugins=plugins)
        if touch is not None:
            touch.status, touch.provider_status, touch.error = "failed", "bounced", why
        result.actions.append(f"suppressed {address.address} (invalid address)")
    elif address.cause == "complaint" and reading.suppress:
        opt_out(session, lead, now=now, source="complaint", detail=why, plugins=plugins)
        result.actions.append(f"opted out {address.address} (complaint)")
    elif address.cause == "sender_problem":
        if our_mailbox is not None and our_mailbox.state != "held":
            _hold_mailbox(session, our_mailbox, f"a bounce blamed our sending setup: {why}", now)
            result.actions.append(f"held mailbox {our_mailbox.address}")
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
    """Find which of our mailboxes a message came to (its To), when it names none of our messages."""
    try:
        headers = _HEADERS.parsebytes(raw)
        named = {a.strip().lower() for _, a in getaddresses([str(v) for v in headers.get_all("To", [])
                                                             + headers.get_all("Delivered-To", [])]) if a}
    except Exception:  # a header too broken to parse names no mailbox
        return None
    if not named:
        return None
    # Our mailboxes are few while a To header can name thousands: match them in Python.
    mailboxes = session.scalars(sa.select(Mailbox).order_by(Mailbox.id))
    return next((m for m in mailboxes if m.address.lower() in named), None)


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
    touches: dict[str | None, Touch] = {}
    for start in range(0, len(references), _REFERENCES_PER_QUERY):
        chunk = references[start:start + _REFERENCES_PER_QUERY]
        touches.update((t.message_id, t) for t in session.scalars(sa.select(Touch).where(Touch.message_id.in_(chunk))))
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


def _why_not_acted_on(reading: MailReading) -> str:
    """Say why a message that is no bounce or complaint was not acted on."""
    if reading.kind == "notification":
        return "a delivery or system notification that names no failed recipient; a person should read it"
    if reading.kind == "delivery_report":
        return "the report refers to none of our messages"
    if reading.kind in ("reply", "auto_reply"):
        return "it refers to none of our messages and no lead has the sender's address"
    return "it could not be read as a reply, auto-reply, bounce, complaint or report"


def _summary(reading: MailReading, result: InboundResult) -> str:
    if reading.kind == "reply":
        text = reading.reply_text[:500]
    else:
        parts = [f"{a.address}: " + " ".join(filter(None, (a.cause, a.status, a.reason)))
                 for a in reading.addresses if a.address]
        text = "; ".join(parts + result.actions)[:1000] or reading.subject
    if result.unmatched:
        text = f"unmatched: {result.unmatched}" + (f" - {text}" if text else "")
    return text[:1000]


def _raw_text(raw: bytes) -> str:
    """Return the raw message as the text kept for audit."""
    return _storable(raw.decode("utf-8", errors="replace"))


def _storable(text: str) -> str:
    """Return text every database stores: without NUL (PostgreSQL refuses it) and lone surrogates.

    The email package keeps undecodable header bytes as lone surrogates, which no UTF-8
    encoder accepts.
    """
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")


def _storable_reading(reading: MailReading) -> MailReading:
    """Return the reading with every text in it, and in its addresses, storable."""
    return dataclasses.replace(_storable_texts(reading), references=tuple(_storable(r) for r in reading.references),
                               addresses=tuple(_storable_texts(a) for a in reading.addresses))


def _storable_texts(value: _Reading) -> _Reading:
    """Return a copy of a reading dataclass with each of its text fields storable."""
    texts = {f.name: _storable(text) for f in dataclasses.fields(value)
             if isinstance(text := getattr(value, f.name), str)}
    return dataclasses.replace(value, **texts)
