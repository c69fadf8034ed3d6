"""Read one inbound email the way a deliverability expert would.

Pure: it parses the bytes of one RFC 5322 message and says what it is
(a human reply, an auto-reply, a bounce, a complaint, a delivery report, or a mail
system's notification that names no failed recipient), which recipients it is about and
why, and whether those recipients must be suppressed.  Nothing here touches a database or
the network.  The rules, in order and with where each comes from, are in docs/inbound.md.
One module per part of the reading: decoding, notices, reports (RFC 3464), bounces,
complaints (ARF), autoreplies, replies.

A mail system's notice (null reverse path, MAILER-DAEMON / postmaster sender, a report,
a delivery-failure subject) is never read as a person's reply, and a subject that starts
with "Re:" is our own words coming back, so it never decides an auto-reply or a bounce.

Bounce causes are decided from the diagnostic text first and the DSN status code
second, because the same code (5.7.1, 5.0.0, even 5.1.1) is used by real servers
for user-unknown, blocklist, spam verdicts and policy rejections alike.  The reason
names follow sisimai's vocabulary so the corpus in shared/data/bounces can check us.
"""
from __future__ import annotations

import datetime
from dataclasses import asdict

from sequencer.channels import reply_sentiment
from sequencer_email.reading.autoreplies import _auto_reply, _auto_reply_headers, _auto_reply_wording
from sequencer_email.reading.bounces import _bounce_readings, _dsn_failures, _ses_notification, _ses_reading
from sequencer_email.reading.complaints import _complaint_readings, _is_complaint, SUPPRESSING_FEEDBACK
from sequencer_email.reading.decoding import _address, _header, _html_to_text, _message_ids, _parse
from sequencer_email.reading.notices import _BOUNCE_BODY_RE, _BOUNCE_SUBJECT_RE, _notice_signal, _null_reverse_path, _REPLY_PREFIX_RE
from sequencer_email.reading.readings import AddressReading, _empty, _first, MailReading, _unique
from sequencer_email.reading.replies import _asks_opt_out, _reply_text
from sequencer_email.reading.reports import _collect, _Parts, _returned_refs, _split_returned, _unquote_forward


__all__ = ["AddressReading", "MailReading", "as_dict", "read_message"]

def read_message(raw: bytes, *, today: datetime.date | None = None) -> MailReading:
    """Read one inbound message; never raise, an unreadable one is kind "unknown"."""
    try:
        return _read(raw, today or datetime.date.today())
    except Exception:
        return _empty("unknown")


def as_dict(reading: MailReading) -> dict:
    """Return the reading as JSON-ready data (dates as ISO strings)."""
    data = asdict(reading)
    data["addresses"] = [dict(a) for a in data["addresses"]]
    data["references"] = list(reading.references)
    data["return_date"] = reading.return_date.isoformat() if reading.return_date else None
    return data


def _read(raw: bytes, today: datetime.date) -> MailReading:
    """Read a message; may raise on input too broken to parse."""
    msg = _parse(raw)
    if not msg.keys():
        return _empty("unknown")
    parts = _Parts([], [], [], [], [], [])
    _collect(msg, parts)
    subject = _header(msg, "Subject")
    sender = _address(_header(msg, "From"))
    base = {"sender": sender, "subject": subject, "message_id": _first(_message_ids(_header(msg, "Message-ID")))}
    own_refs = _message_ids(_header(msg, "In-Reply-To")) + list(reversed(_message_ids(_header(msg, "References"))))
    text = "\n".join(parts.plain) or "\n".join(_html_to_text(h) for h in parts.html)

    note = _ses_notification(text)
    if note is not None:
        kind, readings, refs = _ses_reading(note)
        return _report(kind, readings, own_refs + refs, base)
    if _is_complaint(msg, parts, subject):
        readings = _complaint_readings(msg, parts)
        return _report("complaint", readings, own_refs + _returned_refs(parts, ""), base)
    explanation, returned_text = _split_returned(_unquote_forward(text, subject))
    failures = _dsn_failures(parts, text)
    notice = _notice_signal(msg, subject, parts)
    null_path = _null_reverse_path(msg)
    # A subject starting with "Re:" is our own words coming back, never a verdict on delivery.
    verdict_subject = "" if _REPLY_PREFIX_RE.match(subject) else subject
    failure_said = bool(_BOUNCE_SUBJECT_RE.search(verdict_subject) or _BOUNCE_BODY_RE.search(explanation))
    if failures or ((notice or null_path or parts.returned) and failure_said):
        readings = _bounce_readings(msg, parts, failures, explanation, returned_text)
        if readings:
            kind = "delivery_report" if all(r.cause == "delivered" for r in readings) else "bounce"
            return _report(kind, readings, own_refs + _returned_refs(parts, returned_text), base)
    refs = _unique(own_refs + _returned_refs(parts, returned_text))
    if notice:
        return _empty("notification", references=refs, notification_reason=notice, **base)
    if _auto_reply_headers(msg):
        return _auto_reply(sender, subject, text, own_refs, today, base)
    new_text = _reply_text(text)
    opt_out = _asks_opt_out(verdict_subject, new_text)
    if not opt_out and _auto_reply_wording(subject, new_text):
        return _auto_reply(sender, subject, text, own_refs, today, base)
    if null_path:
        # RFC 5321 §4.5.5: only notices go out with a null reverse path; a person's mail never does.
        return _empty("notification", references=refs, notification_reason="null reverse path (Return-Path: <>)", **base)
    if not sender and not text.strip():
        return _empty("unknown", **base)
    return _empty(
        "reply", references=_unique(own_refs), reply_text=new_text, opt_out=opt_out,
        sentiment=reply_sentiment(new_text), **base,
    )


def _report(kind: str, readings: list[AddressReading], refs: list[str], base: dict) -> MailReading:
    """Return a bounce / complaint / delivery reading with its suppress decision."""
    suppress = any(
        r.cause == "recipient_invalid" or (r.cause == "complaint" and r.reason in SUPPRESSING_FEEDBACK) for r in readings
    )
    return _empty(kind, addresses=tuple(readings), suppress=suppress, references=_unique(refs), **base)
