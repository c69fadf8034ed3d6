"""The engine's decision for one enrollment: a pure function over what its batch loaded.

`decide(facts, counts, limits)` reads a small frozen `Facts` (the enrollment, its lead, its
step's channel declaration, its sending calendar) and the batch's throttle `Counts`, and
returns what to do now: exit, repair, skip the step, defer, pause, open a task or send. It
touches no database and no clock, so every rule here is tested without either
(tests/test_decide.py). The engine loads the facts for a whole batch, calls it once per
enrollment, records the decision in the counts, then writes every decision set-wise.

The rules, in order:
1. exits: no step left, the lead opted out, the lead suppressed on the step's channel;
2. a touch of this step already exists (sent or placed, or sending when a worker died): repair;
3. the step needs an address the lead does not have (`Channel.address_kind`): skip it;
4. the cadence's sending window, and for automatic steps of channels that keep contact hours
   (`Channel.contact_hours`), the lead's contact hours in every zone it may be in: defer;
5. consent where the channel requires it (`Channel.requires_consent`): pause as no_consent;
6. automatic steps: the channel can send, and a mailbox sender is there and not held: pause;
7. throttles: the mailbox's rolling daily cap and the per-recipient-domain rate (automatic
   steps of mailbox and email-address channels), the lead's touches per day (every step): defer;
8. the step: an automatic one is sent, a manual one opens a task for the lead's owner.
Manual steps never wait for contact hours: a person decides when to act on the task.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Union

from sequencer.cadences import calendar_for_lead
from sequencer.calendar import ContactHours, LocalCalendar, NoContactHours, NoOpening, next_phone_opening
from sequencer.channels import Channel, StepScope
from sequencer.consent import NO_CONSENT, has_consent
from sequencer.models import EnrollmentState, TouchStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sequencer.models import Enrollment, Lead, Step, Touch

# Touches that count towards throttles: anything that reached (or may have reached) the lead;
# a placed one is an attempt on the lead already (a call that rang), whether it ends sent or not.
COUNTED = frozenset({TouchStatus.sending, TouchStatus.placed, TouchStatus.sent, TouchStatus.delivered,
                     TouchStatus.unknown, TouchStatus.completed, TouchStatus.pending})
# A touch in one of these states is the step done: the enrollment moves on from when it went.
# Placed too: the cadence moves on once the provider has it, not when its plugin reports it done.
DONE = frozenset({TouchStatus.placed, TouchStatus.sent, TouchStatus.delivered, TouchStatus.completed,
                  TouchStatus.skipped})
# A touch in one of these states may still be (re)sent by the engine.
SENDABLE = frozenset({TouchStatus.pending, TouchStatus.failed})

# The address kind that makes a channel an email channel: its messages are commercial email
# (HTML, the postal footer on a rep's draft too) and count towards recipient-domain rates.
EMAIL_ADDRESS = "email"
# Per address kind: the lead's field that holds it, the flag that marks it unusable, and its name in words.
ADDRESS_FIELDS = {"email": ("email", "email_invalid", "email address"),
                  "phone": ("phone", "phone_wrong", "phone number")}

# When a throttle defers a step, how long before it is looked at again.
MAILBOX_CAP_RETRY = timedelta(minutes=30)
DOMAIN_RATE_RETRY = timedelta(minutes=10)
LEAD_DAILY_RETRY = timedelta(hours=1)

# Enrollment.paused_reason values set here (consent's NO_CONSENT besides).
NO_SENDING_WINDOW = "no_sending_window"
NO_CONTACT_HOURS = "no_contact_hours"
CHANNEL_UNAVAILABLE = "channel_unavailable"
NO_MAILBOX = "no_mailbox"
MAILBOX_HELD = "mailbox_held"


@dataclass(frozen=True)
class Rules:
    """What the engine needs of a step's channel: its declaration, and whether it can send now."""

    address_kind: Literal["email", "phone"] | None = None
    address_required: StepScope = "all"
    requires_consent: StepScope = "none"
    contact_hours: bool = False
    sender_kind: Literal["mailbox", "number"] | None = None
    task_kind: str = "task"
    task_verb: str = "Task for"
    task_priority: int = 10
    available: bool = False

    @classmethod
    def of(cls, channel: Channel | None, unavailable_reason: str | None) -> Rules:
        """Read a channel's declaration; a step on a channel nobody declares gets the base class's and cannot send."""
        declared = channel if channel is not None else Channel
        return cls(address_kind=declared.address_kind, address_required=declared.address_required,
                   requires_consent=declared.requires_consent, contact_hours=declared.contact_hours,
                   sender_kind=declared.sender_kind, task_kind=declared.task_kind, task_verb=declared.task_verb,
                   task_priority=declared.task_priority,
                   available=channel is not None and unavailable_reason is None)

    @property
    def email(self) -> bool:
        """Tell whether the channel writes to the lead's email address."""
        return self.address_kind == EMAIL_ADDRESS


@dataclass(frozen=True)
class Facts:
    """What the batch loaded about one enrollment, as the decision needs it."""

    enrollment_id: int
    lead_id: int
    # The current step; None when the enrollment is past its last one.
    step_key: str | None
    channel: str | None
    automatic: bool
    rules: Rules
    opted_out: bool
    # Why the lead is suppressed on the step's channel, or None.
    blocked: str | None
    # The address kinds the lead has a usable value of ("email", "phone").
    addresses: frozenset[str]
    consented: bool
    calendar: LocalCalendar
    # The lead's candidate zones, for contact hours (every one of them must be inside).
    zones: tuple[str, ...]
    domain: str | None
    mailbox_id: int | None = None
    mailbox_held: bool = False
    mailbox_cap: int = 0
    # The touch this step already has (a retry, a crash's leftover), if any.
    touch_status: TouchStatus | None = None
    touch_sent_at: datetime | None = None

    @property
    def own(self) -> int:
        """Return 1 when the step's own touch is already in the counts: a retry must not throttle itself."""
        return 1 if self.touch_status in COUNTED else 0


@dataclass(frozen=True)
class Limits:
    """The batch's clock and the configured limits."""

    now: datetime
    contact_hours: ContactHours
    max_per_lead_per_day: int
    # Emails per recipient domain per hour; 0 for no limit.
    max_per_domain_per_hour: int = 0


@dataclass
class Counts:
    """Touches counted towards throttles: what the database had when the batch was loaded, plus the batch's own.

    mailbox: in the last 24 hours, per mailbox; domain: in the last hour, per recipient domain;
    lead: in the last 24 hours, per lead.
    """

    mailbox: Counter[int] = field(default_factory=Counter)
    domain: Counter[str] = field(default_factory=Counter)
    lead: Counter[int] = field(default_factory=Counter)

    def record(self, facts: Facts, decision: Decision) -> None:
        """Count a decision's touch (a retried touch was counted already)."""
        if not isinstance(decision, (Send, OpenTask)):
            return
        new = 1 - facts.own
        self.lead[facts.lead_id] += new
        if isinstance(decision, Send):
            if facts.rules.sender_kind == "mailbox" and facts.mailbox_id is not None:
                self.mailbox[facts.mailbox_id] += new
            if facts.rules.email and facts.domain:
                self.domain[facts.domain] += new


@dataclass(frozen=True)
class Exit:
    """End the enrollment."""

    state: EnrollmentState
    reason: str


@dataclass(frozen=True)
class Repair:
    """The step's touch exists: move on from when it went (`advance_from`), or leave it for review (None)."""

    advance_from: datetime | None


@dataclass(frozen=True)
class Skip:
    """Record the step as skipped and move on."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """Look at the enrollment again at `until`."""

    until: datetime
    why: str


@dataclass(frozen=True)
class Pause:
    """Pause the enrollment until something outside the engine resumes it; `detail` is for the log."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Send:
    """Render the step and send it."""


@dataclass(frozen=True)
class OpenTask:
    """Open a task for the lead's owner; the enrollment waits for it."""


Decision = Union[Exit, Repair, Skip, Defer, Pause, Send, OpenTask]


def decide(facts: Facts, counts: Counts, limits: Limits) -> Decision:
    """Return what to do with one due enrollment now (see the module docstring for the rules' order)."""
    now = limits.now
    if facts.step_key is None:
        return Exit(EnrollmentState.finished, "completed")
    if facts.opted_out:
        return Exit(EnrollmentState.opted_out, "opted out")
    if facts.blocked is not None:
        return Exit(EnrollmentState.removed, f"suppressed: {facts.blocked}")
    if facts.touch_status is not None and facts.touch_status not in SENDABLE:
        return Repair(facts.touch_sent_at or now if facts.touch_status in DONE else None)
    rules = facts.rules
    if _applies(rules.address_required, facts.automatic) and rules.address_kind is not None \
            and rules.address_kind not in facts.addresses:
        return Skip(f"the lead has no valid {ADDRESS_FIELDS[rules.address_kind][2]}")
    gated = rules.contact_hours and facts.automatic
    try:
        first = _opening(facts, limits, now, gated)
    except NoContactHours as exc:
        return Pause(NO_CONTACT_HOURS, str(exc))
    except NoOpening as exc:
        return Pause(NO_SENDING_WINDOW, str(exc))
    except ValueError as exc:  # no zone known for the lead's contact hours
        return Pause(NO_CONTACT_HOURS, str(exc))
    if first > now:
        return Defer(first, "contact hours" if gated else "sending window")
    if _applies(rules.requires_consent, facts.automatic) and not facts.consented:
        return Pause(NO_CONSENT)
    own = facts.own
    if facts.automatic:
        if not rules.available:
            return Pause(CHANNEL_UNAVAILABLE)
        if rules.sender_kind == "mailbox":
            if facts.mailbox_id is None:
                return Pause(NO_MAILBOX)
            if facts.mailbox_held:
                return Pause(MAILBOX_HELD)
            if counts.mailbox[facts.mailbox_id] - own >= facts.mailbox_cap:
                # Caps are a rolling 24 hours, as providers count them; look again later.
                return _defer(facts, limits, MAILBOX_CAP_RETRY, gated, "mailbox daily cap")
        domain_limit = limits.max_per_domain_per_hour
        if rules.email and domain_limit and facts.domain and counts.domain[facts.domain] - own >= domain_limit:
            return _defer(facts, limits, DOMAIN_RATE_RETRY, gated, "recipient domain rate")
    if counts.lead[facts.lead_id] - own >= limits.max_per_lead_per_day:
        return _defer(facts, limits, LEAD_DAILY_RETRY, gated, "touches per lead per day")
    return Send() if facts.automatic else OpenTask()


def facts_for(e: Enrollment, step: Step | None, rules: Rules, blocked: str | None, touch: Touch | None) -> Facts:
    """Read one enrollment's facts from its loaded rows (e.lead, e.mailbox and e.cadence with its steps)."""
    lead, mailbox = e.lead, e.mailbox
    return Facts(
        enrollment_id=e.id, lead_id=lead.id, step_key=step.key if step else None, channel=step.channel if step else None,
        automatic=step is not None and step.action == "auto", rules=rules, opted_out=lead.opted_out_at is not None,
        blocked=blocked, addresses=frozenset(kind for kind in ADDRESS_FIELDS if lead_address(lead, kind)),
        consented=step is not None and has_consent(lead, step.channel),
        calendar=calendar_for_lead(e.cadence.schedule, lead), zones=lead.zones(), domain=lead.domain,
        mailbox_id=e.mailbox_id, mailbox_held=mailbox is not None and mailbox.state == "held",
        mailbox_cap=mailbox.daily_cap if mailbox is not None else 0,
        touch_status=TouchStatus(touch.status) if touch is not None else None,
        touch_sent_at=touch.sent_at if touch is not None else None,
    )


def lead_address(lead: Lead, kind: str) -> str | None:
    """Return the lead's address of this kind ("email", "phone") when it has a usable one."""
    value_field, invalid_flag, _words = ADDRESS_FIELDS[kind]
    value = getattr(lead, value_field)
    return value if value and not getattr(lead, invalid_flag) else None


def _applies(scope: StepScope, automatic: bool) -> bool:
    return scope == "all" or (scope == "automatic" and automatic)


def _opening(facts: Facts, limits: Limits, at: datetime, gated: bool) -> datetime:
    return opening(facts.calendar, facts.zones, limits.contact_hours if gated else None, at)


@functools.lru_cache(maxsize=4096)
def opening(calendar: LocalCalendar, zones: tuple[str, ...], contact_hours: ContactHours | None,
            at: datetime) -> datetime:
    """Return the first instant >= `at` in the sending window and, when given, the lead's contact hours.

    Raises NoContactHours when the lead's zones share no contact hours, NoOpening when the window
    never opens (or never meets them), ValueError when contact hours apply and no zone is known.
    Remembered: a batch asks at one instant for leads that share a handful of calendars and zones.
    """
    if contact_hours is not None:
        return next_phone_opening(calendar, zones, contact_hours, at)
    return at if calendar.is_open(at) else calendar.next_opening(at)


def _defer(facts: Facts, limits: Limits, wait: timedelta, gated: bool, why: str) -> Decision:
    try:
        return Defer(_opening(facts, limits, limits.now + wait, gated), why)
    except (NoOpening, ValueError) as exc:
        return Pause(NO_SENDING_WINDOW, str(exc))


def decide_all(batch: Mapping[int, Facts], counts: Counts, limits: Limits) -> dict[int, Decision]:
    """Decide a batch in order, each decision counted before the next is made."""
    decisions = {}
    for key, facts in batch.items():
        decisions[key] = decision = decide(facts, counts, limits)
        counts.record(facts, decision)
    return decisions
