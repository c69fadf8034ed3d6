"""Complaints: ARF feedback reports (RFC 5965), provider complaint notices and Apple's unsubscribe."""
from __future__ import annotations

import email
import email.message
import email.policy
import re

from sequencer_email.reading.decoding import _address, _header
from sequencer_email.reading.readings import AddressReading
from sequencer_email.reading.reports import _Parts


# ARF Feedback-Type values that mean "this person does not want our mail".
# auth-failure / not-spam / dmarc reports are about our setup, not the person.
SUPPRESSING_FEEDBACK = frozenset({"abuse", "fraud", "virus", "opt-out", "opt-out-list", "other"})


_COMPLAINT_SUBJECT_RE = re.compile(r"complaint about message|abuse report|spam report|feedback report", re.I)


def _complaint_readings(msg: email.message.Message, parts: _Parts) -> list[AddressReading]:
    """Return one reading per complaining recipient."""
    report = "\n".join(parts.feedback)
    match = re.search(r"^Feedback-Type:\s*([\w-]+)", report, re.I | re.M)
    feedback = match.group(1).lower() if match else ("opt-out" if _is_apple_unsubscribe(msg) else "abuse")
    found = re.findall(r"^(?:Original-Rcpt-To|Removal-Recipient):\s*(.+)$", report, re.I | re.M)
    addresses = [_address(a) for a in found]
    if not addresses:
        for inner in parts.returned:
            value = inner.get("X-HmXmrOriginalRecipient") or inner.get("To") or ""
            addresses.extend(_address(a) for a in str(value).split(","))
    if not addresses:
        for headers in parts.returned_headers:
            inner = email.message_from_string(headers, policy=email.policy.compat32)
            addresses.extend(_address(a) for a in str(inner.get("To", "")).split(","))
    if not addresses and _is_apple_unsubscribe(msg):
        addresses = [_address(_header(msg, "From"))]
    # An anonymised report still names our message (see references): keep the complaint without an address.
    unique = list(dict.fromkeys(a for a in addresses if a)) or [""]
    return [AddressReading(a, "complaint", "", feedback) for a in unique]


def _is_apple_unsubscribe(msg: email.message.Message) -> bool:
    """Tell whether this is Apple Mail's one-tap unsubscribe message."""
    return _header(msg, "X-Apple-Unsubscribe").lower() == "true"


def _is_complaint(msg: email.message.Message, parts: _Parts, subject: str) -> bool:
    """Tell whether a message is a feedback (abuse / opt-out) report."""
    if parts.feedback or "feedback-report" in _header(msg, "Content-Type").lower():
        return True
    if _is_apple_unsubscribe(msg):
        return True
    # Hotmail-style reports: a complaint subject wrapping the reported message.
    return bool(parts.returned) and bool(_COMPLAINT_SUBJECT_RE.search(subject))
