"""The email channel: one SMTP connection per transport for a whole batch, kept open for the next batch a short
while; results classified for at-most-once."""
from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from email.errors import MessageError
from email.utils import make_msgid
from typing import Any, Mapping

import dkim

from sequencer.channels import Channel, Health, OutboundTouch, SendResult, Sender
from sequencer_email.message import add_footer, build_message, check_headers
from sequencer_email.refusals import CAUSES, sender_cause
from sequencer_email.signing import DKIM_SCHEMA, DkimError, DkimKey, resolve_dkim
from sequencer_email.transport import (
    Delivery,
    SessionRefused,
    Sessions,
    Transport,
    TransportError,
    connect,
    deliver,
    describe_error,
    disconnect,
    resolve_keepalive,
    resolve_transport,
)

NO_POSTAL_ADDRESS = ("no postal address configured: set [sending] postal_address in config.toml "
                     "(CAN-SPAM requires one in every commercial email)")
HEALTH_TIMEOUT = 10.0
# Enhanced status codes (RFC 3463) that mean the mailbox does not exist.
INVALID_ADDRESS_CODES = frozenset({"5.1.1", "5.1.2", "5.1.10"})
INVALID_ADDRESS_WORDS = ("user unknown", "unknown user", "no such user")


@dataclass(frozen=True)
class Outgoing:
    """A touch ready for the wire: its place in the batch, its Message-ID and its bytes."""

    index: int
    touch: OutboundTouch
    mail_from: str  # the envelope sender is the mailbox itself, so bounces come back to it
    rcpt_to: str
    message_id: str
    data: bytes


class EmailChannel(Channel):
    """Send email touches over SMTP, from each touch's mailbox."""

    name = "email"
    automatic = True
    address_kind = "email"
    # A rep can find an address by hand for a manual email; the engine cannot send without one.
    address_required = "automatic"
    task_kind = "email"
    task_verb = "Email"
    task_priority = 20
    sender_kind = "mailbox"
    config_schema = {
        "host": "SMTP server host name (required)",
        "port": "SMTP port (default 587 for starttls, 465 for ssl, 25 for none)",
        "security": 'starttls | ssl | none (default "starttls")',
        "username": "SMTP login; no login when empty",
        "password": 'SMTP password; use { env = "VAR" } to read it from the environment',
        "timeout": "seconds to wait for the server on each command (default 30)",
        "message_id_domain": "domain of generated Message-IDs (default: the sender's domain)",
        "keepalive_seconds": "seconds an idle SMTP session stays open for the next batch (default 30; 0: close at once)",
        **DKIM_SCHEMA,
    }

    def __init__(self) -> None:
        self.sessions = Sessions()
        # Channel has no close hook: the sessions are QUIT when the channel goes away or the process ends.
        weakref.finalize(self, self.sessions.close)

    def unavailable_reason(self) -> str | None:
        """Return why email cannot go out: no postal address, no SMTP host, or an unusable setting or DKIM key."""
        context = getattr(self, "context", None)
        if context is None:
            return "the email channel has not been configured yet"
        if not (context.postal_address or "").strip():
            return NO_POSTAL_ADDRESS
        try:
            resolve_transport(context.settings)
            resolve_keepalive(context.settings)
            resolve_dkim(context.settings)
        except (TransportError, DkimError) as exc:
            return str(exc)
        return None

    def health(self) -> Health:
        """Open and close an SMTP session with the shared transport, with a short timeout."""
        reason = self.unavailable_reason()
        if reason is not None:
            return Health(ok=False, detail=reason)
        transport = resolve_transport(self.context.settings)
        try:
            disconnect(connect(transport, timeout=min(transport.timeout, HEALTH_TIMEOUT)))
        except OSError as exc:
            return Health(ok=False, detail=f"SMTP server {transport.label}: {describe_error(exc)}")
        return Health(ok=True, detail=f"ok ({transport.label}, {transport.security})")

    def check_sender(self, sender: Sender, timeout: float = HEALTH_TIMEOUT) -> Health:
        """Open an SMTP session (EHLO, STARTTLS, login) exactly as mail from this mailbox would, then QUIT."""
        try:
            transport = resolve_transport(self.context.settings, sender.transport)
        except TransportError as exc:
            return Health(ok=False, detail=str(exc))
        try:
            disconnect(connect(transport, timeout=min(transport.timeout, timeout)))
        except OSError as exc:
            return Health(ok=False, detail=f"SMTP server {transport.label}: {describe_error(exc)}")
        login = f"logged in as {transport.username}" if transport.username else "connected (no login configured)"
        return Health(ok=True, detail=f"{login} at {transport.label} ({transport.security})")

    def dkim_record(self, sender: Sender) -> dict[str, str] | None:
        """Return the DKIM record mail from this mailbox needs (name, selector, domain, record), or None.

        Raises ValueError, naming the setting, when the configured key cannot be used.
        """
        key = resolve_dkim(self.context.settings, sender.transport)
        if key is None:
            return None
        return {"selector": key.selector, "domain": key.domain_for(sender.address),
                "name": key.record_name(sender.address), "record": key.record, "public_key": key.public_key}

    def prepare(self, touch: OutboundTouch) -> None:
        """Give the touch its Message-ID and thread headers, refuse header injection, add the footer.

        The engine commits the Message-ID with the touch before the send, so a resend after a crash
        carries the same one; a retry keeps the one it already has.
        """
        if not touch.message_id and touch.sender is not None:
            touch.message_id = make_msgid(domain=_message_id_domain(self.context.settings, touch.sender))
        if touch.thread_id:
            touch.in_reply_to, touch.references = touch.thread_id, touch.thread_references
        if touch.thread_subject:
            subject = touch.thread_subject
            touch.subject = subject if subject.lower().startswith("re:") else f"Re: {subject}"
        check_headers(touch)
        postal_address = (self.context.postal_address or "").strip()
        if not postal_address:
            raise ValueError(NO_POSTAL_ADDRESS)
        add_footer(touch, postal_address)

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        """Send every touch, one SMTP session per transport, and return one result per touch in order."""
        try:
            keepalive = resolve_keepalive(self.context.settings)
        except TransportError as exc:
            # Nothing was sent, so a new attempt after the setting is fixed is safe.
            return [_Refused(touch, str(exc), retryable=True).result for touch in touches]
        results: dict[int, SendResult] = {}
        groups: dict[tuple[str, int, str, str | None], tuple[Transport, list[Outgoing]]] = {}
        for index, touch in enumerate(touches):
            try:
                transport, outgoing = self._outgoing(index, touch)
            except _Refused as refused:
                results[index] = refused.result
                continue
            groups.setdefault(transport.key, (transport, []))[1].append(outgoing)
        for transport, batch in groups.values():
            for index, result in _send_group(self.sessions, transport, batch, keepalive):
                results[index] = result
        return [results[index] for index in range(len(touches))]

    def _outgoing(self, index: int, touch: OutboundTouch) -> tuple[Transport, Outgoing]:
        """Resolve the touch's transport and build its message; raise _Refused when it cannot go out."""
        if not (self.context.postal_address or "").strip():
            raise _Refused(touch, NO_POSTAL_ADDRESS, retryable=True)
        if touch.sender is None:
            raise _Refused(touch, f"touch {touch.touch_id} has no sending mailbox")
        if not touch.to_email:
            raise _Refused(touch, f"touch {touch.touch_id} has no recipient email address")
        if not (touch.sender.address.isascii() and touch.to_email.isascii()):
            raise _Refused(touch, f"touch {touch.touch_id}: internationalized addresses (SMTPUTF8) are not supported")
        try:
            transport = resolve_transport(self.context.settings, touch.sender.transport)
            key = resolve_dkim(self.context.settings, touch.sender.transport)
        except (TransportError, DkimError) as exc:
            # Nothing was sent, so a new attempt after the setting is fixed is safe.
            raise _Refused(touch, f"mailbox {touch.sender.address}: {exc}", retryable=True) from None
        message_id = _message_id(touch, transport)
        try:
            data = build_message(touch, message_id=message_id, date=datetime.now(timezone.utc)).as_bytes()
        except (ValueError, MessageError) as exc:
            raise _Refused(touch, f"touch {touch.touch_id}: cannot build the email: {exc}") from None
        if key is not None:
            data = _signed(touch, key, data)
        return transport, Outgoing(index, touch, touch.sender.address, touch.to_email, message_id, data)


class _Refused(Exception):
    """A touch refused before any connection, carrying its SendResult."""

    def __init__(self, touch: OutboundTouch, error: str, retryable: bool = False) -> None:
        super().__init__(error)
        self.result = SendResult(touch.touch_id, accepted=False, error=error, retryable=retryable)


def _signed(touch: OutboundTouch, key: DkimKey, data: bytes) -> bytes:
    """Return the message bytes with their DKIM signature; these exact bytes go over SMTP."""
    assert touch.sender is not None
    try:
        return key.sign(data, touch.sender.address)
    except dkim.DKIMException as exc:
        raise _Refused(touch, f"mailbox {touch.sender.address}: cannot DKIM-sign touch {touch.touch_id}: {exc}",
                       retryable=True) from None


def _message_id_domain(settings: Mapping[str, Any], sender: Sender) -> str:
    """Return the domain of a new Message-ID: message_id_domain (the mailbox's, else the shared), else the sender's."""
    try:
        domain = resolve_transport(settings, sender.transport).message_id_domain
    except TransportError:
        domain = None  # the send refuses the touch, naming the setting; the id only has to be unique
    return domain or sender.address.rpartition("@")[2]


def _message_id(touch: OutboundTouch, transport: Transport) -> str:
    """Return the Message-ID prepare() gave the touch, in angle brackets, or a new one when it has none."""
    if touch.message_id:
        return touch.message_id if touch.message_id.startswith("<") else f"<{touch.message_id}>"
    assert touch.sender is not None
    return make_msgid(domain=transport.message_id_domain or touch.sender.address.rpartition("@")[2])


def _send_group(sessions: Sessions, transport: Transport, batch: list[Outgoing],
                keepalive: float) -> list[tuple[int, SendResult]]:
    """Send a group's messages over one session, reconnecting once if it breaks mid-batch.

    The session comes from `sessions` (a kept one that answers, or a new one) and goes back
    there for keepalive seconds unless its connection broke. A server that refuses the session
    or hangs up because of our side (blocklist, login, rate limit) is not asked again in this
    batch: the rest come back with the same sender_problem.
    """
    results: list[tuple[int, SendResult]] = []
    pending = deque(batch)
    reason = ""
    sender_problem: str | None = None
    for _ in range(2):
        if not pending or sender_problem:
            break
        try:
            smtp = sessions.acquire(transport)
        except OSError as exc:
            reason = f"could not open an SMTP session with {transport.label}: {describe_error(exc)}"
            if isinstance(exc, SessionRefused) and (cause := sender_cause(exc.stage, exc.smtp_code, exc.reply)):
                reason = f"{transport.label} refused the session at {exc.stage}: {describe_error(exc)} ({CAUSES[cause]})"
                sender_problem = describe_error(exc)
            break
        reusable = False  # until every message of the group got its answer on this session
        try:
            while pending:
                item = pending.popleft()
                delivery = deliver(smtp, item.mail_from, item.rcpt_to, item.data)
                result = result_for(item, delivery, transport.label)
                results.append((item.index, result))
                if not delivery.connection_ok:
                    reason = f"the connection to {transport.label} broke before this message was sent"
                    if result.sender_problem:
                        reason = f"not sent: {result.error}"
                        sender_problem = result.sender_problem
                    break
            else:
                reusable = True
        finally:
            sessions.release(transport, smtp, keepalive=keepalive, reusable=reusable)
    # These never reached the server: a new attempt is safe.
    results.extend((item.index, SendResult(item.touch.touch_id, accepted=False, error=reason, retryable=True,
                                           sender_problem=sender_problem))
                   for item in pending)
    return results


def result_for(item: Outgoing, delivery: Delivery, server: str) -> SendResult:
    """Translate what the server surely has into a SendResult (retryable only when it surely has nothing)."""
    touch_id = item.touch.touch_id
    if delivery.outcome == "accepted":
        return SendResult(touch_id, accepted=True, provider_id=item.message_id, provider_status=delivery.status)
    if delivery.outcome == "lost":
        return SendResult(touch_id, accepted=False, retryable=True,
                          error=f"{server}: connection lost at {delivery.stage} before the message was sent: {delivery.reply}")
    if delivery.outcome == "unknown":
        return SendResult(touch_id, accepted=False, retryable=False, provider_id=item.message_id,
                          provider_status="unknown",
                          error=(f"{server}: the whole message was sent but no clear reply came back "
                                 f"({delivery.status}); the server may have accepted it, so it must not be "
                                 f"resent before a person checks"))
    error = f"{server} refused the message at {delivery.stage}: {delivery.status}"
    cause = sender_cause(delivery.stage, delivery.code, delivery.reply)
    if cause is not None:
        # A refusal: the server has nothing, so the touch may go again once the mailbox is released.
        return SendResult(touch_id, accepted=False, retryable=True, provider_status=delivery.status,
                          error=f"{error} ({CAUSES[cause]})", sender_problem=delivery.status)
    if _is_invalid_address(delivery):
        return SendResult(touch_id, accepted=False, retryable=False, provider_status=delivery.status,
                          error=error, recipient_problem="invalid_address")
    permanent = delivery.code is not None and 500 <= delivery.code < 600
    return SendResult(touch_id, accepted=False, retryable=not permanent, provider_status=delivery.status, error=error)


def _is_invalid_address(delivery: Delivery) -> bool:
    """Tell whether a permanent refusal of the recipient means the mailbox does not exist."""
    if delivery.stage not in ("RCPT", "message") or delivery.code is None or not 500 <= delivery.code < 600:
        return False
    if delivery.enhanced_status in INVALID_ADDRESS_CODES:
        return True
    return any(words in delivery.reply.lower() for words in INVALID_ADDRESS_WORDS)
