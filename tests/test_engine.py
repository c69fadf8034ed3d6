"""The engine: set-based batches, throttles, windows, retries, at-most-once sending and crash recovery."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import pytest
import sqlalchemy as sa

from sequencer import engine as engine_module
from sequencer import hookimpl
from sequencer.channels import OutboundTouch, SendResult
from sequencer.clock import iso_z
from sequencer.engine import BatchReport, Engine
from sequencer.mailsink import MailSink, SinkHandler
from sequencer.messages import choose_variant
from sequencer.models import Enrollment, Lead, Mailbox, Step, Suppression, Task, Touch, TouchAttempt
from sequencer.testing import world
from sequencer.testing.world import (
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
from tests.support.channels import FakeSms

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


def due_one_email(cli, tmp_path, clock, count: int) -> None:
    """The rep, the one-email cadence, and `count` leads due now."""
    team(cli)
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, [f"lead{i}@corp{i % 7}.example" for i in range(count)], "one", clock.now())


def leased_count(runtime, owner: str | None = None) -> int:
    """Enrollments leased by `owner`, or by anyone."""
    with runtime.session() as s:
        held = Enrollment.lease_owner == owner if owner else Enrollment.lease_owner.is_not(None)
        return s.scalar(sa.select(sa.func.count()).select_from(Enrollment).where(held))


def _shape(statement: str) -> str:
    """Return a statement with its parameter lists collapsed, so batches of any size compare."""
    return re.sub(r"\((?:\s*(?:\?|%\(\w+\)s)(?:::\w+)?\s*,?)+\)", "(...)", statement)


def route_mailbox(runtime, sink: MailSink) -> None:
    with runtime.session() as s:
        s.execute(sa.update(Mailbox).values(transport={"port": sink.port}))


# -- set-based batches -----------------------------------------------------------------------


def test_statements_per_group_do_not_grow_with_batch_or_group_size(cli, runtime, clock, tmp_path, smtp_sink,
                                                                    monkeypatch) -> None:
    due_one_email(cli, tmp_path, clock, 410)
    # A lease no group here can age by a quarter, however slow the machine: no renewal in any group.
    monkeypatch.setattr(runtime.settings.engine, "lease_seconds", 600)

    current: list[str] | None = None  # the statements of the group running now
    outside: list[str] = []  # the claim, outside every group

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        (current if current is not None else outside).append(statement)

    run_group = Engine._run_group

    def counted_group(engine, ids, rest, report) -> None:  # noqa: ANN001
        nonlocal current
        current = []
        groups.append(current)
        try:
            run_group(engine, ids, rest, report)
        finally:
            current = None

    monkeypatch.setattr(Engine, "_run_group", counted_group)
    per_run = {}
    for size, in_flight in ((10, 10), (200, 200), (200, 50)):
        groups: list = []
        outside.clear()
        sa.event.listen(runtime.engine, "before_cursor_execute", count)
        try:
            report = Engine(runtime, batch_size=size, max_in_flight=in_flight).run_batch()
        finally:
            sa.event.remove(runtime.engine, "before_cursor_execute", count)
        assert (report.claimed, report.sent) == (size, size)
        assert len(groups) == size // in_flight
        per_run[(size, in_flight)] = (list(outside), groups)
    assert len(smtp_sink.messages()) == 410
    claims = {run: len(outside) for run, (outside, _) in per_run.items()}
    assert len(set(claims.values())) == 1, f"claiming costs more statements in a bigger batch: {claims}"
    baseline = Counter(map(_shape, per_run[(10, 10)][1][0]))
    for run, (_, groups) in per_run.items():
        for group in groups:
            shapes = Counter(map(_shape, group))
            grew = {text[:100]: (baseline[text], n) for text, n in shapes.items() if n != baseline[text]}
            assert len(group) == sum(baseline.values()), f"{run}: a group runs more statements: {grew}"


def test_a_batch_never_has_more_than_max_in_flight_touches_sending(cli, runtime, clock, tmp_path, smtp_sink,
                                                                   monkeypatch) -> None:
    """Only the group in hand is `sending`; the rest of the batch is leased, with no touch a crash could strand."""
    due_one_email(cli, tmp_path, clock, 95)
    engine = Engine(runtime, batch_size=95, max_in_flight=20)
    seen: list[tuple[int, int, int, int]] = []  # per send: handed over, sending, leased by us, other touches
    channel = runtime.plugins.channel("email")
    send_batch = channel.send_batch

    def watched(outbound):  # noqa: ANN001
        with runtime.session() as s:
            statuses = Counter(dict(s.execute(sa.select(Touch.status, sa.func.count()).group_by(Touch.status)).all()))
        seen.append((len(outbound), statuses["sending"], leased_count(runtime, engine.worker_id), statuses["sent"]))
        return send_batch(outbound)

    monkeypatch.setattr(channel, "send_batch", watched)
    report = engine.run_batch()
    assert (report.claimed, report.sent) == (95, 95)
    # Each send: its own 20 (15 at the end) sending, the groups before it settled, the ones after still leased.
    assert seen == [(20, 20, 95 - 20 * n, 20 * n) for n in range(4)] + [(15, 15, 15, 80)]
    assert leased_count(runtime) == 0
    assert len(smtp_sink.messages()) == 95


def test_the_batch_lease_is_renewed_once_a_quarter_of_it_is_gone(cli, runtime, clock, tmp_path, smtp_sink,
                                                                  monkeypatch) -> None:
    due_one_email(cli, tmp_path, clock, 30)
    monkeypatch.setattr(runtime.settings.engine, "lease_seconds", 600)
    engine = Engine(runtime, batch_size=30, max_in_flight=10)
    renewals: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.startswith("UPDATE enrollments SET lease_until="):
            renewals.append(statement)

    channel = runtime.plugins.channel("email")
    send_batch = channel.send_batch
    per_group: list[int] = []

    def slow_first(outbound):  # noqa: ANN001 - the first group takes most of the lease
        per_group.append(len(renewals))
        if len(per_group) == 1:
            engine._leased_at -= 500
        return send_batch(outbound)

    monkeypatch.setattr(channel, "send_batch", slow_first)
    sa.event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        report = engine.run_batch()
    finally:
        sa.event.remove(runtime.engine, "before_cursor_execute", count)
    assert (report.claimed, report.sent) == (30, 30)
    # Renewed before the second group went out (for it and the third), not before the first or the third.
    assert per_group == [0, 1, 1]
    assert leased_count(runtime) == 0 and len(smtp_sink.messages()) == 30


def test_stopping_between_groups_gives_the_rest_of_the_batch_back(cli, runtime, clock, tmp_path, smtp_sink,
                                                                  monkeypatch) -> None:
    due_one_email(cli, tmp_path, clock, 30)
    engine = Engine(runtime, batch_size=30, max_in_flight=10)
    channel = runtime.plugins.channel("email")
    send_batch = channel.send_batch

    def stop_after_this(outbound):  # noqa: ANN001 - SIGTERM arrives while the first group is out
        engine.stopping.set()
        return send_batch(outbound)

    monkeypatch.setattr(channel, "send_batch", stop_after_this)
    report = engine.run_batch()
    assert (report.claimed, report.sent) == (30, 10)
    with runtime.session() as s:
        states = Counter(dict(s.execute(sa.select(Enrollment.state, sa.func.count()).group_by(Enrollment.state)).all()))
    assert states == {"finished": 10, "active": 20} and leased_count(runtime) == 0
    assert Counter(t.status for t in touches(runtime)) == {"sent": 10, "pending": 20}
    monkeypatch.setattr(channel, "send_batch", send_batch)
    assert Engine(runtime).run_batch().sent == 20  # claimable at once, not after the lease


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
    # Our sending rate is the problem, not the lead: the mailbox is held and no attempt is used up.
    ("rcpt", GMAIL_RATE_LIMITED, ("pending", "paused")),
], ids=["accepted", "user-unknown", "our-rate-limited"])
def test_long_server_replies_are_recorded(cli, runtime, clock, tmp_path, scripted, stage, reply, outcome) -> None:
    runtime.settings.engine.max_attempts = 1  # a temporary refusal that blames the lead's side fails at once
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
    team(cli)
    route_mailbox(runtime, scripted)
    apply(cli, tmp_path, TWO_EMAILS)
    start = clock.now()
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "two", start)

    def lead_replies(_: bytes) -> None:
        # The lead answers an earlier thread while the worker is still talking to the SMTP server.
        core = runtime.plugins.core("email")
        assert core.inbound_message("email", "ann@corp.example", REP, "Yes, call me.", None, start).action == "reply"

    scripted.handler.on_data = lead_replies
    Engine(runtime).run_until_idle()
    assert recipients(scripted) == ["ann@corp.example"]
    assert [t.status for t in touches(runtime)] == ["sent"]
    assert enrollment_of(runtime, "ann@corp.example").state == "replied"

    scripted.handler.on_data = None
    clock.set(start + timedelta(days=2))
    Engine(runtime).run_until_idle()
    assert recipients(scripted) == ["ann@corp.example"]


def test_a_lead_who_opts_out_before_their_group_is_not_sent(cli, runtime, clock, tmp_path, smtp_sink,
                                                            monkeypatch) -> None:
    """The batch was planned at once; each group is checked again just before it goes out."""
    from sequencer.optouts import opt_out

    due_one_email(cli, tmp_path, clock, 4)
    channel = runtime.plugins.channel("email")
    send_batch = channel.send_batch
    opted: list[str] = []

    def opt_out_meanwhile(outbound):  # noqa: ANN001 - a lead of the next group unsubscribes meanwhile
        if not opted:
            later = sorted({f"lead{i}@corp{i}.example" for i in range(4)} - {t.to_email for t in outbound})[0]
            with runtime.session() as s:
                opt_out(s, s.scalar(sa.select(Lead).where(Lead.email == later)), now=clock.now(), source="link",
                        plugins=runtime.plugins)
            opted.append(later)
        return send_batch(outbound)

    monkeypatch.setattr(channel, "send_batch", opt_out_meanwhile)
    report = Engine(runtime, batch_size=4, max_in_flight=2).run_batch()
    assert (report.claimed, report.sent) == (4, 3)
    assert opted[0] not in recipients(smtp_sink) and len(recipients(smtp_sink)) == 3
    [touch] = touches(runtime, opted[0])
    assert (touch.status, touch.error) == ("skipped", "not sent: the enrollment ended before its turn")
    assert enrollment_of(runtime, opted[0]).state == "opted_out"


def test_engines_of_one_worker_share_its_max_in_flight(runtime) -> None:
    from sequencer.db import is_sqlite
    from sequencer.worker import WorkerRefused, make_engines

    if is_sqlite(runtime.engine):
        pytest.skip("--concurrency needs PostgreSQL")
    assert [e.max_in_flight for e in make_engines(runtime, 3)] == [16, 16, 16]
    with pytest.raises(WorkerRefused, match=r"--concurrency 51 is above \[engine\] max_in_flight \(50\)"):
        make_engines(runtime, 51)


# -- refusals that blame our side ---------------------------------------------------------------

BLOCKLISTED = "550 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"


def admins(cli) -> None:
    for name in ("ada", "alan"):
        cli("users", "add", f"{name}@acme.example", "--role", "admin", "--name", name.title())


def alerts(runtime) -> list[Task]:
    with runtime.session() as s:
        return list(s.scalars(sa.select(Task).where(Task.kind == "alert").order_by(Task.id)))


def test_refusal_of_our_sender_holds_the_mailbox_not_the_lead(cli, runtime, clock, tmp_path, scripted) -> None:
    """550 5.7.1 "blocked using zen.spamhaus.org" at RCPT: the mailbox is held, admins told, the leads wait."""
    team(cli)
    admins(cli)
    route_mailbox(runtime, scripted)
    scripted.handler.rcpt += [BLOCKLISTED, BLOCKLISTED]  # the server refuses our IP for every recipient
    apply(cli, tmp_path, ONE_EMAIL)
    leads = ["ann@corp.example", "bob@corp.example", "cat@corp.example", "dan@corp.example"]
    enroll_emails(cli, tmp_path, leads, "one", clock.now())

    report = Engine(runtime, batch_size=4, max_in_flight=2).run_batch()
    assert (report.claimed, report.sent, report.paused, report.failed) == (4, 0, 4, 0)
    assert scripted.received == [] and scripted.handler.rcpt == []
    with runtime.session() as s:
        mailbox = s.scalars(sa.select(Mailbox)).one()
        assert mailbox.state == "held" and "zen.spamhaus.org" in mailbox.held_reason
        assert s.scalars(sa.select(Suppression)).all() == []
        assert not any(lead.email_invalid or lead.opted_out_at for lead in s.scalars(sa.select(Lead)))
    for email in leads:
        e = enrollment_of(runtime, email)
        assert (e.state, e.paused_reason) == ("paused", "mailbox_held"), email
    # The first group went to the server and came back refused: pending again, no attempt counted.
    # The second group was never handed to the channel: its mailbox was held by then.
    assert [t.status for t in touches(runtime)] == ["pending"] * 4
    assert ["blocked using zen.spamhaus.org" in (t.error or "") for t in touches(runtime)] == [True, True,
                                                                                              False, False]
    assert attempts(runtime) == []
    # One alert per admin, not one per refused touch.
    assert sorted(task.owner_id for task in alerts(runtime)) == [2, 3]
    assert all("zen.spamhaus.org" in task.instructions and f"mailboxes release {REP}" in task.instructions
               for task in alerts(runtime))

    assert "4 enrollment(s) resumed" in cli("mailboxes", "release", REP, now=iso_z(clock.now())).output
    assert Engine(runtime).run_until_idle().sent == 4
    assert sorted(recipients(scripted)) == leads
    assert [(a.touch_id, a.number) for a in attempts(runtime)] == [(t.id, 1) for t in touches(runtime)]
    assert {enrollment_of(runtime, email).state for email in leads} == {"finished"}
    assert len(alerts(runtime)) == 2


def test_group_touches_of_a_held_mailbox_wait_with_it(cli, runtime, clock, tmp_path, smtp_sink, monkeypatch) -> None:
    """In the group the refusal came in, a touch of the same mailbox that surely did not go out waits too."""
    from sequencer.channels import SendResult

    team(cli)
    cli("users", "add", "other@acme.example", "--role", "rep")
    cli("mailboxes", "add", "other@acme.example", "--owner", "other@acme.example", "--daily-cap", "100")
    apply(cli, tmp_path, ONE_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example", "bob@corp.example", "cat@corp.example"], "one", clock.now())
    enroll_csv(cli, tmp_path, ["eve@corp.example,Eve,other@acme.example"], "one", clock.now())
    channel = runtime.plugins.channel("email")

    def answers(outbound):  # noqa: ANN001 - the channel stopped its session after our sender was refused
        by_lead = {t.to_email: t.touch_id for t in outbound}
        return [SendResult(by_lead["ann@corp.example"], accepted=False, retryable=True, sender_problem="421 4.7.0 "
                           "Too many connections from your IP", error="421 4.7.0 Too many connections"),
                SendResult(by_lead["bob@corp.example"], accepted=False, retryable=True, error="session closed"),
                SendResult(by_lead["cat@corp.example"], accepted=True, provider_status="250 OK"),
                SendResult(by_lead["eve@corp.example"], accepted=False, retryable=True, error="session closed")]

    monkeypatch.setattr(channel, "send_batch", answers)
    report = Engine(runtime).run_batch()
    assert (report.sent, report.paused, report.retried) == (1, 2, 1)
    status = {email: (touches(runtime, email)[0].status, enrollment_of(runtime, email).state)
              for email in ("ann@corp.example", "bob@corp.example", "cat@corp.example", "eve@corp.example")}
    assert status == {"ann@corp.example": ("pending", "paused"), "bob@corp.example": ("pending", "paused"),
                      "cat@corp.example": ("sent", "finished"),  # the server took it: it is sent
                      "eve@corp.example": ("pending", "active")}  # another mailbox: an ordinary retry
    assert [a.number for a in attempts(runtime)] == [1, 1]  # cat's and eve's; ann's and bob's did not count
    with runtime.session() as s:
        assert dict(s.execute(sa.select(Mailbox.address, Mailbox.state)).all()) == {
            REP: "held", "other@acme.example": "active"}


# -- manual steps ---------------------------------------------------------------------------------

MANUAL_EMAIL = """
[[steps]]
key = "personal"
channel = "email"
action = "manual"
subject = "A personal note"
body = "Hi {{ lead.first_name }}, I wrote this one myself."
"""
AUTO_THEN_MANUAL = ONE_EMAIL.replace('name = "one"', 'name = "mixed"') + MANUAL_EMAIL


def test_manual_email_draft_carries_the_postal_address_and_unsubscribe_link(cli, runtime, clock, tmp_path,
                                                                             smtp_sink) -> None:
    from sequencer.optouts import read_unsubscribe_token

    team(cli)
    apply(cli, tmp_path, AUTO_THEN_MANUAL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "mixed", clock.now())
    Engine(runtime).run_until_idle()
    clock.set(clock.now() + timedelta(minutes=1))
    Engine(runtime).run_until_idle()

    automatic = smtp_sink.messages()[0].get_body(("plain",)).get_content()
    with runtime.session() as s:
        [task] = s.scalars(sa.select(Task).where(Task.kind == "email")).all()
        lead_id = s.scalar(sa.select(Lead.id).where(Lead.email == "ann@corp.example"))
    draft = task.instructions.splitlines()
    postal, unsubscribe = runtime.settings.sending.postal_address, draft[-1]
    assert draft == ["Hi Ann, I wrote this one myself.", "", postal, unsubscribe]
    # The same two lines, in the same words, as the automatic email of the step before.
    assert automatic.rstrip().splitlines()[-2:] == [postal, unsubscribe]
    assert unsubscribe.startswith("Unsubscribe: https://sequencer.test/u/")
    token = unsubscribe.rpartition("/u/")[2]
    assert read_unsubscribe_token(runtime.settings.web.secret_key, token) == lead_id


def test_manual_email_draft_without_a_postal_address_says_not_to_send_it(cli, runtime, clock, tmp_path,
                                                                          smtp_sink) -> None:
    runtime.settings.sending.postal_address = None
    team(cli)
    apply(cli, tmp_path, 'name = "manual"\n' + ALWAYS_OPEN + MANUAL_EMAIL)
    enroll_emails(cli, tmp_path, ["ann@corp.example"], "manual", clock.now())
    Engine(runtime).run_until_idle()
    with runtime.session() as s:
        [task] = s.scalars(sa.select(Task)).all()
    assert task.kind == "email"
    assert task.instructions == ("Hi Ann, I wrote this one myself.\n\n(Do not send this yet: no postal address "
                                 "configured: set [sending] postal_address in config.toml (CAN-SPAM requires one "
                                 "in every commercial email).)\n")


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
        planned = dead.plan(s, ids, BatchReport())
    with runtime.session() as s:
        dead.arm(s, planned, [], BatchReport())  # committed as `sending`; the process dies before send()
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


# -- channels as they declare themselves: texts, calls, consent, contact hours, deferral -------------


def test_the_engine_spells_no_channel_name() -> None:
    """Everything that differs between channels comes from their declarations (sequencer.channels.Channel)."""
    source = Path(engine_module.__file__).read_text(encoding="utf-8")
    assert re.findall(r'"(?:email|sms|voice|task|call)"', source) == []
    assert "TASK_KIND" not in source


class ScriptedSms(FakeSms):
    """A texting channel that gives the scripted results first (None: accept), then accepts."""

    def __init__(self, *results: Callable[[OutboundTouch], SendResult] | None) -> None:
        self.results = list(results)
        self.sent: list[OutboundTouch] = []

    def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
        answers = []
        for touch in touches:
            script = self.results.pop(0) if self.results else None
            if script is None:
                self.sent.append(touch)
                answers.append(SendResult(touch.touch_id, accepted=True, provider_id=f"SM{touch.touch_id}"))
            else:
                answers.append(script(touch))
        return answers


class Texter:
    def __init__(self, channel: ScriptedSms) -> None:
        self.channel = channel

    @hookimpl
    def register_channels(self, register) -> None:  # noqa: ANN001
        register(self.channel)


@pytest.fixture
def texts(runtime):
    """Install a texting channel for the test; `texts(*results)` scripts its answers."""
    def install(*results: Callable[[OutboundTouch], SendResult] | None) -> ScriptedSms:
        channel = ScriptedSms(*results)
        runtime.plugins.add_plugin(Texter(channel), "texter")
        return channel

    yield install
    if "texter" in runtime.plugins.names():
        runtime.plugins.remove_plugin("texter")


TEXT_THEN_CALL = 'name = "phone"\n' + ALWAYS_OPEN + """
[[steps]]
key = "text"
channel = "sms"
body = "Hi {{ lead.first_name }}, a quick question. Reply STOP to opt out."

[[steps]]
key = "call"
channel = "voice"
action = "manual"
body = "Call {{ lead.first_name }}."
"""
NEW_YORK_PHONE = "+12125550100"  # America/New_York: 14:00 UTC on 2 March is 09:00 there


def phone_lead(cli, tmp_path, clock, *, consent: bool = True) -> None:
    team(cli)
    apply(cli, tmp_path, TEXT_THEN_CALL)
    enroll_csv(cli, tmp_path, [f"pat@corp.example,{NEW_YORK_PHONE},Pat,{REP}"], "phone", clock.now(),
               header="email,phone,first_name,owner")
    if consent:
        cli("consent", "add", "pat@corp.example", "--channel", "sms", "--source", "web form",
            now=iso_z(clock.now()))


def test_a_text_goes_from_the_owner_not_the_mailbox_and_a_manual_call_follows(cli, runtime, clock, tmp_path,
                                                                             texts) -> None:
    channel = texts()
    phone_lead(cli, tmp_path, clock)
    report = Engine(runtime).run_until_idle()
    assert (report.sent, report.tasks) == (1, 1)
    [sent] = channel.sent
    assert sent.to_phone == NEW_YORK_PHONE and sent.message_id is None and sent.thread_id is None
    # The plugin picks the number; the core says whose lead it is.
    assert sent.sender is not None and sent.sender.transport == {} and sent.sender.owner_id is not None
    with runtime.session() as s:
        [task] = s.scalars(sa.select(Task)).all()
    assert (task.kind, task.title, task.priority) == ("call", "Call Pat", 30)


def test_a_text_without_consent_waits_and_resumes_when_consent_is_added(cli, runtime, clock, tmp_path,
                                                                        texts) -> None:
    channel = texts()
    phone_lead(cli, tmp_path, clock, consent=False)
    assert Engine(runtime).run_until_idle().paused == 1
    enrollment = enrollment_of(runtime, "pat@corp.example")
    assert (enrollment.state, enrollment.paused_reason) == ("paused", "no_consent")
    assert channel.sent == [] and touches(runtime) == []

    cli("consent", "add", "pat@corp.example", "--channel", "sms", "--source", "signed form", now=iso_z(clock.now()))
    assert Engine(runtime).run_until_idle().sent == 1
    assert [t.to_phone for t in channel.sent] == [NEW_YORK_PHONE]


def test_a_text_waits_for_contact_hours_but_a_reps_call_task_opens_at_night(cli, runtime, clock, tmp_path,
                                                                             texts) -> None:
    channel = texts()
    clock.set(utc("2026-03-03T02:30:00Z"))  # 21:30 in New York
    phone_lead(cli, tmp_path, clock, consent=False)
    with runtime.session() as s:
        s.execute(sa.update(Enrollment).values(step_position=1))  # at the call: a rep's, no consent needed
    assert Engine(runtime).run_until_idle().tasks == 1

    cli("consent", "add", "pat@corp.example", "--channel", "sms", "--source", "web form", now=iso_z(clock.now()))
    with runtime.session() as s:
        s.execute(sa.update(Enrollment).values(step_position=0, state="active", next_due_at=clock.now()))
    assert Engine(runtime).run_until_idle().deferred == 1
    assert channel.sent == []
    assert enrollment_of(runtime, "pat@corp.example").next_due_at == utc("2026-03-03T13:00:00Z")  # 08:00 EST
    clock.set(utc("2026-03-03T13:00:00Z"))
    assert Engine(runtime).run_until_idle().sent == 1


def test_a_providers_deferral_waits_without_using_an_attempt(cli, runtime, clock, tmp_path, texts) -> None:
    # The provider asks us to come back at 21:30 New York time: outside contact hours.
    later = utc("2026-03-03T02:30:00Z")
    channel = texts(lambda t: SendResult(t.touch_id, accepted=False, error="HTTP 429 Too Many Requests",
                                         defer_until=later))
    phone_lead(cli, tmp_path, clock)
    report = Engine(runtime).run_until_idle()
    assert (report.sent, report.deferred, report.retried, report.failed) == (0, 1, 0, 0)
    [touch] = touches(runtime)
    assert touch.status == "pending" and "deferred by the provider until 2026-03-03T02:30:00Z" in touch.error
    assert attempts(runtime) == []
    enrollment = enrollment_of(runtime, "pat@corp.example")
    # Moved into contact hours: 08:00 in New York.
    assert (enrollment.state, enrollment.next_due_at) == ("active", utc("2026-03-03T13:00:00Z"))

    clock.set(utc("2026-03-03T13:00:00Z"))
    assert Engine(runtime).run_until_idle().sent == 1
    assert [a.number for a in attempts(runtime)] == [1]
    assert [t.touch_id for t in channel.sent] == [touch.id]


def test_a_number_that_cannot_take_texts_is_suppressed_for_texts_and_the_cadence_goes_on(
        cli, runtime, clock, tmp_path, texts) -> None:
    texts(lambda t: SendResult(t.touch_id, accepted=False, error="Twilio error 21614: not a mobile number",
                               recipient_problem="unable_sms"))
    phone_lead(cli, tmp_path, clock)
    report = Engine(runtime).run_until_idle()
    assert (report.failed, report.exited, report.tasks) == (1, 0, 1)
    [text, call] = touches(runtime)
    assert (text.status, call.step_key) == ("failed", "call")
    with runtime.session() as s:
        rows = s.execute(sa.select(Suppression.kind, Suppression.value, Suppression.channel)).all()
        lead = s.scalars(sa.select(Lead)).one()
    assert rows == [("phone", NEW_YORK_PHONE, "sms")]
    assert not lead.phone_wrong and lead.opted_out_at is None
    assert enrollment_of(runtime, "pat@corp.example").state == "waiting_task"


@pytest.mark.parametrize(("problem", "state", "suppressed"), [
    ("opted_out", "opted_out", {("phone", NEW_YORK_PHONE, "all"), ("email", "pat@corp.example", "all")}),
    ("invalid_address", "bounced", {("phone", NEW_YORK_PHONE, "all")}),
])
def test_a_recipient_problem_on_a_text_acts_on_the_phone(cli, runtime, clock, tmp_path, texts, problem, state,
                                                         suppressed) -> None:
    texts(lambda t: SendResult(t.touch_id, accepted=False, error="refused", recipient_problem=problem))
    phone_lead(cli, tmp_path, clock)
    assert Engine(runtime).run_until_idle().exited == 1
    with runtime.session() as s:
        rows = set(s.execute(sa.select(Suppression.kind, Suppression.value, Suppression.channel)).all())
        lead = s.scalars(sa.select(Lead)).one()
    assert rows == suppressed
    assert lead.phone_wrong == (problem == "invalid_address") and not lead.email_invalid
    assert enrollment_of(runtime, "pat@corp.example").state == state


class SentEvents:
    """Keeps the touch_sent events, as a plugin listening to them sees them."""

    def __init__(self) -> None:
        self.touches: list = []

    @hookimpl
    def touch_sent(self, touch) -> None:  # noqa: ANN001
        self.touches.append(touch)


@pytest.fixture
def sent_events(runtime) -> SentEvents:
    events = SentEvents()
    runtime.plugins.add_plugin(events, "sent-events")
    yield events
    runtime.plugins.remove_plugin("sent-events")


def test_a_touch_sent_only_when_reported_is_placed_moves_the_cadence_on_and_counts(cli, runtime, clock, tmp_path,
                                                                                    texts, sent_events) -> None:
    """SendResult.sent_when_reported (a voicemail drop): accepted, but sent only on its plugin's report."""
    texts(lambda t: SendResult(t.touch_id, accepted=True, provider_id=f"SM{t.touch_id}", provider_status="queued",
                               sent_when_reported=True))
    runtime.settings.sending.max_touches_per_lead_per_day = 1
    phone_lead(cli, tmp_path, clock)
    report = Engine(runtime).run_until_idle()
    assert (report.placed, report.sent, report.failed) == (1, 0, 0)
    [text] = touches(runtime)
    assert (text.status, text.sent_at, text.provider_id, text.error) == ("placed", None, f"SM{text.id}", None)
    assert [a.finished_at for a in attempts(runtime)] == [clock.now()]
    # Nothing says the lead got it yet: no touch_sent event.
    assert sent_events.touches == []
    # The cadence moved on at once to the rep's call, which the placed text defers: it counts
    # towards the lead's touches of the day (1 here), as a sent one would.
    enrollment = enrollment_of(runtime, "pat@corp.example")
    assert (enrollment.state, enrollment.step_position) == ("active", 1)
    assert (report.tasks, report.deferred) == (0, 1) and enrollment.next_due_at == clock.now() + timedelta(hours=1)

    # Later runs leave it as it is: nobody reviews it (the provider has it) and it never goes again.
    runtime.settings.sending.max_touches_per_lead_per_day = 3
    clock.set(clock.now() + timedelta(hours=1))
    assert Engine(runtime).run_until_idle().tasks == 1
    assert [(t.step_key, t.status) for t in touches(runtime)] == [("text", "placed"), ("call", "pending")]
    assert len(attempts(runtime)) == 1
