"""Twilio's error codes that say something about the recipient, in the contract's words.

The same codes come back when a send is refused (REST API) and later, in a status callback
(a Messaging Service sends first and finds out after), and mean the same in both.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

# code -> SendResult.recipient_problem, which the engine maps onto the Core's reports:
# "opted_out" -> Core.opt_out (rule 11: suppressed on every channel, never retried);
# "invalid_address" -> Core.address_verdict "invalid" (the phone is wrong for every channel);
# "unable_sms" -> Core.address_verdict "unable_sms" (no more texts; calls go on).
RECIPIENT_PROBLEMS = {
    21610: "opted_out",        # "Attempt to send to unsubscribed recipient"
    21211: "invalid_address",  # "Invalid 'To' Phone Number"
    21614: "unable_sms",       # "'To' number is not a valid mobile number"
}
# Twilio says nothing about when to come back after a 5xx, nor always after a 429.
DEFAULT_BACKOFF = timedelta(seconds=60)
# A Retry-After beyond this is a provider's mistake; the touch comes back at least this often.
MAX_BACKOFF = timedelta(hours=1)


def retry_after(value: str | None, now: datetime) -> datetime:
    """Return when to try again from a Retry-After header (seconds or an HTTP date, RFC 9110 10.2.3)."""
    delay = DEFAULT_BACKOFF
    if value:
        value = value.strip()
        if value.isdigit():
            delay = timedelta(seconds=int(value))
        else:
            try:
                delay = parsedate_to_datetime(value) - now
            except (TypeError, ValueError):
                delay = DEFAULT_BACKOFF
    return now + min(max(delay, timedelta(0)), MAX_BACKOFF)
