"""The core side of what plugins report after the send (sequencer.channels.Core).

Delivery statuses and call results move a touch forward only; inbound messages are matched to
leads by address or number and read for opt-out, opt-in and help keywords before they count
as replies; opt-outs and address verdicts suppress. Each report is one transaction, safe to
repeat, and answered with a Receipt so the plugin can answer its provider.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer import audit, dialing, senders, suppressions
from sequencer.calendar import LocalCalendar, NoContactHours, Window, next_contact_opening
from sequencer.channels import (AddressVerdict, CallStatus, Core, CoreUnavailable, DeliveryStatus, DialError, Receipt,
                                SenderState, SentTouch)
from sequencer.exits import end_for_lead, end_on_reply
from sequencer.leads import FREE_MAIL_DOMAINS, LeadDataError, email_key, parse_phone
from sequencer.models import LIVE_STATES, Cadence, Enrollment, InboundEvent, Lead, Mailbox, Suppression, Task, Touch
from sequencer.optouts import opt_out
from sequencer.sentiment import asks_to_opt_out
from sequencer.users import find_mailbox, hold_for_sender_problem

# How optouts.opt_out and _opt_out word the reason of the suppressions they add: an opt-in
# narrows only those, never one a person added.
OPT_OUT_REASON = "opt-out via "

if TYPE_CHECKING:
    from sequencer.dialing import CallTask, Drop
    from sequencer.numbers import Slot
    from sequencer.runtime import Runtime

log = logging.getLogger(__name__)

# Forward order of the contract's statuses; the highest rank is final (nothing replaces it).
DELIVERY_RANK: dict[str, int] = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3,
                                 "failed": 3}
CALL_RANK: dict[str, int] = {"queued": 0, "initiated": 1, "ringing": 2, "in_progress": 3, "completed": 4,
                             "busy": 4, "no_answer": 4, "failed": 4, "canceled": 4}
# Touch statuses that are already final whatever the provider's words say (e.g. an email "bounced").
_FINAL_TOUCH = ("delivered", "failed", "completed", "skipped")
# Our touch status for a delivery status, and the touch statuses it may replace.
_DELIVERY_TOUCH = {"queued": "sent", "sending": "sent", "sent": "sent", "delivered": "delivered",
                   "undelivered": "failed", "failed": "failed"}
# A `placed` touch is in none: it waits for its plugin's report that it was done or not
# (Core.voicemail_played / voicemail_missed), which no progress or end of its call says.
_REPLACES = {"sent": ("sending", "unknown"), "delivered": ("sending", "unknown", "sent"),
             "failed": ("sending", "unknown", "sent"), "completed": ("sending", "unknown", "sent")}
# A touch's provider_status may be changed by another report between our read and our write;
# the compare-and-set then fails and we read again, at most this many times.
_ATTEMPTS = 5

# The longest message id the inbound_events column holds; longer ones are cut to it on recording and
# on looking up alike, so a retried delivery still finds the first.
_MESSAGE_ID_CHARS = InboundEvent.message_id.type.length
# How many message ids one query looks up: an email References header of 100 KB names thousands,
# more than SQLite lets one statement bind.
_REFERENCES_PER_QUERY = 500
# SenderState fields and the Mailbox columns that keep them (no table of its own: the email
# plugin's IMAP polling was the core's, and these columns already hold it).
_SENDER_COLUMNS = {"settings": "inbound", "epoch": "imap_uidvalidity", "position": "imap_last_uid",
                   "checked_at": "inbound_checked_at", "error": "inbound_error", "failures": "inbound_failures",
                   "retry_at": "inbound_retry_at"}
# Database failures that a later try can get past: the server down or restarting, a lock or a
# serialization conflict, a pool with no free connection. Anything else fails the same way again.
_TEMPORARY = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, sa.exc.DisconnectionError)
# Around a keyword: spaces (rule 10) and the punctuation people type after a word ("STOP!").
_KEYWORD_TRIM = " \t\r\n.!?,;:'\"«»"

# The statements of every inbound message, built once (building them cost more than running them).
_PRIOR_MESSAGE = (sa.select(InboundEvent.classification, InboundEvent.lead_id, InboundEvent.touch_id)
                  .where(InboundEvent.channel == sa.bindparam("channel"),
                         InboundEvent.message_id == sa.bindparam("message_id")).limit(1))
_LEADS_BY_EMAIL = sa.select(Lead).where(Lead.email_normalized == sa.bindparam("address"))
_LEADS_BY_PHONE = sa.select(Lead).where(Lead.phone == sa.bindparam("address")).order_by(Lead.id)
# The lead's last touch on the channel: what a reply answers when it names no message of ours.
_LAST_TOUCH = (sa.select(Touch)
               .where(Touch.lead_id == sa.bindparam("lead_id"), Touch.channel == sa.bindparam("channel"))
               .options(so.load_only(Touch.enrollment_id, Touch.lead_id, Touch.mailbox_id))
               .order_by(Touch.id.desc()).limit(1))


class PluginCore:
    """One plugin's Core: the runtime's database and clock, that plugin's settings, the report methods."""

    def __init__(self, runtime: Runtime, plugin: str) -> None:
        self._runtime = runtime
        self.plugin = plugin
        # The session a plugin opened on this thread (see session): reports made inside it join it.
        self._open = threading.local()
        # Pools of numbers sender_number has added to the numbers table.
        self._pools: set[tuple[str, ...]] = set()

    @property
    def settings(self) -> Mapping[str, Any]:
        return self._runtime.settings.plugin(self.plugin)

    @contextmanager
    def session(self) -> Iterator[so.Session]:
        current = getattr(self._open, "session", None)
        try:
            if current is not None:
                with current.begin_nested():
                    yield current
                return
            with self._runtime.session() as session:
                self._open.session = session
                try:
                    yield session
                finally:
                    self._open.session = None
        except Exception as exc:
            if isinstance(exc, CoreUnavailable) or not is_temporary(exc):
                raise
            raise CoreUnavailable(f"the database is unavailable, try again later: {getattr(exc, 'orig', exc)}") from exc

    def now(self) -> datetime:
        return self._runtime.now()

    # -- after the send ---------------------------------------------------------------------------

    def delivery_status(self, channel: str, provider_id: str, status: DeliveryStatus, at: datetime,
                        error_code: str | None = None, raw: Any = None, *, references: Sequence[str] = ()) -> Receipt:
        _check_word("delivery status", status, DELIVERY_RANK)
        error = None
        if _DELIVERY_TOUCH[status] == "failed":
            error = status + (f" (provider error {error_code})" if error_code else "")
        with self.session() as session:
            which = sa.and_(Touch.channel == channel, Touch.provider_id == provider_id)
            if not provider_id and references:
                touch = _touch_by_references(session, references)
                which = Touch.id == (touch.id if touch else None)
                provider_id = touch.provider_id or str(touch.id) if touch else "named by references"
            return self._advance(session, which, f"{channel} {provider_id}", status, DELIVERY_RANK, _DELIVERY_TOUCH[status], at,
                                 error=error, event_kind="status", event_channel=channel,
                                 classification={"status": status, "error_code": error_code}, raw=raw,
                                 summary=error or status)

    def call_result(self, provider_id: str, status: CallStatus, duration: int | None = None,
                    answered_by: str | None = None, recording_url: str | None = None,
                    at: datetime | None = None) -> Receipt:
        _check_word("call status", status, CALL_RANK)
        final = CALL_RANK[status] == max(CALL_RANK.values())
        touch_status = ("failed" if status == "failed" else "completed") if final else "sent"
        parts = [f"call {status.replace('_', ' ')}", f"{duration} s" if duration is not None else "",
                 f"answered by {answered_by}" if answered_by else "", f"recording {recording_url}" if recording_url else ""]
        summary = ", ".join(p for p in parts if p)
        with self.session() as session:
            return self._advance(session, Touch.provider_id == provider_id, f"call {provider_id}", status, CALL_RANK,
                                 touch_status, at or self.now(), error=summary if status == "failed" else None,
                                 event_kind="call_result", event_channel=None,
                                 classification={"status": status, "duration": duration, "answered_by": answered_by,
                                                 "recording_url": recording_url},
                                 raw=None, summary=summary)

    def _advance(self, session: so.Session, which: sa.ColumnElement[bool], described: str, word: str,
                 ranks: dict[str, int], touch_status: str, at: datetime, *, error: str | None, event_kind: str,
                 event_channel: str | None, classification: dict[str, Any], raw: Any, summary: str) -> Receipt:
        """Move the touch(es) a provider id names to `word` if that is forward; record final words as events."""
        now = self.now()
        final_rank = max(ranks.values())
        touch = None
        for _ in range(_ATTEMPTS):
            touch = session.scalars(sa.select(Touch).where(which).order_by(Touch.id).limit(1)
                                    .execution_options(populate_existing=True)).first()
            if touch is None:
                log.warning("%s: no touch has this provider id; the report is ignored", described)
                return Receipt("unknown_id", detail=f"no touch has provider id {described}")
            if ranks[word] <= _rank(touch, ranks, final_rank):
                return Receipt("unchanged", lead_id=touch.lead_id, touch_id=touch.id,
                               detail=f"touch {touch.id} is already {touch.provider_status or touch.status}")
            values: dict[str, Any] = {"provider_status": word, "updated_at": now}
            if touch.status in _REPLACES.get(touch_status, ()):
                values["status"] = touch_status
                if touch_status in ("sent", "delivered", "completed") and touch.sent_at is None:
                    values["sent_at"] = at
            if error:
                values["error"] = error
            # Compare-and-set on the words we read: a concurrent report in between makes us read again.
            same = (Touch.provider_status.is_(None) if touch.provider_status is None
                    else Touch.provider_status == touch.provider_status)
            if session.execute(sa.update(Touch).where(Touch.id == touch.id, same).values(**values)
                               .execution_options(synchronize_session=False)).rowcount == 1:
                break
        else:
            raise RuntimeError(f"{described}: the touch kept changing under {_ATTEMPTS} reports in a row")
        if ranks[word] == final_rank:
            # Intermediate words live on the touch; a final one carries the provider's verdict, kept on the timeline.
            self._record(session, InboundEvent(
                kind=event_kind, channel=event_channel or touch.channel, received_at=now, lead_id=touch.lead_id,
                touch_id=touch.id, summary=summary[:1000], classification={**classification, "at": at.isoformat()},
                raw=_raw_text(raw)))
        return Receipt("updated", changed=True, lead_id=touch.lead_id, touch_id=touch.id,
                       detail=f"touch {touch.id} is now {word}")

    # -- from the lead ----------------------------------------------------------------------------

    def inbound_message(self, channel: str, from_address: str, to_address: str, text: str, provider_id: str | None,
                        at: datetime, raw: Any = None, *, references: Sequence[str] = (), subject: str = "",
                        asks_to_stop: bool = False, details: Mapping[str, Any] | None = None) -> Receipt:
        with self.session() as session:
            if provider_id:
                prior = session.execute(_PRIOR_MESSAGE, {"channel": channel,
                                                         "message_id": provider_id[:_MESSAGE_ID_CHARS]}).first()
                if prior is not None:
                    return Receipt(prior.classification.get("action", "reply"), lead_id=prior.lead_id,
                                   touch_id=prior.touch_id, detail=f"message {provider_id} was already received")
            kind, address = self._address(channel, from_address)
            touch, leads = _match(session, kind, address, references)
            word = text.strip(_KEYWORD_TRIM).casefold()
            inbound = self._runtime.settings.inbound
            message = {"channel": channel, "from": address, "to": to_address, "text": text,
                       "provider_id": provider_id, "at": at, "raw": raw, "subject": subject, "touch": touch,
                       "references": tuple(references), "details": dict(details or {})}
            if word in _folded(inbound.opt_out_keywords) or asks_to_stop or asks_to_opt_out(text):
                return self._opt_out(session, channel, kind, address, leads, f"{channel}_message", text, message)
            if word in _folded(inbound.opt_in_keywords) and _opted_out(session, kind, address):
                return self._opt_in(session, channel, kind, address, leads, message)
            if word in _folded(inbound.help_keywords):
                lead = _pick(session, leads, channel)
                self._message_event(session, "help", message, lead, None, "help")
                return Receipt("help", lead_id=lead.id if lead else None, detail="answer with your help text")
            return self._reply(session, leads, message)

    def opt_out(self, channel: str, address: str, source: str, detail: str = "", *,
                references: Sequence[str] | None = None) -> Receipt:
        with self.session() as session:
            kind, value = self._address(channel, address)
            leads = _leads(session, kind, value)
            if references is not None and not leads:
                touch = _touch_by_references(session, references)
                if touch is None:
                    return Receipt("unmatched", detail=f"{address}, to whom we never wrote")
                leads = [session.get(Lead, touch.lead_id)]
            return self._opt_out(session, channel, kind, value, leads, source, detail, None)

    def address_verdict(self, channel: str, address: str, verdict: AddressVerdict, detail: str = "", *,
                        references: Sequence[str] | None = None, source: str | None = None) -> Receipt:
        if verdict not in ("invalid", "unable_sms", "transient", "failed"):
            raise ValueError(f"address verdict {verdict!r} is not one of 'invalid', 'unable_sms', 'transient', 'failed'")
        now = self.now()
        with self.session() as session:
            kind, value = self._address(channel, address)
            if kind is None:
                return Receipt("unchanged", detail=f"{address!r} is neither an email address nor a phone number")
            leads = _leads(session, kind, value)
            touch = _touch_by_references(session, references or ())
            if references is not None and not leads:
                if touch is None:
                    # Backscatter (mail forged in our name) or a report about someone else: not ours to act on.
                    return Receipt("unmatched", detail=f"{address}, to whom we never wrote")
                leads = [session.get(Lead, touch.lead_id)]
            if verdict in ("transient", "failed"):
                return self._touch_failure(session, touch, verdict, detail, leads[0].id if leads else None)
            if touch is not None and verdict == "invalid":
                touch.status, touch.provider_status, touch.error = "failed", "failed", detail[:2000] or "invalid address"
            scope = "sms" if verdict == "unable_sms" else "all"
            why = ("cannot receive SMS" if verdict == "unable_sms" else "invalid address") + (f": {detail}" if detail else "")
            changed = suppressions.find(session, kind, value, scope) is None
            suppressions.add(session, kind, value, reason=why[:1000], source=(source or f"{channel}_verdict")[:50],
                             now=now, channel=scope)
            for lead in leads:
                if verdict == "invalid":
                    # As a hard bounce: the address is wrong, so every cadence that needs it ends.
                    flag = "email_invalid" if kind == "email" else "phone_wrong"
                    changed |= not getattr(lead, flag)
                    setattr(lead, flag, True)
                    end_for_lead(session, lead, state="bounced", reason=why[:200], now=now,
                                 plugins=self._runtime.plugins)
                audit.record(session, actor=f"plugin:{self.plugin}", action=f"lead.address_{verdict}",
                             object_type="lead", object_id=lead.id, at=now, channel=channel, detail=detail)
            return Receipt("flagged", changed=changed, lead_id=leads[0].id if leads else None,
                           detail=f"{kind} {value} suppressed on {'all channels' if scope == 'all' else scope}")

    def auto_reply(self, channel: str, from_address: str, *, references: Sequence[str] = (),
                   return_date: date | None = None) -> Receipt:
        now = self.now()
        with self.session() as session:
            kind, address = self._address(channel, from_address)
            touch, leads = _match(session, kind, address, references)
            lead = _pick(session, leads, channel)
            if lead is None:
                return Receipt("unmatched", detail=f"no lead has the address {address}")
            back = return_date
            if back is None:
                days = self._runtime.settings.inbound.out_of_office_default_days
                if days <= 0:
                    return Receipt("unchanged", lead_id=lead.id,
                                   detail="auto-reply without a return date: the cadence goes on")
                back = (now + timedelta(days=days - 1)).date()
            resume_at = _next_working_morning(back, lead)
            if resume_at <= now:
                return Receipt("unchanged", lead_id=lead.id)
            paused = session.execute(
                sa.update(Enrollment)
                .where(Enrollment.lead_id == lead.id, Enrollment.state.in_(("active", "waiting_task")))
                .values(state="paused", paused_reason="out_of_office", resume_at=resume_at)
            ).rowcount
            return Receipt("paused", changed=paused > 0, lead_id=lead.id, touch_id=touch.id if touch else None,
                           detail=f"paused {paused} enrollment(s) until {resume_at.isoformat()}")

    def sender_problem(self, channel: str, sender_address: str, detail: str, *,
                       references: Sequence[str] | None = None, recipient: str | None = None) -> Receipt:
        with self.session() as session:
            touch = _touch_by_references(session, references or ())
            if recipient is not None and touch is None:
                kind, value = self._address(channel, recipient)
                if not _leads(session, kind, value):
                    # Mail forged in our name failed: holding our sender would punish us for the forger.
                    return Receipt("unmatched", detail=f"{recipient}, to whom we never wrote")
            mailbox_id = _mailbox_id(session, touch, sender_address)
            if mailbox_id is None:
                return Receipt("unmatched", detail=f"{sender_address or 'the message'} names none of our senders")
            mailbox = session.get(Mailbox, mailbox_id)
            held = hold_for_sender_problem(session, mailbox, detail, self.now())
            return Receipt("held", changed=held, lead_id=touch.lead_id if touch else None,
                           touch_id=touch.id if touch else None,
                           detail=f"held mailbox {mailbox.address}" if held else f"{mailbox.address} is already held")

    def record(self, channel: str, kind: str, *, provider_id: str | None = None, from_address: str = "",
               to_address: str = "", references: Sequence[str] = (), text: str = "", reason: str | None = None,
               lead_id: int | None = None, touch_id: int | None = None, details: Mapping[str, Any] | None = None,
               raw: Any = None) -> Receipt:
        with self.session() as session:
            touch = session.get(Touch, touch_id) if touch_id else _touch_by_references(session, references)
            lead_id = lead_id or (touch.lead_id if touch else None)
            summary = f"unmatched: {reason}" + (f" - {text}" if text else "") if reason else text
            action = "unmatched" if reason else "recorded"
            event = InboundEvent(
                kind=kind, channel=channel, received_at=self.now(), lead_id=lead_id, touch_id=touch.id if touch else None,
                mailbox_id=_mailbox_id(session, touch, to_address), message_id=(provider_id or "")[:_MESSAGE_ID_CHARS] or None,
                summary=_storable(summary)[:1000],
                classification={"action": action, "from": from_address, **(details or {}), "unmatched": reason},
                raw=_raw_text(raw))
            if reason:
                # inbound_received is for events acted on; this one waits for a person (and may record
                # that acting failed, perhaps in that very hook).
                session.add(event)
                session.flush()
            else:
                self._record(session, event)
            return Receipt(action, changed=True, lead_id=lead_id, touch_id=event.touch_id, kind=kind,
                           detail=reason or "")

    def received(self, channel: str, provider_id: str | None) -> Receipt | None:
        if not provider_id:
            return None
        with self.session() as session:
            prior = session.scalars(sa.select(InboundEvent).where(
                InboundEvent.channel == channel, InboundEvent.message_id == provider_id[:_MESSAGE_ID_CHARS])
                .order_by(InboundEvent.id).limit(1)).first()
            if prior is None:
                return None
            return Receipt("unchanged", lead_id=prior.lead_id, touch_id=prior.touch_id, kind=prior.kind,
                           detail=f"message {provider_id} was already received")

    def messages(self, channel: str, *, unmatched: bool = False, kind: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        query = (sa.select(InboundEvent, Lead.email, Mailbox.address)
                 .outerjoin(Lead, Lead.id == InboundEvent.lead_id).outerjoin(Mailbox, Mailbox.id == InboundEvent.mailbox_id)
                 .where(InboundEvent.channel == channel).order_by(InboundEvent.id.desc()).limit(limit))
        if unmatched:
            query = query.where(sa.or_(InboundEvent.summary.startswith("unmatched: "),
                                       InboundEvent.classification["action"].as_string() == "unmatched"))
        if kind:
            query = query.where(InboundEvent.kind == kind)
        with self.session() as session:
            return [{"id": event.id, "received_at": event.received_at, "kind": event.kind, "lead": lead,
                     "mailbox": mailbox, "message_id": event.message_id, "summary": event.summary}
                    for event, lead, mailbox in session.execute(query)]

    # -- senders --------------------------------------------------------------------------------------

    def senders(self, channel: str) -> list[SenderState]:
        declared = self._runtime.plugins.channel(channel)
        # An automatic channel that declares no sender kind sends from the enrollment's mailbox, as
        # every channel did before channels declared it.
        if declared is None or declared.sender_kind != "mailbox" and not (
                declared.sender_kind is None and declared.automatic):
            return []
        with self.session() as session:
            return [_sender_state(m) for m in session.scalars(sa.select(Mailbox).order_by(Mailbox.id))]

    def find_sender(self, channel: str, address: str) -> SenderState:
        with self.session() as session:
            return _sender_state(find_mailbox(session, address))

    def sender_state(self, sender_id: int, *, lock: bool = False) -> SenderState:
        with self.session() as session:
            mailbox = session.get(Mailbox, sender_id, with_for_update=lock, populate_existing=True)
            if mailbox is None:
                raise LookupError(f"no sender with id {sender_id}")
            return _sender_state(mailbox)

    def save_sender_state(self, sender_id: int, *, audit_detail: Mapping[str, Any] | None = None,
                          **state: Any) -> None:
        unknown = set(state) - set(_SENDER_COLUMNS)
        if unknown:
            raise ValueError(f"sender state has no field {', '.join(sorted(unknown))}; "
                             f"the fields are {', '.join(_SENDER_COLUMNS)}")
        with self.session() as session:
            mailbox = session.get(Mailbox, sender_id)
            if mailbox is None:
                raise LookupError(f"no sender with id {sender_id}")
            for name, value in state.items():
                setattr(mailbox, _SENDER_COLUMNS[name], value)
            if audit_detail is not None:
                audit.record(session, actor=_actor(self.plugin), action="mailbox.inbound", object_type="mailbox",
                             object_id=mailbox.id, at=self.now(), **audit_detail)

    # -- phone numbers as senders (sequencer.senders) -------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._runtime.settings.web.base_url

    def sender_number(self, touch_id: int, pool: Sequence[str]) -> str | None:
        # The pool's numbers get their table rows once per process and pool, not once per text.
        key = tuple(pool)
        number = senders.sender_number(self, touch_id, pool, pool_known=key in self._pools)
        self._pools.add(key)
        return number

    def sender_numbers(self, touch_ids: Sequence[int], pool: Sequence[str]) -> dict[int, str | None]:
        key = tuple(pool)
        chosen = senders.sender_numbers(self, touch_ids, pool, pool_known=key in self._pools)
        self._pools.add(key)
        return chosen

    def number_slot(self, number: str, per_second: float, daily_cap: int | None,
                    latest: datetime | None = None) -> Slot:
        return senders.number_slot(self, number, per_second, daily_cap, latest)

    def number_slots(self, numbers: Sequence[str], per_second: float, daily_cap: int | None,
                     latest: datetime | None = None) -> list[Slot]:
        return senders.number_slots(self, numbers, per_second, daily_cap, latest)

    def is_our_number(self, number: str, pool: Sequence[str]) -> bool:
        return senders.is_our_number(self, number, pool)

    # -- dialing (sequencer.dialing) ------------------------------------------------------------------

    def call_task(self, task_id: int) -> CallTask:
        return dialing.call_task(self, task_id)

    def contact_opening(self, zones: Sequence[str]) -> datetime:
        # [contact_hours] are the core's, not the plugin's: every channel keeps the same ones.
        try:
            return next_contact_opening(zones, self._runtime.settings.contact_hours.hours(), self.now())
        except NoContactHours as exc:
            raise DialError(str(exc)) from exc

    def call_placed(self, touch_id: int, provider_id: str) -> None:
        dialing.call_placed(self, touch_id, provider_id)

    def drop(self, touch_id: int) -> Drop | None:
        return dialing.drop(self, touch_id)

    def voicemail_played(self, touch_id: int) -> Receipt:
        return dialing.voicemail_played(self, touch_id, self._touch_sent)

    def voicemail_missed(self, provider_id: str, why: str, touch_id: int | None = None) -> Receipt:
        return dialing.voicemail_missed(self, provider_id, why, touch_id)

    def call_back_task(self, touch_id: int, instructions: str) -> int | None:
        return dialing.call_back_task(self, touch_id, instructions)

    def call_recording(self, provider_id: str, recording_id: str, url: str, duration: int | None) -> Receipt:
        return dialing.call_recording(self, provider_id, recording_id, url, duration)

    def account_slot(self, key: str, per_second: float, latest: datetime) -> Slot:
        return dialing.account_slot(self, key, per_second, latest)

    def _touch_failure(self, session: so.Session, touch: Touch | None, verdict: str, detail: str,
                       lead_id: int | None) -> Receipt:
        """Act on a failure of one touch: send it again (transient) or fail it (the cadence goes on)."""
        if touch is None:
            return Receipt("unchanged", lead_id=lead_id, detail="")
        if verdict == "transient":
            retried = _retry_touch(session, touch, self.now(), detail)
            return Receipt("retrying" if retried else "unchanged", changed=retried, lead_id=touch.lead_id,
                           touch_id=touch.id, detail=f"touch {touch.id} will be retried" if retried else "")
        touch.status, touch.provider_status, touch.error = "failed", "failed", detail[:2000]
        return Receipt("failed", changed=True, lead_id=touch.lead_id, touch_id=touch.id,
                       detail=f"touch {touch.id} failed: {detail}")

    # -- the acts -----------------------------------------------------------------------------------

    def _opt_out(self, session: so.Session, channel: str, kind: str | None, address: str, leads: list[Lead],
                 source: str, detail: str, message: dict[str, Any] | None) -> Receipt:
        """Suppress the address on every channel and opt out every lead that has it."""
        now = self.now()
        changed = False
        if kind is not None:
            changed = suppressions.find(session, kind, address) is None
            suppressions.add(session, kind, address, reason=f"{OPT_OUT_REASON}{source}: {detail}"[:1000],
                             source=source[:50], now=now)
        for lead in leads:
            if opt_out(session, lead, now=now, source=source, detail=detail[:500], plugins=self._runtime.plugins,
                       channel=channel):
                changed = True
                if message is not None:
                    # The opt-out's own event is the message's record: keep its id (replays) and raw payload.
                    event = session.scalars(sa.select(InboundEvent).where(
                        InboundEvent.lead_id == lead.id, InboundEvent.kind == "opt_out")
                        .order_by(InboundEvent.id.desc()).limit(1)).one()
                    event.message_id = (message["provider_id"] or "")[:_MESSAGE_ID_CHARS] or None
                    event.raw = _raw_text(message["raw"])
                    event.classification = {**event.classification, "action": "opted_out", "text": message["text"],
                                            **message.get("details", {})}
                    message = None
        if message is not None and (changed or not leads):
            self._message_event(session, "opt_out", message, leads[0] if leads else None, None, "opted_out")
        return Receipt("opted_out", changed=changed, lead_id=leads[0].id if leads else None,
                       detail=f"{address} is opted out of every channel")

    def _opt_in(self, session: so.Session, channel: str, kind: str | None, address: str, leads: list[Lead],
                message: dict[str, Any]) -> Receipt:
        """Let texts reach an opted-out number again, and nothing else: calls and email stay suppressed.

        The opt-out's suppressions on every channel are narrowed: the number's to calls, its
        leads' email addresses to email. Suppressions a person added for other reasons stay.
        """
        now = self.now()
        note = f"; texted {message['text'].strip()[:50]!r} at {now.isoformat()}: texts allowed again"
        _narrow(session, "phone", address, "voice", note)
        for lead in leads:
            if lead.email_normalized:
                _narrow(session, "email", lead.email_normalized, "email", note)
            # Ended enrollments stay ended: a person decides whether to enroll the lead again.
            lead.opted_out_at, lead.updated_at = None, now
            audit.record(session, actor=f"lead:{lead.id}", action="lead.opt_in", object_type="lead",
                         object_id=lead.id, at=now, channel=channel, address=address)
        lead = leads[0] if leads else None
        self._message_event(session, "opt_in", message, lead, None, "opted_in")
        return Receipt("opted_in", changed=True, lead_id=lead.id if lead else None,
                       detail=f"{address} may receive texts again; calls and email stay suppressed")

    def _reply(self, session: so.Session, leads: list[Lead], message: dict[str, Any]) -> Receipt:
        """Record a reply, end the cadences whose exit rules say so, and open a task for the owner."""
        now = self.now()
        channel, text = message["channel"], message["text"]
        lead = _pick(session, leads, channel)
        if lead is None:
            why = f"no lead has the address {message['from']}" + (
                " and the message refers to none of ours" if message["references"] else "")
            self._message_event(session, "reply", message, None, None, "unmatched", unmatched=why)
            return Receipt("unmatched", kind="reply", detail=f"no lead has the address {message['from']}")
        touch = message["touch"] if message["touch"] is not None and message["touch"].lead_id == lead.id else (
            session.scalars(_LAST_TOUCH, {"lead_id": lead.id, "channel": channel}).first())
        plugins = self._runtime.plugins
        ended = end_on_reply(session, lead.id, replied_to=touch.enrollment_id if touch else None, now=now,
                             plugins=plugins)
        who = lead.full_name or lead.phone or lead.email
        session.add(Task(owner_id=lead.owner_id, lead_id=lead.id, touch_id=touch.id if touch else None, kind="reply",
                         title=(f"Reply received from {who}: {message['subject']}" if message["subject"] else
                                f"Reply received from {who} ({channel}): {text.strip()[:120]}")[:500],
                         instructions=text, due_at=now, priority=40, created_at=now))
        sentiment = plugins.hook.classify_reply(text=text)
        self._message_event(session, "reply", message, lead, touch, "reply", sentiment=sentiment, ended=ended)
        return Receipt("reply", changed=True, lead_id=lead.id, touch_id=touch.id if touch else None, kind="reply",
                       detail=f"ended {len(ended)} enrollment(s) as replied; opened a reply task for the owner")

    def _message_event(self, session: so.Session, kind: str, message: dict[str, Any], lead: Lead | None,
                       touch: Touch | None, action: str, **classification: Any) -> None:
        self._record(session, InboundEvent(
            kind=kind, channel=message["channel"], received_at=self.now(), lead_id=lead.id if lead else None,
            touch_id=touch.id if touch else None, mailbox_id=_mailbox_id(session, touch, message["to"]),
            message_id=(message["provider_id"] or "")[:_MESSAGE_ID_CHARS] or None,
            summary=_storable(message["text"])[:500],
            classification={"action": action, "from": message["from"], "to": message["to"],
                            "at": message["at"].isoformat(), **classification, **message.get("details", {})},
            raw=_raw_text(message["raw"])))

    def _record(self, session: so.Session, event: InboundEvent) -> None:
        session.add(event)
        session.flush()
        self._runtime.plugins.hook.inbound_received(event=event)

    def _touch_sent(self, touch: SentTouch) -> None:
        self._runtime.plugins.hook.touch_sent(touch=touch)

    def _address(self, channel: str, address: str) -> tuple[str | None, str]:
        """Return the address's kind and normalized form; kind None when it is neither (a short code...)."""
        declared = self._runtime.plugins.channel(channel)
        kind = declared.address_kind if declared is not None and declared.address_kind else None
        if kind is None:
            kind = "email" if "@" in address else "phone"
        try:
            if kind == "email":
                return kind, email_key(address)
            return kind, parse_phone(address, self._runtime.settings.leads.default_region)
        except LeadDataError:
            log.warning("%s: %r is not a valid %s; it matches no lead and cannot be suppressed", channel, address,
                        kind)
            return None, address.strip()


def is_temporary(exc: BaseException) -> bool:
    """Tell a failure worth trying again later (the database unreachable or busy) from one that would recur."""
    return isinstance(exc, _TEMPORARY) or (isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)


def current_core(plugin: str) -> Core:
    """Return `plugin`'s Core in the web request or CLI command being run (see channels.core_for)."""
    runtime = None
    # Only a process that serves the web app has sequencer.web loaded; importing it here would pull in Flask.
    if "sequencer.web" in sys.modules:
        from sequencer.web import get_runtime

        try:
            runtime = get_runtime()
        except RuntimeError:  # no application context: not inside a request
            runtime = None
    if runtime is None:
        import click

        from sequencer.cli.base import CliState

        context = click.get_current_context(silent=True)
        state = context.find_object(CliState) if context is not None else None
        runtime = state.runtime() if state is not None else None
    if runtime is None:
        raise RuntimeError(f"plugin {plugin} asked for its core outside a command or web request; channels use "
                           "self.context.core and jobs are handed theirs")
    return runtime.plugins.core(plugin)


def _check_word(what: str, word: str, ranks: dict[str, int]) -> None:
    if word not in ranks:
        raise ValueError(f"{what} {word!r} is not one of {', '.join(ranks)}; map the provider's word onto them")


def _rank(touch: Touch, ranks: dict[str, int], final_rank: int) -> int:
    """Return how far a touch has got in `ranks`' order (-1: nowhere yet)."""
    if touch.status in _FINAL_TOUCH:
        return final_rank
    return ranks.get(touch.provider_status or "", -1)


def _folded(words: list[str]) -> set[str]:
    return {w.strip().casefold() for w in words}


def _leads(session: so.Session, kind: str | None, address: str) -> list[Lead]:
    if kind == "email":
        return list(session.scalars(_LEADS_BY_EMAIL, {"address": address}))
    if kind == "phone":
        return list(session.scalars(_LEADS_BY_PHONE, {"address": address}))
    return []


def _pick(session: so.Session, leads: list[Lead], channel: str) -> Lead | None:
    """Choose which of the leads sharing an address a message is from: the one we last touched on the channel."""
    if len(leads) <= 1:
        return leads[0] if leads else None
    by_id = {lead.id: lead for lead in leads}
    last = session.scalar(sa.select(Touch.lead_id).where(Touch.lead_id.in_(list(by_id)), Touch.channel == channel)
                          .order_by(Touch.id.desc()).limit(1))
    if last is None:
        last = session.scalar(sa.select(Enrollment.lead_id).where(Enrollment.lead_id.in_(list(by_id)),
                                                                  Enrollment.state.in_(LIVE_STATES))
                              .order_by(Enrollment.enrolled_at.desc()).limit(1))
    return by_id.get(last, leads[0])


def _opt_out_entry(session: so.Session, kind: str | None, address: str) -> Suppression | None:
    """Return the suppression on every channel that an opt-out left on this address, if any."""
    if kind is None:
        return None
    entry = session.scalar(sa.select(Suppression).where(
        Suppression.kind == kind, Suppression.value_hash == suppressions.value_hash(address),
        Suppression.channel == "all"))
    return entry if entry is not None and entry.reason.startswith(OPT_OUT_REASON) else None


def _opted_out(session: so.Session, kind: str | None, address: str) -> bool:
    """Tell whether an address is opted out: an opt-out suppressed it on every channel."""
    return _opt_out_entry(session, kind, address) is not None


def _narrow(session: so.Session, kind: str, address: str, channel: str, note: str) -> None:
    """Narrow an opt-out's suppression of an address from every channel to `channel`."""
    entry = _opt_out_entry(session, kind, address)
    if entry is None:
        return
    if suppressions.find(session, kind, address, channel) is not None:
        session.delete(entry)
    else:
        entry.channel, entry.reason = channel, (entry.reason + note)[:1000]


def _raw_text(raw: Any) -> str | None:
    """Keep a provider's payload as text (JSON for a mapping) for audit; erased with the lead."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raw = json.dumps(raw, ensure_ascii=False, sort_keys=True, default=str)
    return _storable(raw)


def _storable(text: str) -> str:
    """Return text every database stores: without NUL (PostgreSQL refuses it) and lone surrogates.

    Python's email package keeps undecodable header bytes as lone surrogates, which no UTF-8
    encoder accepts.
    """
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")


def _actor(plugin: str) -> str:
    """Name who changed something through a plugin: the operator of a CLI command, else the plugin."""
    import click

    return audit.cli_actor() if click.get_current_context(silent=True) is not None else f"plugin:{plugin}"


def _sender_state(mailbox: Mailbox) -> SenderState:
    values = {name: getattr(mailbox, column) for name, column in _SENDER_COLUMNS.items()}
    return SenderState(sender_id=mailbox.id, address=mailbox.address, **{
        **values, "settings": dict(values["settings"] or {}), "failures": values["failures"] or 0})


def _mailbox_id(session: so.Session, touch: Touch | None, to_address: str) -> int | None:
    """Return which of our mailboxes a message is about: the touch's, else the one it was sent to."""
    if touch is not None and touch.mailbox_id:
        return touch.mailbox_id
    address = (to_address or "").strip().lower()
    if "@" not in address:
        return None
    return session.scalar(sa.select(Mailbox.id).where(sa.func.lower(Mailbox.address) == address))


def _touch_by_references(session: so.Session, references: Sequence[str]) -> Touch | None:
    """Find our touch by the message ids a message refers to, the first named first."""
    references = [r for r in references if r]
    touches: dict[str | None, Touch] = {}
    for start in range(0, len(references), _REFERENCES_PER_QUERY):
        chunk = references[start:start + _REFERENCES_PER_QUERY]
        touches.update((t.message_id, t) for t in session.scalars(sa.select(Touch).where(Touch.message_id.in_(chunk))))
    return next((touches[ref] for ref in references if ref in touches), None)


def _match(session: so.Session, kind: str | None, address: str,
           references: Sequence[str]) -> tuple[Touch | None, list[Lead]]:
    """Find who a message is from: the lead of the touch it answers, else by address, else a colleague's lead."""
    touch = _touch_by_references(session, references)
    if touch is not None:
        return touch, [session.get(Lead, touch.lead_id)]
    leads = _leads(session, kind, address)
    if not leads and kind == "email":
        colleague = _lead_by_account(session, address)
        leads = [colleague] if colleague is not None else []
    return None, leads


def _lead_by_account(session: so.Session, address: str) -> Lead | None:
    """Match a reply from a colleague: the lead at the sender's company who is in a cadence, latest enrolled."""
    domain = address.rpartition("@")[2].lower()
    if not domain or domain in FREE_MAIL_DOMAINS:
        return None
    return session.scalar(
        sa.select(Lead).join(Enrollment, Enrollment.lead_id == Lead.id)
        .where(Lead.domain == domain, Enrollment.state.in_(LIVE_STATES))
        .order_by(Enrollment.enrolled_at.desc()).limit(1))


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
    touch.status, touch.error, touch.retry_at = "pending", f"temporary failure: {why}"[:2000], now + timedelta(hours=1)
    enrollment.step_position, enrollment.next_due_at = position, touch.retry_at
    return True
