"""What a reading says: the reading of one message and of each recipient it is about."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)

class AddressReading:
    """One recipient a bounce, complaint or report is about."""

    address: str
    cause: str
    status: str
    reason: str


@dataclass(frozen=True)

class MailReading:
    """What one inbound message is and what it says."""

    kind: str
    addresses: tuple[AddressReading, ...]
    suppress: bool
    sender: str
    subject: str
    message_id: str
    references: tuple[str, ...]
    return_date: datetime.date | None
    reply_text: str
    opt_out: bool
    sentiment: str
    # Why a message is kind "notification" (a mail system's notice naming no failed recipient).
    notification_reason: str = ""


def _empty(kind: str, **fields: object) -> MailReading:
    """Return a reading with defaults for everything not given."""
    values: dict = {
        "kind": kind, "addresses": (), "suppress": False, "sender": "", "subject": "", "message_id": "",
        "references": (), "return_date": None, "reply_text": "", "opt_out": False, "sentiment": "",
        "notification_reason": "",
    }
    values.update(fields)
    return MailReading(**values)


def _first(values: list[str]) -> str:
    """Return the first value or ""."""
    return values[0] if values else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """Return the values without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(v for v in values if v))
