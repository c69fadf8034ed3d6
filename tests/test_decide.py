"""The engine's decision for one enrollment (sequencer.decide): rules and properties, with no database."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.builtin import ManualSms, ManualTask, ManualVoice
from sequencer.calendar import ContactHours, LocalCalendar, Window, in_contact_hours
from sequencer.channels import Channel
from sequencer.consent import NO_CONSENT
from sequencer.decide import (
    CHANNEL_UNAVAILABLE,
    MAILBOX_HELD,
    NO_CONTACT_HOURS,
    NO_MAILBOX,
    Counts,
    Decision,
    Defer,
    Exit,
    Facts,
    Limits,
    OpenTask,
    Pause,
    Repair,
    Rules,
    Send,
    Skip,
    decide,
    decide_all,
)
from sequencer.models import EnrollmentState, TouchStatus

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # a Monday; 09:00 in New York
HOURS = ContactHours()  # 08:00-21:00
ALWAYS = LocalCalendar(Window.ALWAYS, ("UTC",), None)
NEW_YORK = ("America/New_York",)



class Mail(Channel):
    """Declared as the email plugin declares its channel (the core's tests do not import plugins)."""

    name = "email"
    address_kind = "email"
    address_required = "automatic"
    task_kind = "email"
    task_verb = "Email"
    task_priority = 20
    sender_kind = "mailbox"


# Each channel's declaration, able to send.
EMAIL = Rules.of(Mail(), None)
SMS = Rules.of(ManualSms(), None)
VOICE = Rules.of(ManualVoice(), None)
TODO = Rules.of(ManualTask(), None)
RULES = {"email": EMAIL, "sms": SMS, "voice": VOICE, "task": TODO}


def facts(channel: str = "email", *, automatic: bool = True, **changes) -> Facts:
    """A due enrollment that may go out now, unless `changes` say otherwise."""
    values = dict(enrollment_id=1, lead_id=1, step_key="s1", channel=channel, automatic=automatic,
                  rules=RULES[channel], opted_out=False, blocked=None, addresses=frozenset({"email", "phone"}),
                  consented=True, calendar=ALWAYS, zones=NEW_YORK, domain="corp.example", mailbox_id=1,
                  mailbox_held=False, mailbox_cap=100)
    values.update(changes)
    return Facts(**values)


def limits(now: dt.datetime = NOW, **changes) -> Limits:
    return Limits(**{"now": now, "contact_hours": HOURS, "max_per_lead_per_day": 3, **changes})


# -- the rules, one by one ------------------------------------------------------------------


def test_the_declarations_the_rules_read() -> None:
    assert (EMAIL.address_kind, EMAIL.address_required, EMAIL.sender_kind, EMAIL.task_kind, EMAIL.email) == \
        ("email", "automatic", "mailbox", "email", True)
    assert (SMS.requires_consent, SMS.contact_hours, SMS.sender_kind, SMS.email) == ("all", True, "number", False)
    # The built-in sms is manual-only: it cannot send by itself, whatever its declaration.
    assert Rules.of(ManualSms(), "no plugin sends sms").available is False
    # A channel nobody declares: the base class's rules, and nothing automatic can go.
    assert Rules.of(None, None) == Rules()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"step_key": None}, Exit(EnrollmentState.finished, "completed")),
    ({"opted_out": True, "blocked": "phone is suppressed"}, Exit(EnrollmentState.opted_out, "opted out")),
    ({"blocked": "email x is suppressed on all channels", "addresses": frozenset()},
     Exit(EnrollmentState.removed, "suppressed: email x is suppressed on all channels")),
    ({"touch_status": TouchStatus.sent, "touch_sent_at": NOW - dt.timedelta(hours=1)},
     Repair(NOW - dt.timedelta(hours=1))),
    ({"touch_status": TouchStatus.skipped}, Repair(NOW)),
    # Placed: the provider has it (a drop's call), so the step is done; nothing for a person to review.
    ({"touch_status": TouchStatus.placed}, Repair(NOW)),
    ({"touch_status": TouchStatus.sending}, Repair(None)),
    ({"touch_status": TouchStatus.unknown}, Repair(None)),
    ({"addresses": frozenset({"phone"})}, Skip("the lead has no valid email address")),
    ({"mailbox_id": None}, Pause(NO_MAILBOX)),
    ({"mailbox_held": True}, Pause(MAILBOX_HELD)),
    ({"rules": dataclasses.replace(EMAIL, available=False)}, Pause(CHANNEL_UNAVAILABLE)),
    ({"touch_status": TouchStatus.failed}, Send()),
    ({}, Send()),
])
def test_rules_in_order(changes: dict, expected: Decision) -> None:
    assert decide(facts(**changes), Counts(), limits()) == expected


def test_a_manual_email_needs_no_address_or_mailbox_a_text_needs_a_number() -> None:
    # A rep can look an address up and send by hand; nobody can text a lead without a number.
    assert decide(facts(automatic=False, addresses=frozenset(), mailbox_id=None), Counts(), limits()) == OpenTask()
    assert decide(facts("sms", addresses=frozenset({"email"})), Counts(), limits()) == \
        Skip("the lead has no valid phone number")
    assert decide(facts("voice", automatic=False, addresses=frozenset({"email"})), Counts(), limits()) == \
        Skip("the lead has no valid phone number")
    assert decide(facts("task", automatic=False, addresses=frozenset()), Counts(), limits()) == OpenTask()


def test_texts_wait_for_contact_hours_in_the_leads_zone() -> None:
    night = dt.datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 22:00 in New York
    decision = decide(facts("sms"), Counts(), limits(night))
    # 08:00 EST is 13:00 UTC; the cadence window is always open, so contact hours decide.
    assert decision == Defer(dt.datetime(2026, 3, 2, 13, 0, tzinfo=UTC), "contact hours")
    # Email has no contact hours.
    assert decide(facts("email"), Counts(), limits(night)) == Send()


def test_contact_hours_across_the_dst_change_keep_local_time() -> None:
    # Sunday 8 March 2026, 03:00 UTC is 22:00 EST on Saturday; New York moves to EDT at 02:00 local.
    night = dt.datetime(2026, 3, 8, 3, 0, tzinfo=UTC)
    decision = decide(facts("sms"), Counts(), limits(night))
    assert decision == Defer(dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC), "contact hours")  # 08:00 EDT


def test_an_ambiguous_number_goes_only_when_every_candidate_zone_is_inside() -> None:
    # 13:30 UTC: 08:30 in New York, 05:30 in Los Angeles.
    at = dt.datetime(2026, 3, 2, 13, 30, tzinfo=UTC)
    zones = ("America/New_York", "America/Los_Angeles")
    assert decide(facts("sms", zones=zones), Counts(), limits(at)) == \
        Defer(dt.datetime(2026, 3, 2, 16, 0, tzinfo=UTC), "contact hours")  # 08:00 in Los Angeles
    assert decide(facts("sms", zones=zones[:1]), Counts(), limits(at)) == Send()


def test_zones_with_no_common_contact_hour_pause_and_say_why() -> None:
    narrow = ContactHours.parse("09:00", "17:00")
    decision = decide(facts("sms", zones=("Pacific/Honolulu", "Asia/Kolkata")), Counts(),
                      limits(contact_hours=narrow))
    assert isinstance(decision, Pause) and decision.reason == NO_CONTACT_HOURS
    assert "set the lead's timezone" in decision.detail
    decision = decide(facts("sms", zones=()), Counts(), limits())
    assert isinstance(decision, Pause) and decision.reason == NO_CONTACT_HOURS and "time zone" in decision.detail


def test_consent_gates_texts_and_dialing_not_a_reps_call() -> None:
    assert decide(facts("sms", consented=False), Counts(), limits()) == Pause(NO_CONSENT)
    assert decide(facts("sms", automatic=False, consented=False), Counts(), limits()) == Pause(NO_CONSENT)
    assert decide(facts("voice", consented=False), Counts(), limits()) == Pause(NO_CONSENT)
    assert decide(facts("voice", automatic=False, consented=False), Counts(), limits()) == OpenTask()
    assert decide(facts("email", consented=False), Counts(), limits()) == Send()


def test_throttles() -> None:
    full_mailbox = Counts(mailbox=Counter({1: 100}))
    assert decide(facts(), full_mailbox, limits()) == Defer(NOW + dt.timedelta(minutes=30), "mailbox daily cap")
    # A text does not go from the mailbox: its cap does not apply.
    assert decide(facts("sms"), full_mailbox, limits()) == Send()
    # A retry is counted already: it must not throttle itself.
    assert decide(facts(touch_status=TouchStatus.pending), Counts(mailbox=Counter({1: 100})), limits()) == Send()
    assert decide(facts(touch_status=TouchStatus.pending), Counts(mailbox=Counter({1: 101})), limits()) == \
        Defer(NOW + dt.timedelta(minutes=30), "mailbox daily cap")
    busy_domain = Counts(domain=Counter({"corp.example": 5}))
    assert decide(facts(), busy_domain, limits(max_per_domain_per_hour=5)) == \
        Defer(NOW + dt.timedelta(minutes=10), "recipient domain rate")
    assert decide(facts("sms"), busy_domain, limits(max_per_domain_per_hour=5)) == Send()
    assert decide(facts(), busy_domain, limits()) == Send()  # 0: no domain limit
    # The per-lead limit holds on every channel, a rep's tasks included.
    busy_lead = Counts(lead=Counter({1: 3}))
    for channel in RULES:
        assert decide(facts(channel, automatic=False), busy_lead, limits()) == \
            Defer(NOW + dt.timedelta(hours=1), "touches per lead per day")


def test_a_throttled_text_is_deferred_into_contact_hours() -> None:
    evening = dt.datetime(2026, 3, 3, 1, 30, tzinfo=UTC)  # 20:30 in New York; an hour later is closed
    assert decide(facts("sms"), Counts(lead=Counter({1: 3})), limits(evening)) == \
        Defer(dt.datetime(2026, 3, 3, 13, 0, tzinfo=UTC), "touches per lead per day")


def test_decide_all_counts_each_decision_before_the_next() -> None:
    batch = {i: facts(enrollment_id=i, lead_id=i) for i in range(5)}
    decisions = decide_all(batch, counts := Counts(mailbox=Counter({1: 97})), limits())
    assert [type(d) for d in decisions.values()] == [Send, Send, Send, Defer, Defer]
    assert counts.mailbox[1] == 100 and counts.domain["corp.example"] == 3


# -- properties over random enrollments -----------------------------------------------------

CHANNELS = list(RULES)
ZONE_SETS = [("UTC",), NEW_YORK, ("America/New_York", "America/Los_Angeles"), ("Asia/Kolkata",),
             ("Europe/Berlin",), ("Australia/Sydney",)]
TIMES = [dt.time(h) for h in range(24)]


@st.composite
def calendars(draw) -> LocalCalendar:
    start = draw(st.sampled_from(TIMES[:20]))
    end = draw(st.sampled_from([t for t in TIMES if t > start] + [dt.time(0)]))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    return LocalCalendar(Window(days, start, end), draw(st.sampled_from(ZONE_SETS)), None)


@st.composite
def random_facts(draw, enrollment_id: int = 1) -> Facts:
    channel = draw(st.sampled_from(CHANNELS))
    return Facts(
        enrollment_id=enrollment_id, lead_id=draw(st.integers(1, 4)), step_key=draw(st.sampled_from(["s1", None])),
        channel=channel, automatic=draw(st.booleans()),
        rules=dataclasses.replace(RULES[channel], available=draw(st.booleans())),
        opted_out=draw(st.booleans()), blocked=draw(st.sampled_from([None, None, "phone +1 is suppressed"])),
        addresses=draw(st.frozensets(st.sampled_from(["email", "phone"]))), consented=draw(st.booleans()),
        calendar=draw(calendars()), zones=draw(st.sampled_from(ZONE_SETS)),
        domain=draw(st.sampled_from(["a.example", "b.example", None])), mailbox_id=draw(st.sampled_from([1, 2, None])),
        mailbox_held=draw(st.booleans()), mailbox_cap=draw(st.integers(0, 5)),
        touch_status=draw(st.sampled_from([None, None, *TouchStatus])),
    )


instants = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31),
                        timezones=st.just(UTC))


def sends_now(f: Facts, decision: Decision) -> bool:
    return isinstance(decision, (Send, OpenTask))


@settings(max_examples=300, deadline=None)
@given(f=random_facts(), now=instants)
def test_never_sends_outside_the_window_or_the_leads_contact_hours(f: Facts, now: dt.datetime) -> None:
    decision = decide(f, Counts(), limits(now))
    if isinstance(decision, Send):
        assert f.calendar.is_open(now)
        if f.rules.contact_hours:
            assert in_contact_hours(f.zones, HOURS, now)
    if isinstance(decision, Defer):
        assert decision.until > now


@settings(max_examples=300, deadline=None)
@given(f=random_facts(), now=instants)
def test_never_contacts_without_consent_where_it_is_required(f: Facts, now: dt.datetime) -> None:
    decision = decide(f, Counts(), limits(now))
    scope = f.rules.requires_consent
    if sends_now(f, decision) and (scope == "all" or (scope == "automatic" and isinstance(decision, Send))):
        assert f.consented


@settings(max_examples=300, deadline=None)
@given(f=random_facts(), now=instants)
def test_a_suppressed_or_opted_out_lead_gets_no_send_and_no_task(f: Facts, now: dt.datetime) -> None:
    decision = decide(f, Counts(), limits(now))
    if f.opted_out or f.blocked:
        assert not sends_now(f, decision)
        assert isinstance(decision, Exit) or f.step_key is None


@settings(max_examples=200, deadline=None)
@given(f=random_facts(), now=instants, consented=st.booleans())
def test_a_manual_call_opens_its_task_whatever_the_consent_and_the_hour(f: Facts, now: dt.datetime,
                                                                        consented: bool) -> None:
    call = dataclasses.replace(f, channel="voice", rules=VOICE, automatic=False, step_key="call", opted_out=False,
                               blocked=None, addresses=frozenset({"phone"}), consented=consented, calendar=ALWAYS,
                               touch_status=None)
    assert decide(call, Counts(), limits(now)) == OpenTask()


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(random_facts(), min_size=1, max_size=30), now=instants,
       base=st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 4)))
def test_throttle_counts_never_pass_their_limits_over_a_batch(batch: list[Facts], now: dt.datetime,
                                                               base: tuple[int, int, int]) -> None:
    cap = 4  # every mailbox's, below the drawn caps' maximum so that some are full
    batch = [dataclasses.replace(f, enrollment_id=i, mailbox_cap=cap, calendar=ALWAYS) for i, f in enumerate(batch)]
    mailbox_base, lead_base, domain_base = base
    # What the database counted: a base, plus each retried touch of the batch (it counts already).
    counts = Counts(mailbox=Counter({m: mailbox_base for m in (1, 2)}), lead=Counter({n: lead_base for n in range(1, 5)}),
                    domain=Counter({d: domain_base for d in ("a.example", "b.example")}))
    for f in batch:
        if f.own:
            counts.lead[f.lead_id] += 1
            if f.rules.sender_kind == "mailbox" and f.mailbox_id:
                counts.mailbox[f.mailbox_id] += 1
            if f.rules.email and f.domain:
                counts.domain[f.domain] += 1
    before = Counts(Counter(counts.mailbox), Counter(counts.domain), Counter(counts.lead))
    limit = limits(now, max_per_lead_per_day=3, max_per_domain_per_hour=4)
    decide_all({f.enrollment_id: f for f in batch}, counts, limit)
    for mailbox, n in counts.mailbox.items():
        assert n <= max(before.mailbox[mailbox], cap)
    for lead, n in counts.lead.items():
        assert n <= max(before.lead[lead], 3)
    for domain, n in counts.domain.items():
        assert n <= max(before.domain[domain], 4)
