"""The public plugin API: the Channel base class, the types it exchanges with the engine, and the
object through which a plugin reports back to the core (`Core`, on `ChannelContext.core`).

A plugin imports only this module and `sequencer.hookimpl`.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Protocol, Sequence

from sequencer.sentiment import asks_to_opt_out, read_reply_sentiment

if TYPE_CHECKING:
    import sqlalchemy.orm as so

    from sequencer.dialing import CallTask, Drop
    from sequencer.numbers import Slot

# How the core reads a person's words on any channel, for a plugin's own reading of its messages
# (email reads the new text of a reply with them): one set of rules, whatever the channel.
reply_sentiment = read_reply_sentiment
__all__ = ["AddressVerdict", "CallStatus", "Channel", "ChannelContext", "Core", "CoreUnavailable", "Cost", "DeliveryStatus", "DialError", "Health",
           "OutboundTouch", "Receipt", "SendResult", "Sender", "SenderState", "SentTouch", "StepScope", "asks_to_opt_out", "core_for", "e164", "emit_rows",
           "reply_sentiment"]

# Which steps of a channel a rule covers: every step, only those the engine sends itself, or none.
StepScope = Literal["all", "automatic", "none"]

# A provider's delivery status, in the contract's words; a plugin maps its provider's onto them.
# They only move forward: queued < sending < sent < delivered; delivered, undelivered and failed are final.
DeliveryStatus = Literal["queued", "sending", "sent", "delivered", "undelivered", "failed"]

# A call's progress; completed, busy, no_answer, failed and canceled are final.
CallStatus = Literal["queued", "initiated", "ringing", "in_progress", "completed", "busy", "no_answer", "failed",
                     "canceled"]

# A provider's verdict on an address: "invalid" (no such mailbox or number: stop and suppress it),
# "unable_sms" (a number that cannot take texts, such as a landline: no more SMS, calls go on),
# "transient" (a temporary failure of one touch: send it again) or "failed" (that touch failed for
# another reason: the cadence goes on).
AddressVerdict = Literal["invalid", "unable_sms", "transient", "failed"]


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Receipt:
    """What the core did with one report, so the plugin can answer its provider."""

    # updated: the touch took the status or result; unchanged: a replay or an older status, ignored;
    # unknown_id: no touch has this provider id (logged); reply, opted_out, opted_in, help: what an
    # inbound message was taken for ("help": answer with your help text); flagged: an address
    # verdict was recorded; unmatched: an inbound reply from an address no lead has, or a report that
    # names none of our messages and no lead's address (nothing was done); paused: an auto-reply paused
    # the lead's cadences; retrying: a temporary failure sends the touch again; failed: the touch
    # failed, the cadence goes on; held: a sender was held for a problem on our side; recorded: a
    # message was stored for a person to read.
    action: Literal["updated", "unchanged", "unknown_id", "reply", "opted_out", "opted_in", "help", "flagged",
                    "unmatched", "paused", "retrying", "failed", "held", "recorded"]
    # False when the report changed nothing (a replay, an older status, an opt-out already on file).
    changed: bool = False
    lead_id: int | None = None
    touch_id: int | None = None
    detail: str = ""
    # The kind of event recorded for the message (reply, bounce...), where one was.
    kind: str | None = None


class CoreUnavailable(Exception):
    """The core's database cannot be reached or is busy right now; the message says so. Try again later.

    Raised by Core.session() and the reports (and only for that), so a plugin can tell its
    provider or MTA to deliver again (HTTP 503, exit 75) rather than lose the message.
    """


class DialError(ValueError):
    """A call cannot be placed from this task, or the lead's contact hours never open; the message says why."""


@dataclass(frozen=True)
class SenderState:
    """One of a channel's senders (an email mailbox) and what its plugin keeps about reading from it."""

    sender_id: int
    address: str
    # The plugin's settings for reading this sender's incoming messages (an IMAP server...); {} when none.
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Where reading got to: the last position read within an epoch that positions belong to (IMAP:
    # the last UID within a UIDVALIDITY). None before the first read.
    epoch: int | None = None
    position: int | None = None
    # The last read: when, its error (None when it worked), failures in a row, and when to try again.
    checked_at: datetime | None = None
    error: str | None = None
    failures: int = 0
    retry_at: datetime | None = None


class Core(Protocol):
    """The core as a plugin sees it: reports after the send, and what commands and webhooks need.

    Each report method runs in its own transaction, is safe to call again with the same report
    (providers retry), and returns a Receipt.
    """

    #: The plugin's [plugins.NAME] table, secrets resolved.
    settings: Mapping[str, Any]

    def session(self) -> AbstractContextManager[so.Session]:
        """Open a database session that commits on success and rolls back on error.

        Reports made inside it, on the same thread, join its transaction, each in a savepoint:
        a plugin can make several reports and its own state change in one transaction, and a
        report that raises undoes only itself.
        """

    def now(self) -> datetime:
        """Return the application clock's current instant (aware UTC; honours --now)."""

    def delivery_status(self, channel: str, provider_id: str, status: DeliveryStatus, at: datetime,
                        error_code: str | None = None, raw: Any = None, *, references: Sequence[str] = ()) -> Receipt:
        """Record a provider's delivery status for the touch it accepted as `provider_id`; only forward moves count.

        A report that names our message by the message ids it refers to (an email delivery
        report) passes them as `references` and "" as `provider_id`.
        """

    def inbound_message(self, channel: str, from_address: str, to_address: str, text: str, provider_id: str | None,
                        at: datetime, raw: Any = None, *, references: Sequence[str] = (), subject: str = "",
                        asks_to_stop: bool = False, details: Mapping[str, Any] | None = None) -> Receipt:
        """Act on a message from a lead: opt-out, opt-in and help keywords, else a reply that ends the cadence.

        The lead is the one of the touch the message answers (`references`: our message ids,
        newest first, as In-Reply-To and References give them), else the one with the sender's
        address, else, for email, the lead in a cadence at the sender's company (not at a
        free-mail domain). `asks_to_stop` says the plugin's own reading found a request to stop
        that `text` does not show (an email's subject); `subject` titles the reply task;
        `details` are kept with the recorded message. One action per `provider_id`.
        """

    def auto_reply(self, channel: str, from_address: str, *, references: Sequence[str] = (),
                   return_date: date | None = None) -> Receipt:
        """Pause the lead's live cadences for an out-of-office until its next business day after `return_date`.

        Without a date, for [inbound] out_of_office_default_days (0: not at all). The lead is matched
        as inbound_message matches it. Records nothing: record() the message that said it.
        """

    def opt_out(self, channel: str, address: str, source: str, detail: str = "", *,
                references: Sequence[str] | None = None) -> Receipt:
        """Opt the address out (a provider's own opt-out list, a complaint): suppress it, opt its leads out.

        A report that came in a message passes the message ids it refers to as `references`
        (possibly none): then an address no lead has is taken for the recipient of the touch
        they name, and one that matches neither is left alone ("unmatched": backscatter, or a
        report about someone else).
        """

    def address_verdict(self, channel: str, address: str, verdict: AddressVerdict, detail: str = "", *,
                        references: Sequence[str] | None = None, source: str | None = None) -> Receipt:
        """Record a provider's verdict on an address (see AddressVerdict).

        "transient" and "failed" are about one touch, the one `references` name: a temporary
        failure sends it again as a new attempt (if its cadence has not moved on), a failure
        fails it and the cadence goes on. With `references`, the address is matched as in
        opt_out. `source` names where the verdict came from on the suppression (default
        "CHANNEL_verdict").
        """

    def sender_problem(self, channel: str, sender_address: str, detail: str, *,
                       references: Sequence[str] | None = None, recipient: str | None = None) -> Receipt:
        """Hold the sender a failure blames (ours, not the lead's: authentication, blocklist) and alert admins.

        The sender is the one the touch named by `references` went from, else `sender_address`.
        With the failed `recipient`, a failure that names none of our touches and no lead's
        address is left alone ("unmatched": mail forged in our name).
        """

    def record(self, channel: str, kind: str, *, provider_id: str | None = None, from_address: str = "",
               to_address: str = "", references: Sequence[str] = (), text: str = "", reason: str | None = None,
               lead_id: int | None = None, touch_id: int | None = None, details: Mapping[str, Any] | None = None,
               raw: Any = None) -> Receipt:
        """Store a message on the lead's timeline and for `sequencer inbound list`, acting on nothing.

        For a notification, a message that could not be acted on (`reason` says why; listed as
        unmatched, and inbound_received is not called for it), or the message that carried the
        reports made just before (pass their lead and touch). Its `provider_id` counts for received().
        """

    def received(self, channel: str, provider_id: str | None) -> Receipt | None:
        """Return what was recorded for the message with this provider id, or None if it was never received."""

    def messages(self, channel: str, *, unmatched: bool = False, kind: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
        """Return the latest messages recorded from the channel, newest first (`unmatched`: only those not acted on).

        Each is {id, received_at, kind, lead (its email), mailbox, message_id, summary}.
        """

    def senders(self, channel: str) -> list[SenderState]:
        """Return the channel's senders (email: every mailbox), by id."""

    def find_sender(self, channel: str, address: str) -> SenderState:
        """Return the channel's sender with this address; raise LookupError saying how to add one."""

    def sender_state(self, sender_id: int, *, lock: bool = False) -> SenderState:
        """Return a sender's state; `lock` holds its row until the open session ends (one reader at a time)."""

    def save_sender_state(self, sender_id: int, *, audit_detail: Mapping[str, Any] | None = None,
                          **state: Any) -> None:
        """Change fields of a sender's state (the SenderState field names); `audit_detail` audits a settings change."""

    def call_result(self, provider_id: str, status: CallStatus, duration: int | None = None,
                    answered_by: str | None = None, recording_url: str | None = None,
                    at: datetime | None = None) -> Receipt:
        """Record a call's progress on the touch that placed it; only forward moves count."""

    # -- phone numbers as senders (channels whose sender_kind is "number") ----------------------------

    #: [web] base_url: the public URL the provider's webhooks are signed against, also behind a proxy.
    base_url: str

    def sender_number(self, touch_id: int, pool: Sequence[str]) -> str | None:
        """Return the number a touch goes out from (E.164); None when there is none to send from.

        Sticky: a lead hears from one number for the whole conversation, texts and calls alike. The
        first touch fixes it: the lead owner's own number (`sequencer numbers assign`), else the
        pool's (`pool`, the plugin's configured numbers, and every number without an owner) that
        fewest leads hear from.
        """

    def number_slot(self, number: str, per_second: float, daily_cap: int | None,
                    latest: datetime | None = None) -> Slot:
        """Take the number's next sending slot, shared by every worker, in its own transaction.

        Returns a Slot (`at`, `reserved`): `reserved` True means send at `at` (now or a moment
        later); False means the number is at its daily cap or the slot falls after `latest`, and
        nothing was taken: defer the touch to `at` (SendResult.defer_until), never fail it.
        """

    def sender_numbers(self, touch_ids: Sequence[int], pool: Sequence[str]) -> Mapping[int, str | None]:
        """sender_number for a group of touches in one transaction: touch id -> number (or None)."""

    def number_slots(self, numbers: Sequence[str], per_second: float, daily_cap: int | None,
                     latest: datetime | None = None) -> list[Slot]:
        """number_slot for each entry of `numbers` in order (one per text; a number may repeat), in one
        transaction: a group's slots taken at once, shared by every worker as number_slot's."""

    def is_our_number(self, number: str, pool: Sequence[str]) -> bool:
        """Tell whether a number (E.164) is ours: one of `pool` or one in `sequencer numbers list`."""

    # -- dialing (a rep's click-to-call and voicemail drops) ------------------------------------------

    def call_task(self, task_id: int) -> CallTask:
        """Return an open call task (`touch_id`, `lead_phone`, `lead_name`, `rep_email`, `rep_phone`, `zones`).

        Raises DialError naming what is missing: no such open call task, no usable phone, an
        opted-out or suppressed lead, no owner or owner's phone, no known time zone.
        """

    def contact_opening(self, zones: Sequence[str]) -> datetime:
        """Return now if [contact_hours] hold now in every zone, else when they next open.

        Raises DialError when the zones never share an instant inside the hours.
        """

    def call_placed(self, touch_id: int, provider_id: str) -> None:
        """Put a rep's call on its task's touch, so its call_result reports land on the timeline."""

    def drop(self, touch_id: int) -> Drop | None:
        """Return the automatic voice touch a voicemail drop plays (`text` as rendered, `status`, `lead_country`)."""

    def voicemail_played(self, touch_id: int) -> Receipt:
        """Record that a drop's message was played to the end: the placed touch is sent, left_voicemail."""

    def voicemail_missed(self, provider_id: str, why: str, touch_id: int | None = None) -> Receipt:
        """Fail a placed drop whose call ended without its message played; the cadence goes on.

        `touch_id` (the drop's, as the status callback URL carried it) finds a drop whose call
        ended before the engine recorded its provider id."""

    def call_back_task(self, touch_id: int, instructions: str) -> int | None:
        """Give the lead's owner a task to call back whoever answered a drop, once per touch; its id."""

    def call_recording(self, provider_id: str, recording_id: str, url: str, duration: int | None) -> Receipt:
        """Put a call's recording on the lead's timeline, once per recording id."""

    def account_slot(self, key: str, per_second: float, latest: datetime) -> Slot:
        """Take the next slot of a rate every worker shares under `key` (calls per second of an account)."""


@dataclass(frozen=True)
class ChannelContext:
    """What the core hands a channel when configuring it."""

    settings: Mapping[str, Any]  # the plugin's [plugins.NAME] table, secrets resolved
    postal_address: str | None
    base_url: str
    # How the plugin reports back; None only in a plugin manager built without a database (the
    # CLI's discovery of plugin commands), where nothing is ever sent.
    core: Core | None = None


def emit_rows(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print a plugin command's rows as `sequencer` prints its own: JSON (`--format json`) or an aligned table.

    JSON times are ISO 8601 UTC with Z, as every listing command gives them.
    """
    from sequencer.cli.base import emit

    emit([dict(row) for row in rows], fmt, columns)


def e164(number: str) -> str:
    """Return a number written internationally (+...) in E.164, as `sequencer numbers` keeps our numbers.

    Raises ValueError naming the number and what is wrong with it: read a plugin's configured
    numbers with this, so they compare equal to the numbers table and to leads' phones.
    """
    from sequencer.numbers import e164 as parse

    return parse(number)


def public_url(base_url: str, path: str, query_string: bytes = b"") -> str:
    """Return the URL a provider called, as it saw it: `[web] base_url` + path (+ query).

    Webhook signatures (Twilio's X-Twilio-Signature) are computed on the public URL, which a
    proxy in front of Sequencer hides from the request itself.
    """
    url = base_url.rstrip("/") + path
    return url + "?" + query_string.decode("latin-1") if query_string else url


def core_for(plugin: str) -> Core:
    """Return the Core of `plugin` (its entry-point name) for the running command or web request.

    Plugin commands (register_commands) and views (register_blueprints) call this; jobs
    (register_jobs) and channels are handed theirs.
    """
    from sequencer.receiving import current_core

    return current_core(plugin)


@dataclass
class Sender:
    """What a touch goes out from, as its channel's `sender_kind` declares it.

    "mailbox": the enrollment's mailbox (address, display name, signature, its own transport
    settings). "number": the lead owner's phone as `address` ("" when none) and their user id;
    the plugin chooses the number it sends from.
    """

    address: str
    display_name: str = ""
    signature: str = ""
    transport: Mapping[str, Any] = field(default_factory=dict)
    # The user the sender belongs to (the mailbox's owner, the lead's owner), when there is one.
    owner_id: int | None = None


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
    # The message's own id, when its channel gives one (email's Message-ID): assigned by the
    # channel's prepare() and committed with the touch before the send, so a resend after a crash
    # carries the same id; kept from the earlier attempt on a retry.
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = None
    unsubscribe_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The conversation a `thread = true` step continues, as the enrollment's accepted sends left it:
    # the message_id of the last one, every one of them (space-separated, oldest first), and the
    # subject of the first. None when the step does not continue a thread or nothing went yet.
    # A channel that threads maps them in prepare() (email: In-Reply-To, References, "Re:").
    thread_id: str | None = None
    thread_references: str | None = None
    thread_subject: str | None = None


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
    # The provider asked us to slow down (HTTP 429, a rate-limit refusal): the message was surely not
    # accepted, and the touch waits until this instant without using one of its attempts, since a
    # limit on our rate says nothing about the recipient. Aware UTC.
    defer_until: datetime | None = None
    # With accepted=True: the provider took the request, but whether it reached the lead is known
    # only later (a voicemail drop is sent only when its message was played). The touch is then
    # `placed`: the cadence moves on and throttles count it, as for a sent touch, but it becomes
    # `sent` (and touch_sent fires) only when the plugin reports it done (Core.voicemail_played).
    sent_when_reported: bool = False


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


@dataclass(frozen=True)
class Cost:
    """What one rendered text costs on a channel that counts it (SMS segments), for a person to see."""

    #: Compared across leads: `cadence apply` and `cadence simulate` show a step's largest.
    amount: int
    #: Shown as is, such as "2 segments (GSM-7)".
    label: str


class Channel:
    """A way to reach a lead. Subclass it in a plugin and register an instance in register_channels."""

    #: The channel name steps refer to: "email", "sms", "voice".
    name: ClassVar[str]
    #: True when the channel can send without a person (auto steps).
    automatic: ClassVar[bool] = True
    #: Config keys under [plugins.NAME] -> a one-line description shown by `plugins list`.
    config_schema: ClassVar[dict[str, str]] = {}

    # What differs between channels and matters to the engine, declared here so the engine never
    # spells a channel name. The defaults describe a channel that needs nothing of the lead.

    #: The lead address a step goes to: "email", "phone", or None when it needs none (a to-do).
    address_kind: ClassVar[Literal["email", "phone"] | None] = None
    #: Which steps cannot run without that address. A rep can still look up an email address by
    #: hand ("automatic"), but nobody can call or text a lead without a number ("all").
    address_required: ClassVar[StepScope] = "all"
    #: The kind of task a manual step opens for the lead's owner (what the task list filters on).
    task_kind: ClassVar[Literal["email", "call", "sms", "task"]] = "task"
    #: The first word of a manual step's task title ("Call Jane Doe (Acme)").
    task_verb: ClassVar[str] = "Task for"
    #: Where a manual step's task sorts in the day: calls are bound to the lead's working hours.
    task_priority: ClassVar[int] = 10
    #: Which steps need the lead's consent record on this channel (COMPLIANCE.md rule 9): every
    #: text, but only the calls the engine dials itself; a rep's own call needs none.
    requires_consent: ClassVar[StepScope] = "none"
    #: True when automatic steps keep to [contact_hours] in the lead's local time (rule 8: texts
    #: and calls). Manual steps always open their task: a person decides when to act on it.
    contact_hours: ClassVar[bool] = False
    #: What a touch is sent from: "mailbox" (the enrollment's mailbox, with its daily cap), "number"
    #: (one of the plugin's own numbers), or None (a person does the step).
    sender_kind: ClassVar[Literal["mailbox", "number"] | None] = None

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

    def describe_cost(self, text: str) -> Cost | None:
        """Return what sending this rendered text costs, or None when the channel does not count it (the default).

        `cadence apply` and `cadence simulate` show it per step: the largest over the cadence's
        enrolled leads, or, with none, over the template with each variable at its default or 10
        characters.
        """
        return None

    def check_rendered(self, text: str) -> None:
        """Raise ValueError saying why this channel would refuse the rendered text (a limit it passes) and the fix.

        `cadence apply` refuses a step whose text fails it, rendered as for describe_cost; call it
        from prepare() too, so a lead whose fields make the text too long is stopped before the send.
        """

    def prepare(self, touch: OutboundTouch) -> None:
        """Adjust a rendered touch before it is committed (footers, headers, segment checks)."""

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        """Send every touch (one provider connection for the batch) and return one result per touch."""
        raise NotImplementedError
