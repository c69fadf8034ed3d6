"""Acting on inbound mail through the core: replies end cadences, auto-replies pause them, bounces and complaints by cause.

Everything here goes through the plugin's Core (sequencer.channels): the reading says what a
message is, and each verdict in it becomes one report. A message is acted on in one
transaction (`with core.session()`), once per Message-ID, and each recipient of a bounce in a
savepoint of its own, so one bad address stops no other.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import TypeVar

from sequencer.channels import Core, CoreUnavailable, Receipt
from sequencer_email.reading import AddressReading, MailReading, as_dict, read_message

log = logging.getLogger(__name__)
_Reading = TypeVar("_Reading", MailReading, AddressReading)

CHANNEL = "email"
# Reads a message's own header block; compat32 never raises on a malformed address.
_HEADERS = BytesHeaderParser(policy=compat32)
# What a bounce recipient's cause asks of the core.
_VERDICTS = {"recipient_invalid": "invalid", "transient": "transient", "other": "failed"}


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


def receive_email(core: Core, raw: bytes) -> InboundResult:
    """Act once on one message that arrived (MTA pipe, HTTP hook) in a transaction of its own.

    Raises CoreUnavailable only when the database is unavailable, so the sender keeps the
    message and delivers it again; see act_once.
    """
    with core.session():
        return act_once(core, raw)


def act_once(core: Core, raw: bytes) -> InboundResult:
    """Act on one arriving message once per Message-ID; raise only CoreUnavailable.

    Acting that fails for a reason a retry would not cure (a value the database refuses, a
    plugin's error) is undone and the message recorded as unmatched with the error, so the
    mail behind it still gets read.
    """
    message_id = message_id_of(raw)
    prior = core.received(CHANNEL, message_id)
    if prior is not None:
        # MTAs, providers and pollers deliver again after a timeout: act once per Message-ID.
        return InboundResult(kind=prior.kind or "unknown", lead_id=prior.lead_id, duplicate=True)
    try:
        with core.session():
            return handle_email(core, raw)
    except CoreUnavailable:
        raise
    except Exception as exc:
        log.exception("inbound message %s could not be acted on", message_id or "without a Message-ID")
        why = _storable(f"acting on it failed ({type(exc).__name__}: {exc}); a person must read it and act")
        core.record(CHANNEL, "unknown", provider_id=message_id, reason=why, raw=raw)
        return InboundResult(kind="unknown", unmatched=why)


def handle_email(core: Core, raw: bytes) -> InboundResult:
    """Read one RFC 5322 message, act on that reading through the core, and record it.

    What the message says never makes this raise: a message that cannot be acted on (a
    complaint naming no recipient, an address we never wrote to, a notification, an
    unreadable message) is recorded with the reason in `InboundResult.unmatched`.
    """
    reading = _storable_reading(read_message(raw, today=core.now().date()))
    message_id = message_id_of(raw)
    ours = our_address(core, raw)
    result = InboundResult(kind=reading.kind)
    details = {**as_dict(reading), "cause": _cause(reading)}
    if reading.kind == "reply":
        # The core records a reply itself (it is the same for every channel); the reading goes with it.
        details.pop("sentiment")
        receipt = core.inbound_message(CHANNEL, reading.sender, ours, reading.reply_text, message_id, core.now(), raw,
                                       references=reading.references, subject=reading.subject,
                                       asks_to_stop=reading.opt_out, details=details)
        result.lead_id = receipt.lead_id
        if receipt.action == "unmatched":
            result.unmatched = _why_not_acted_on(reading)
        elif receipt.action == "opted_out":
            result.actions.append("opted out (asked to be removed)")
        else:
            result.actions += receipt.detail.split("; ")
        return result
    touch_id = None
    if reading.kind in ("bounce", "complaint"):
        touch_id = _act_on_failures(core, reading, ours, result)
    elif reading.kind == "auto_reply":
        receipt = core.auto_reply(CHANNEL, reading.sender, references=reading.references,
                                  return_date=reading.return_date)
        _take(result, receipt)
        if receipt.action == "unmatched":
            result.unmatched = _why_not_acted_on(reading)
    elif reading.kind == "delivery_report":
        receipt = core.delivery_status(CHANNEL, "", "delivered", core.now(), references=reading.references)
        if receipt.action == "unknown_id":
            result.unmatched = _why_not_acted_on(reading)
        else:
            result.lead_id, touch_id = receipt.lead_id, receipt.touch_id
            result.actions.append(f"touch {receipt.touch_id} delivered")
    else:
        result.unmatched = _why_not_acted_on(reading)
    recorded = core.record(CHANNEL, reading.kind, provider_id=message_id, from_address=reading.sender,
                           to_address=ours, references=reading.references, text=_summary(reading, result),
                           reason=result.unmatched, lead_id=result.lead_id, touch_id=touch_id, raw=raw,
                           details={**details, "actions": result.actions})
    # A notification or report about one of our messages belongs on that lead's timeline.
    result.lead_id = recorded.lead_id
    return result


def message_id_of(raw: bytes) -> str | None:
    """Return the message's own <Message-ID>, as handle_email records it."""
    try:
        value = _HEADERS.parsebytes(raw).get("Message-ID", "")
    except Exception:  # a header too broken to parse has no usable id
        return None
    found = re.search(r"<[^<>\s]+>", str(value))
    return _storable(found.group(0)) if found else None


def our_address(core: Core, raw: bytes) -> str:
    """Return which of our mailboxes a message came to (its To or Delivered-To), or ""."""
    try:
        headers = _HEADERS.parsebytes(raw)
        named = [a.strip().lower() for _, a in getaddresses([str(v) for v in headers.get_all("To", [])
                                                             + headers.get_all("Delivered-To", [])]) if a]
    except Exception:  # a header too broken to parse names no mailbox
        return ""
    # Our mailboxes are few while a To header can name thousands: match them in Python.
    ours = {sender.address.lower() for sender in core.senders(CHANNEL)} if named else set()
    return next((address for address in named if address in ours), "")


def _act_on_failures(core: Core, reading: MailReading, ours: str, result: InboundResult) -> int | None:
    """Act on each recipient a bounce or complaint names that we wrote to, each apart from the others.

    An address that is no lead's and that the message ties to none of our messages is left
    alone (the core answers "unmatched"): it is backscatter (mail forged in our name) or a
    report about someone else, and acting on it would suppress strangers or hold a mailbox for
    a forger's failures. Returns the touch the report is about, if the core found one.
    """
    ignored: list[str] = []
    acted = 0
    touch_id = None
    for address in reading.addresses:
        if not address.address.strip():
            continue
        if "@" not in address.address:
            ignored.append(f"'{address.address}', which is not an email address")
            continue
        try:
            receipt = _act_on_failure(core, reading, address, ours)
        except CoreUnavailable:
            raise
        except Exception as exc:
            log.exception("inbound %s: acting on %s failed", reading.kind, address.address)
            result.actions.append(f"could not act on {address.address}: {type(exc).__name__}: {exc}")
            acted += 1
            continue
        if receipt.action == "unmatched":
            ignored.append(receipt.detail)
            continue
        acted += 1
        result.lead_id = result.lead_id or receipt.lead_id
        touch_id = touch_id or receipt.touch_id
        _take(result, receipt)
    if acted:
        result.actions += [f"ignored {why}" for why in ignored]
    elif ignored:
        result.unmatched = f"the {reading.kind} names no recipient we wrote to, only " + "; ".join(ignored)
    else:
        result.unmatched = f"the {reading.kind} names no recipient"
    return touch_id


def _act_on_failure(core: Core, reading: MailReading, address: AddressReading, ours: str) -> Receipt:
    """Report one failed recipient by the cause of its failure; each report is its own savepoint."""
    why = f"{address.status} {address.reason}".strip()
    refs = reading.references
    if address.cause == "complaint":
        if not reading.suppress:
            # A report about our setup (auth-failure, not-spam...), not about the person.
            return Receipt("unchanged")
        receipt = core.opt_out(CHANNEL, address.address, "complaint", why, references=refs)
        return dataclasses.replace(receipt, detail=f"opted out {address.address} (complaint)") \
            if receipt.action == "opted_out" else receipt
    if address.cause == "sender_problem":
        return core.sender_problem(CHANNEL, ours, f"a bounce blamed our sending setup: {why}", references=refs,
                                   recipient=address.address)
    verdict = _VERDICTS.get(address.cause)
    if verdict is None:
        return Receipt("unchanged")
    receipt = core.address_verdict(CHANNEL, address.address, verdict, why, references=refs, source="bounce")
    if receipt.action == "flagged":
        return dataclasses.replace(receipt, detail=f"suppressed {address.address} (invalid address)")
    return receipt


def _take(result: InboundResult, receipt: Receipt) -> None:
    """Add what the core did to the result's actions (a receipt that changed nothing may still say why)."""
    if receipt.action == "unmatched":
        return
    result.lead_id = result.lead_id or receipt.lead_id
    if receipt.detail and (receipt.changed or receipt.action in ("unchanged", "paused")):
        result.actions.append(receipt.detail)


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
    """Return the event's text (the core puts the unmatched reason in front of it)."""
    parts = [f"{a.address}: " + " ".join(filter(None, (a.cause, a.status, a.reason)))
             for a in reading.addresses if a.address]
    return "; ".join(parts + result.actions)[:1000] or reading.subject


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
