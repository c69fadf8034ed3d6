"""The Channel base class every channel plugin subclasses, and the types it exchanges with the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Mapping


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ChannelContext:
    """What the core hands a channel when configuring it."""

    settings: Mapping[str, Any]  # the plugin's [plugins.NAME] table, secrets resolved
    postal_address: str | None
    base_url: str


@dataclass
class Sender:
    address: str
    display_name: str = ""
    signature: str = ""
    transport: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class OutboundTouch:
    """One rendered touch handed to a channel's send_batch; the touch row is already committed as `sending`."""

    touch_id: int
    attempt: int
    channel: str
    to_email: str | None
    to_phone: str | None
    to_name: str
    sender: Sender | None
    subject: str | None
    text: str
    html: str | None
    message_id: str | None = None  # assigned by the engine and committed before the send
    in_reply_to: str | None = None
    references: str | None = None
    unsubscribe_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SendResult:
    touch_id: int
    accepted: bool
    provider_id: str | None = None
    provider_status: str | None = None
    error: str | None = None
    # True when the provider surely did not accept the message: a new attempt is safe.
    retryable: bool = False
    # A provider verdict on the recipient (e.g. "opted_out", "invalid_address") that ends outreach.
    recipient_problem: str | None = None
    # The provider refused because of *our* side (authentication, blocklist, reputation, rate
    # limiting): the sender is held and admins alerted; the lead is not blamed and the touch
    # waits, without using an attempt, until the sender is released. The text says why.
    sender_problem: str | None = None


@dataclass(frozen=True)
class SentTouch:
    """What the touch_sent event carries."""

    touch_id: int
    lead_id: int
    channel: str
    step_key: str
    provider_id: str | None
    message_id: str | None
    sent_at: datetime


class Channel:
    """A way to reach a lead. Subclass it in a plugin and register an instance in register_channels."""

    #: The channel name steps refer to: "email", "sms", "voice".
    name: ClassVar[str]
    #: True when the channel can send without a person (auto steps).
    automatic: ClassVar[bool] = True
    #: Config keys under [plugins.NAME] -> a one-line description shown by `plugins list`.
    config_schema: ClassVar[dict[str, str]] = {}

    def configure(self, context: ChannelContext) -> None:
        """Take the configuration; called once after loading and again when settings change."""
        self.context = context

    def unavailable_reason(self) -> str | None:
        """Return why this channel cannot send right now (missing setting...), or None when it can."""
        return None

    def health(self) -> Health:
        """Check the provider connection cheaply (used by `plugins list` and `doctor`)."""
        reason = self.unavailable_reason()
        return Health(ok=reason is None, detail=reason or "ok")

    def check_sender(self, sender: Sender, timeout: float = 10.0) -> Health | None:
        """Open a provider session as sending from this sender would (login included); None if not supported.

        Used by `sequencer doctor` for each mailbox.
        """
        return None

    def dkim_record(self, sender: Sender) -> dict[str, str] | None:
        """Return the DKIM TXT record this sender's mail needs ({selector, domain, name, record, public_key}).

        None when mail from it is not signed; raise ValueError naming the setting when the key is unusable.
        """
        return None

    def prepare(self, touch: OutboundTouch) -> None:
        """Adjust a rendered touch before it is committed (footers, headers, segment checks)."""

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        """Send every touch (one provider connection for the batch) and return one result per touch."""
        raise NotImplementedError
