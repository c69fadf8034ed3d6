"""The engine: set-based batches, throttles, windows, retries, at-most-once sending and crash recovery."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import pytest
import sqlalchemy as sa

from sequencer.engine import BatchReport, Engine
from sequencer.mailsink import MailSink, SinkHandler
from sequencer.messages import choose_variant
from sequencer.models import Enrollment, Lead, Mailbox, Step, Suppression, Task, Touch, TouchAttempt
from tests.support import world
from tests.support.world import (
    ALWAYS_OPEN,
    REP,
    apply,
    enroll_csv,
    enroll_emails,
    enrollment_of,
    recipients,
    touches,
    utc,
)

ONE_EMAIL = 'name = "one"\n' + ALWAYS_OPEN + """
[[steps]]
key = "intro"
channel = "email"
subject = "Hello {{ lead.first_name | default('there') }}"
body = "Hi {{ lead.first_name | default('there') }}, a short note."
"""


def team(cli, *, daily_cap: int = 1000) -> None:
    """The rep and a mailbox with room for the biggest batch here (the configured default cap is 200)."""
    world.team(cli, daily_cap=daily_cap)


def attempts(runtime) -> list[TouchAttempt]:
    with runtime.session() as s:
        return list(s.scalars(sa.select(TouchAttempt).order_by(TouchAttempt.touch_id, TouchAttempt.number)))


@dataclass
class ScriptedHandler(SinkHandler):
    """An SMTP server that gives the scripted replies first, then accepts like the sink.

    `rcpt` replies to RCPT TO; `data` replies after the message data, where "drop" closes the
    connection after the whole message arrived, without a reply.
    """

    rcpt: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    dropped: list[bytes] = field(default_factory=list)
    # Called with each message the server accepts, before it answers (something else happening meanwhile).
    on_data: Callable[[bytes], None] | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: ANN001
        if self.rcpt:
            return self.rcpt.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        if self.data:
            reply = self.data.pop(0)
            if reply != "drop":
                return reply
            self.dropped.append(bytes(envelope.original_content or envelope.content))
            server.transport.close()
            return "250 OK but nobody hears it"
        if self.on_data is not None:
            self.on_data(bytes(envelope.original_content or envelope.content))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def scripted():
    """A scripted SMTP server that the rep's mailbox sends through (its own transport)."""
    handler = ScriptedHandler()
    with MailSink(handler=handler) as sink:
        yield sink


def _shape(statement: str) -> str:
    """Return a statement with its parameter lists collapsed, so batches of any size compare."""
    return re.sub(r"\((?:\s*(?:\?|%\(\w+\)s)(?:::\w+)?\s*,?)+\)", "(...)", statement)


def route_mailbox(runtime, sink: MailSink) -> None:
    with runtime.session() as s:
        s.execute(sa.update(Mailbox).values(transport={"port": sink.port}))


# -- set-based batches -----------------------------------------------------------------------


def test_statements_per_batch_do_not_grow_with_batch_size(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, [f"lead{i}@corp{i % 7}.example" for i in range(210)], "one", clock.now())

    counts = {}
    for size in (10, 200):
        statements: list[str] = []

        def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            statements.append(statement)

        sa.event.listen(runtime.engine, "before_cursor_execute", count)
        try:
            report = Engine(runtime, batch_size=size).run_batch()
        finally:
            sa.event.remove(runtime.engine, "before_cursor_execute", count)
        assert (report.claimed, report.sent) == (size, size)
        counts[size] = statements
    assert len(smtp_sink.messages()) == 210
    small, big = Counter(map(_shape, counts[10])), Counter(map(_shape, counts[200]))
    grew = {text[:100]: (small[text], n) for text, n in big.items() if n != small[text]}
    assert len(counts[10]) == len(counts[200]), f"statements run more often in the bigger batch: {grew}"


# -- throttles and windows -------------------------------------------------------------------

FOUR_EMAILS = 'name = "four"\n' + ALWAYS_OPEN + "".join(f"""
[[steps]]
key = "e{n}"
channel = "email"
subject = "Note {n}"
body = "Note number {n}."
""" for n in range(1, 5))


def test_per_lead_daily_maximum_defers_the_extra_touch(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    assert runtime.settings.sending.max_touches_per_lead_per_day == 3
    team(cli)
    apply(cli, tmp_path, FOUR_EMAILS)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "four", start)

    Engine(runtime).run_until_idle()
    assert [m["Subject"] for m in smtp_sink.messages()] == ["Note 1", "Note 2", "Note 3"]
    waiting = enrollment_of(runtime, "ann@corp.example")
    assert (waiting.state, waiting.step_position) == ("active", 3)
    assert waiting.next_due_at > start
    assert [t.step_key for t in touches(runtime)] == ["e1", "e2", "e3"]

    clock.set(start + timedelta(hours=23))  # still inside the rolling 24 hours
    Engine(runtime).run_until_idle()
    assert len(smtp_sink.messages()) == 3
    assert enrollment_of(runtime, "ann@corp.example").next_due_at > clock.now()

    clock.set(start + timedelta(hours=24))
    Engine(runtime).run_until_idle()
    assert [m["Subject"] for m in smtp_sink.messages()][-1] == "Note 4"
    assert enrollment_of(runtime, "ann@corp.example").state == "finished"


def test_mailbox_daily_cap_defers_the_excess(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli, daily_cap=2)
    apply(cli, tmp_path, ONE_EMAIL)
    start = clock.now()
    emails = ["ann@a.example", "bob@b.example", "cat@c.example"]
    enroll_emails(cli, tmp_path, emails, "one", start)

    report = Engine(runtime).run_until_idle()
    assert (report.sent, report.deferred) == (2, 1)
    sent = recipients(smtp_sink)
    [late] = set(emails) - set(sent)
    assert enrollment_of(runtime, late).state == "active"
    assert touches(runtime, late) == []

    clock.set(start + timedelta(hours=23, minutes=30))
    Engine(runtime).run_until_idle()
    assert len(smtp_sink.messages()) == 2

    clock.set(start + timedelta(hours=24))
    Engine(runtime).run_until_idle()
    assert recipients(smtp_sink) == [*sent, late]
    assert {enrollment_of(runtime, e).state for e in emails} == {"finished"}


OFFICE_HOURS = ONE_EMAIL.replace('start = "00:00"', 'start = "09:00"').replace('end = "24:00"', 'end = "17:00"') \
    .replace('days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]', 'days = ["mon", "tue", "wed", "thu", "fri"]')


def test_touch_due_outside_the_window_moves_to_the_next_opening(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, OFFICE_HOURS)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", utc("2026-03-06T16:00:00Z"))  # a Friday
    assert enrollment_of(runtime, "ann@corp.example").next_due_at == utc("2026-03-06T16:00:00Z")

    clock.set(utc("2026-03-06T17:00:00Z"))  # the worker comes late: windows exclude their end
    report = Engine(runtime).run_until_idle()
    assert (report.sent, report.deferred) == (0, 1)
    deferred = enrollment_of(runtime, "ann@corp.example")
    assert (deferred.state, deferred.next_due_at) == ("active", utc("2026-03-09T09:00:00Z"))
    assert smtp_sink.messages() == [] and touches(runtime) == []

    clock.set(utc("2026-03-09T09:00:00Z"))
    Engine(runtime).run_until_idle()
    assert recipients(smtp_sink) == ["ann@corp.example"]


# -- failures, retries and at-most-once --------------------------------------------------------


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_temporary_refusal_is_retried_as_a_new_attempt(cli, runtime, clock, tmp_path, scripted, stage) -> None:
    team(cli)
    route_mailbox(runtime, scripted)
    getattr(scripted.handler, stage).append("451 4.3.0 Temporary failure, try again later")
    apply(cli, tmp_path, ONE_EMAIL)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", start)

    report = Engine(runtime).run_until_idle()
    assert (report.sent, report.retried) == (0, 1)
    [touch] = touches(runtime)
    [first] = attempts(runtime)
    assert touch.status == "pending" and "451" in touch.error
    assert (first.number, first.retry_at) == (1, start + timedelta(seconds=60))
    assert "451" in first.error
    assert enrollment_of(runtime, "ann@corp.example").next_due_at == start + timedelta(seconds=60)

    clock.set(start + timedelta(seconds=59))
    Engine(runtime).run_until_idle()
    assert len(attempts(runtime)) == 1

    clock.set(start + timedelta(seconds=60))
    Engine(runtime).run_until_idle()
    assert [(a.number, a.error is None) for a in attempts(runtime)] == [(1, False), (2, True)]
    [touch] = touches(runtime)
    assert touch.status == "sent"
    assert recipients(scripted) == ["ann@corp.example"]
    assert scripted.messages()[0]["Message-ID"] == touch.message_id
    assert enrollment_of(runtime, "ann@corp.example").state == "finished"


def test_retries_back_off_then_the_enrollment_fails(cli, runtime, clock, tmp_path, scripted) -> None:
    max_attempts = runtime.settings.engine.max_attempts
    base = runtime.settings.engine.retry_base_seconds
    team(cli)
    route_mailbox(runtime, scripted)
    scripted.handler.rcpt.extend(["451 4.7.1 Greylisted, please try again"] * max_attempts)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", clock.now())

    for number in range(1, max_attempts):
        attempted_at = clock.now()
        Engine(runtime).run_until_idle()
        last = attempts(runtime)[-1]
        assert last.number == number
        assert last.retry_at == attempted_at + timedelta(seconds=base * 2 ** (number - 1))
        clock.set(last.retry_at)
    Engine(runtime).run_until_idle()

    assert [a.number for a in attempts(runtime)] == list(range(1, max_attempts + 1))
    assert attempts(runtime)[-1].retry_at is None
    [touch] = touches(runtime)
    assert touch.status == "failed"
    failed = enrollment_of(runtime, "ann@corp.example")
    assert failed.state == "failed"
    assert f"failed after {max_attempts} attempts" in failed.exit_reason and "451" in failed.exit_reason
    clock.advance(timedelta(days=2))
    Engine(runtime).run_until_idle()
    assert len(attempts(runtime)) == max_attempts and scripted.messages() == []


def test_unknown_recipient_at_rcpt_suppresses_and_bounces(cli, runtime, clock, tmp_path, scripted) -> None:
    team(cli)
    route_mailbox(runtime, scripted)
    scripted.handler.rcpt.append("550 5.1.1 User unknown")
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", clock.now())

    Engine(runtime).run_until_idle()
    bounced = enrollment_of(runtime, "ann@corp.example")
    assert bounced.state == "bounced" and "5.1.1" in bounced.exit_reason
    [touch] = touches(runtime)
    assert touch.status == "failed"
    with runtime.session() as s:
        assert s.scalar(sa.select(Lead.email_invalid).where(Lead.email == "ann@corp.example")) is True
        assert s.scalars(sa.select(Suppression.value)).all() == ["ann@corp.example"]
    assert scripted.messages() == []


def test_lost_reply_after_the_data_is_unknown_and_never_resent(cli, runtime, clock, tmp_path, scripted) -> None:
    team(cli)
    route_mailbox(runtime, scripted)
    scripted.handler.data.append("drop")
    apply(cli, tmp_path, FOUR_EMAILS)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "four", clock.now())

    Engine(runtime).run_until_idle()
    assert len(scripted.handler.dropped) == 1  # the server has the whole message
    [touch] = touches(runtime)
    assert touch.status == "unknown"
    review = enrollment_of(runtime, "ann@corp.example")
    assert (review.state, review.paused_reason, review.next_due_at) == ("needs_review", "unknown_send", None)

    clock.advance(timedelta(days=3))
    Engine(runtime).run_until_idle()
    assert len(scripted.handler.dropped) == 1 and scripted.messages() == []
    assert [(t.step_key, t.status) for t in touches(runtime)] == [("e1", "unknown")]
    assert len(attempts(runtime)) == 1


GMAIL_ACCEPTED = "250 2.0.0 OK  1732681234 d9443c01a7336-21f2a8d0b3esi123456785ad.123 - gsmtp"
GMAIL_NO_SUCH_USER = ("550 5.1.1 The email account that you tried to reach does not exist. Please try "
                      "double-checking the recipient's email address for typos or unnecessary spaces.")
GMAIL_RATE_LIMITED = ("451 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your "
                      "IP address. To protect our users from spam, mail sent from your IP address has been "
                      "temporarily rate limited.")


@pytest.mark.parametrize("stage, reply, outcome", [
    ("data", GMAIL_ACCEPTED, ("sent", "finished")),
    ("rcpt", GMAIL_NO_SUCH_USER, ("failed", "bounced")),
    ("rcpt", GMAIL_RATE_LIMITED, ("failed", "failed")),
], ids=["accepted", "user-unknown", "gave-up"])
def test_long_server_replies_are_recorded(cli, runtime, clock, tmp_path, scripted, stage, reply, outcome) -> None:
    runtime.settings.engine.max_attempts = 1  # give up at once on a temporary refusal
    team(cli)
    route_mailbox(runtime, scripted)
    getattr(scripted.handler, stage).append(reply)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example", "bob@corp.example"], "one", clock.now())

    Engine(runtime).run_until_idle()
    first = touches(runtime, "ann@corp.example")[0]  # the first RCPT gets the scripted reply
    assert (first.status, enrollment_of(runtime, "ann@corp.example").state) == outcome
    assert reply[:3] in (first.provider_status or "") + (first.error or "")
    assert (touches(runtime, "bob@corp.example")[0].status, enrollment_of(runtime, "bob@corp.example").state) == (
        "sent", "finished")


def test_retry_is_not_throttled_by_its_own_touch(cli, runtime, clock, tmp_path, scripted) -> None:
    runtime.settings.sending.max_touches_per_lead_per_day = 1
    team(cli)
    route_mailbox(runtime, scripted)
    scripted.handler.rcpt.append("451 4.3.0 Temporary failure, try again later")
    apply(cli, tmp_path, ONE_EMAIL)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", start)
    Engine(runtime).run_until_idle()
    assert [a.number for a in attempts(runtime)] == [1]

    clock.set(start + timedelta(seconds=60))  # the retry is a second attempt of one touch, not a second touch
    Engine(runtime).run_until_idle()
    assert [a.number for a in attempts(runtime)] == [1, 2]
    assert recipients(scripted) == ["ann@corp.example"]


TWO_EMAILS = 'name = "two"\n' + ALWAYS_OPEN + """
[[steps]]
key = "e1"
channel = "email"
subject = "Note 1"
body = "Note number 1."

[[steps]]
key = "e2"
channel = "email"
wait = "1d"
subject = "Note 2"
body = "Note number 2."
"""


def test_reply_during_the_send_is_not_undone_by_settle(cli, runtime, clock, tmp_path, scripted) -> None:
    from sequencer.inbound import handle_email

    team(cli)
    route_mailbox(runtime, scripted)
    apply(cli, tmp_path, TWO_EMAILS)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "two", start)

    def lead_replies(_: bytes) -> None:
        # The lead answers an earlier thread while the worker is still talking to the SMTP server.
        reply = b"From: ann@corp.example\r\nTo: rep@acme.example\r\nSubject: Re: hello\r\n\r\nYes, call me.\r\n"
        with runtime.session() as s:
            assert handle_email(s, reply, now=start, plugins=runtime.plugins).kind == "reply"

    scripted.handler.on_data = lead_replies
    Engine(runtime).run_until_idle()
    assert recipients(scripted) == ["ann@corp.example"]
    assert [t.status for t in touches(runtime)] == ["sent"]
    assert enrollment_of(runtime, "ann@corp.example").state == "replied"

    scripted.handler.on_data = None
    clock.set(start + timedelta(days=2))
    Engine(runtime).run_until_idle()
    assert recipients(scripted) == ["ann@corp.example"]


# -- crash recovery and leases ---------------------------------------------------------------


def _age_lease(runtime, seconds: float = -60) -> None:
    """Move every lease into the past by the database clock, as time passing after a crash would."""
    engine = Engine(runtime)
    with runtime.session() as s:
        s.execute(sa.update(Enrollment).where(Enrollment.lease_owner.is_not(None))
                  .values(lease_until=engine.db_now(s, seconds)))


def test_worker_dying_while_sending_leaves_the_touch_for_review(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", clock.now())
    dead = Engine(runtime, worker_id="dead-worker")
    with runtime.session() as s:
        ids = dead.claim(s)
    with runtime.session() as s:
        dead.plan(s, ids, BatchReport())  # committed as `sending`; the process dies before send()
    [touch] = touches(runtime)
    assert touch.status == "sending"
    assert enrollment_of(runtime, "ann@corp.example").lease_owner == "dead-worker"

    # While the lease runs, nobody else touches it.
    assert Engine(runtime).run_until_idle().claimed == 0
    assert touches(runtime)[0].status == "sending"

    _age_lease(runtime)
    Engine(runtime).housekeeping()
    [touch] = touches(runtime)
    assert touch.status == "unknown" and "stopped while sending" in touch.error
    review = enrollment_of(runtime, "ann@corp.example")
    assert (review.state, review.paused_reason) == ("needs_review", "unknown_send")
    assert (review.lease_owner, review.lease_until) == (None, None)

    Engine(runtime).run_until_idle()
    assert smtp_sink.messages() == []


def test_expired_lease_without_a_sending_touch_is_reclaimed(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", clock.now())
    dead = Engine(runtime, worker_id="dead-worker")
    with runtime.session() as s:
        assert len(dead.claim(s)) == 1  # the process dies right after claiming
    assert Engine(runtime).run_batch().claimed == 0

    _age_lease(runtime)
    Engine(runtime).housekeeping()
    reclaimed = enrollment_of(runtime, "ann@corp.example")
    assert (reclaimed.state, reclaimed.lease_owner, reclaimed.lease_until) == ("active", None, None)
    assert Engine(runtime).run_until_idle().sent == 1
    assert recipients(smtp_sink) == ["ann@corp.example"]


# -- cadence state, missing addresses, variants, out of office -----------------------------------


def test_paused_cadence_is_not_claimed_until_resumed(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", clock.now())
    cli("cadence", "pause", "one")
    assert Engine(runtime).run_until_idle().claimed == 0
    assert smtp_sink.messages() == []
    assert enrollment_of(runtime, "ann@corp.example").state == "active"

    cli("cadence", "resume", "one")
    assert Engine(runtime).run_until_idle().sent == 1
    assert recipients(smtp_sink) == ["ann@corp.example"]


EMAIL_THEN_CALL = 'name = "mixed"\n' + ALWAYS_OPEN + """
[[steps]]
key = "intro"
channel = "email"
subject = "Hello"
body = "Hi there."

[[steps]]
key = "call"
channel = "voice"
body = "Call {{ lead.phone }}."
"""


def test_lead_without_email_skips_the_email_step(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, EMAIL_THEN_CALL)
    enroll_csv(cli, tmp_path, [f"+12125550100,Pat,{REP}"], "mixed", clock.now(), header="phone,first_name,owner")

    Engine(runtime).run_until_idle()
    assert smtp_sink.messages() == []
    with runtime.session() as s:
        rows = s.execute(sa.select(Touch.step_key, Touch.status, Touch.error).order_by(Touch.id)).all()
        tasks = s.execute(sa.select(Task.kind, Task.state)).all()
        e = s.scalar(sa.select(Enrollment))
    assert rows[0] == ("intro", "skipped", "the lead has no valid email address")
    assert [r[:2] for r in rows[1:]] == [("call", "pending")]
    assert tasks == [("call", "open")]
    assert (e.state, e.step_position) == ("waiting_task", 1)


AB = 'name = "ab"\n' + ALWAYS_OPEN + """
[[steps]]
key = "intro"
channel = "email"
body = "Hi {{ lead.first_name }}."

[[steps.variants]]
key = "short"
weight = 1
subject = "Quick one"

[[steps.variants]]
key = "long"
weight = 1
subject = "A longer question about your week"
"""


def test_ab_variants_split_and_stick_to_their_enrollment(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, AB)
    emails = [f"lead{i}@corp{i}.example" for i in range(40)]
    enroll_emails(cli, tmp_path, emails, "ab", clock.now())
    Engine(runtime).run_until_idle()

    subjects = {"short": "Quick one", "long": "A longer question about your week"}
    sent = {m["To"].addresses[0].addr_spec: m["Subject"] for m in smtp_sink.messages()}
    with runtime.session() as s:
        step = s.scalar(sa.select(Step).where(Step.key == "intro"))
        rows = s.execute(sa.select(Touch.enrollment_id, Touch.variant_key, Lead.email)
                         .join(Lead, Lead.id == Touch.lead_id)).all()
        assert len(rows) == 40
        for enrollment_id, variant_key, email in rows:
            assert sent[email] == subjects[variant_key]
            assert {choose_variant(step, enrollment_id)["key"] for _ in range(3)} == {variant_key}
    used = Counter(variant_key for _, variant_key, _ in rows)
    assert set(used) == {"short", "long"} and min(used.values()) >= 8


def test_out_of_office_pause_resumes_after_resume_at(cli, runtime, clock, tmp_path, smtp_sink) -> None:
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "one", start)
    with runtime.session() as s:
        s.execute(sa.update(Enrollment).values(state="paused", paused_reason="out_of_office",
                                               resume_at=start + timedelta(days=2)))

    clock.set(start + timedelta(days=1, hours=23))
    Engine(runtime).run_until_idle()
    assert smtp_sink.messages() == []
    assert enrollment_of(runtime, "ann@corp.example").state == "paused"

    clock.set(start + timedelta(days=2))
    Engine(runtime).run_until_idle()
    assert recipients(smtp_sink) == ["ann@corp.example"]
    done = enrollment_of(runtime, "ann@corp.example")
    assert (done.state, done.paused_reason, done.resume_at) == ("finished", None, None)
