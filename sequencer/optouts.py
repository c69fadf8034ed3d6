"""Opt-outs: signed unsubscribe tokens and the one function that opts a lead out of everything."""
from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.orm as so
from itsdangerous import BadData, URLSafeSerializer

from sequencer import audit, suppressions
from sequencer.exits import end_for_lead
from sequencer.leads import LeadDataError
from sequencer.models import InboundEvent, Lead, Suppression

if TYPE_CHECKING:
    from sequencer.plugins import Plugins

TOKEN_SALT = "unsubscribe"


class BadToken(ValueError):
    """An unsubscribe token that was not signed with our key, or is garbled."""


@functools.lru_cache(maxsize=8)
def _serializer(secret_key: str) -> URLSafeSerializer:
    # URLSafeSerializer carries no timestamp: CAN-SPAM wants the link to keep working
    # for at least 30 days, and an opt-out link that stops working helps nobody.
    return URLSafeSerializer(secret_key, salt=TOKEN_SALT)


def unsubscribe_token(secret_key: str, lead_id: int) -> str:
    """Return the signed, never-expiring unsubscribe token of a lead."""
    return _serializer(secret_key).dumps(int(lead_id))


def read_unsubscribe_token(secret_key: str, token: str) -> int:
    """Return the lead id a token was signed for; raise BadToken when it was not signed by us."""
    try:
        value = _serializer(secret_key).loads(token)
    except BadData:
        raise BadToken("this unsubscribe link is not valid: its signature does not match") from None
    # bool is an int subclass; only a plain positive int is something we signed.
    if type(value) is not int or value <= 0:
        raise BadToken("this unsubscribe link is not valid: it does not name a lead")
    return value


def unsubscribe_url(base_url: str, secret_key: str, lead_id: int) -> str:
    """Return the public unsubscribe link of a lead (List-Unsubscribe and the footer)."""
    return f"{base_url.rstrip('/')}/u/{unsubscribe_token(secret_key, lead_id)}"


def opt_out(session: so.Session, lead: Lead, *, now: datetime, source: str, detail: str = "",
            plugins: Plugins | None = None, channel: str = "email") -> bool:
    """Opt a lead out of every channel; return False when it already was (and do nothing).

    Sets `opted_out_at`, suppresses the lead's email and phone on all channels, ends every
    live enrollment as `opted_out`, and records an inbound event and an audit entry.
    `channel` is the channel the opt-out arrived on (the link: email; a STOP text: sms).
    """
    # A conditional UPDATE is the idempotency check: of two concurrent clicks only one
    # changes the row, so the other records no second event.
    claimed = session.execute(
        sa.update(Lead).where(Lead.id == lead.id, Lead.opted_out_at.is_(None))
        .values(opted_out_at=now, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if claimed.rowcount == 0:
        return False
    reason = f"opt-out via {source}" + (f": {detail}" if detail else "")
    email = lead.email_normalized or lead.email
    if email:
        _suppress(session, "email", email, reason=reason, source=source, now=now)
    if lead.phone:
        _suppress(session, "phone", lead.phone, reason=reason, source=source, now=now)
    ended = end_for_lead(session, lead, state="opted_out", reason=reason[:200], now=now, plugins=plugins)
    event = InboundEvent(kind="opt_out", channel=channel, received_at=now, lead_id=lead.id,
                         summary=f"Opted out via {source}" + (f" ({detail})" if detail else ""),
                         classification={"source": source})
    session.add(event)
    audit.record(session, actor=f"lead:{lead.id}", action="lead.opt_out", object_type="lead", object_id=lead.id,
                 at=now, source=source, channel=channel, detail=detail, enrollments_ended=ended)
    session.flush()
    if plugins is not None:
        plugins.hook.inbound_received(event=event)
    return True


def _suppress(session: so.Session, kind: str, value: str, *, reason: str, source: str, now: datetime) -> None:
    """Suppress a value on all channels, even one that today's validation would reject."""
    try:
        suppressions.add(session, kind, value, reason=reason, source=source, now=now, channel="all")
        return
    except LeadDataError:
        pass
    # A stored address that no longer validates (older import rules) must still be
    # suppressed: an opt-out is never lost to a validation error.
    normalized = value.strip().lower() if kind == "email" else value.strip()
    digest = suppressions.value_hash(normalized)
    exists = session.scalar(sa.select(Suppression.id).where(
        Suppression.kind == kind, Suppression.value_hash == digest, Suppression.channel == "all"))
    if exists is None:
        session.add(Suppression(kind=kind, value=normalized, value_hash=digest, channel="all", reason=reason,
                                source=source[:50], created_at=now))
