"""Inbound mail acting on enrollments: replies and their exit scope, opt-outs, auto-replies, bounces, complaints."""
from __future__ import annotations

import dataclasses
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer import hookimpl, suppressions
from sequencer.models import Enrollment, InboundEvent, Lead, Suppression, Task, Touch
from sequencer.testing import Cli, write_config
from sequencer_email import inbound as inbound_module
from sequencer_email.inbound import act_once
from sequencer.testing.world import (
    ALWAYS_OPEN,
    REP,
    apply,
    arf,
    dsn,
    messages_to,
    recipients,
    reply,
    sent_to,
    team,
    utc,
)

STEPS = """
[[steps]]
key = "intro"
channel = "email"
subject = "Question for {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a question."

[[steps]]
key = "bump"
channel = "email"
wait = "2d"
thread = true
body = "Hi {{ lead.first_name }}, bumping this."
"""
LEADS = f"""email,first_name,company,timezone,owner
ann@corp.example,Ann,Corp,America/New_York,{REP}
ben@corp.example,Ben,Corp,America/New_York,{REP}
zed@other.example,Zed,Other,America/New_York,{REP}
"""
START = "2026-03-02T14:00:00Z"


def cadence(cli, tmp_path: Path, name: str, exit_rules: str = "") -> None:
    apply(cli, tmp_path, f'name = "{name}"\n{ALWAYS_OPEN}\n{exit_rules}\n{STEPS}')


@pytest.fixture
def world(cli, tmp_path: Path, smtp_sink) -> None:
    team(cli)
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")
    cli("leads", "import", str(leads), now=START)


def start(cli, tmp_path: Path, name: str = "main", exit_rules: str = "", leads: tuple[str, ...] = (
        "ann@corp.example", "ben@corp.example", "zed@other.example")) -> None:
    cadence(cli, tmp_path, name, exit_rules)
    cli("enroll", "--cadence", name, *leads, now=START)
    cli("worker", "--once", now=START)


def inbound(cli, tmp_path: Path, raw: bytes, now: str = "2026-03-02T15:00:00Z") -> dict:
    path = tmp_path / "inbound.eml"
    path.write_bytes(raw)
    return json.loads(cli("inbound", "email", str(path), now=now).output)


def states(runtime) -> dict[tuple[str, str], str]:
    with runtime.session() as s:
        rows = s.execute(sa.select(Lead.email, Enrollment.cadence_name, Enrollment.state)
                         .join(Lead, Lead.id == Enrollment.lead_id)).all()
    return {(email, name): state for email, name, state in rows}


def touch_of(runtime, email: str, step: str = "intro") -> Touch:
    with runtime.session() as s:
        return s.scalar(sa.select(Touch).join(Lead, Lead.id == Touch.lead_id)
                        .where(Lead.email == email, Touch.step_key == step))


def reply_tasks(runtime) -> list[tuple[str, int | None]]:
    with runtime.session() as s:
        return s.execute(sa.select(Lead.email, Task.touch_id).join(Lead, Lead.id == Task.lead_id)
                         .where(Task.kind == "reply")).all()


# -- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["in-reply-to", "references", "sender"])
def test_reply_is_matched(cli, world, runtime, tmp_path, smtp_sink, how) -> None:
    start(cli, tmp_path)
    ours = sent_to(smtp_sink, "ann@corp.example")["Message-ID"]
    if how == "in-reply-to":
        # Someone else at the account answers in the thread: the headers, not the sender, decide.
        raw = reply(sender="Assistant <assistant@elsewhere.example>", body="Ann asked me to reply.",
                    in_reply_to=ours)
    elif how == "references":
        raw = reply(sender="Assistant <assistant@elsewhere.example>", body="Ann asked me to reply.",
                    references=f"<older@mail.example> {ours}")
    else:
        raw = reply(sender="Ann <ANN@Corp.Example>", body="Ann here, from my phone.")
    result = inbound(cli, tmp_path, raw)

    with runtime.session() as s:
        ann = s.scalar(sa.select(Lead).where(Lead.email == "ann@corp.example"))
        event = s.scalar(sa.select(InboundEvent))
    assert (result["kind"], result["lead_id"]) == ("reply", ann.id)
    assert event.lead_id == ann.id
    # Matched by the sender, a reply is taken for an answer to the lead's last email, as on every channel.
    assert event.touch_id == touch_of(runtime, "ann@corp.example").id
    assert states(runtime)[("ann@corp.example", "main")] == "replied"
    assert states(runtime)[("zed@other.example", "main")] == "active"
    assert [email for email, _ in reply_tasks(runtime)] == ["ann@corp.example"]


# -- exit scope ------------------------------------------------------------------------------


def test_account_scope_ends_every_lead_at_the_domain(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path, exit_rules='[exit]\nscope = "account"')
    inbound(cli, tmp_path, reply(sender="ann@corp.example", body="Not now, thanks.",
                                 in_reply_to=sent_to(smtp_sink, "ann@corp.example")["Message-ID"]))
    assert states(runtime) == {("ann@corp.example", "main"): "replied", ("ben@corp.example", "main"): "replied",
                               ("zed@other.example", "main"): "active"}
    cli("worker", "--once", now="2026-03-04T14:00:00Z")
    assert recipients(smtp_sink)[3:] == ["zed@other.example"]


def test_lead_scope_ends_the_leads_other_cadences_only(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path, "main")
    start(cli, tmp_path, "second", leads=("ann@corp.example", "ben@corp.example"))
    first_to_ann = messages_to(smtp_sink, "ann@corp.example")[0]
    inbound(cli, tmp_path, reply(sender="ann@corp.example", body="Let's talk.", in_reply_to=first_to_ann["Message-ID"]))
    assert states(runtime) == {
        ("ann@corp.example", "main"): "replied", ("ann@corp.example", "second"): "replied",
        ("ben@corp.example", "main"): "active", ("ben@corp.example", "second"): "active",
        ("zed@other.example", "main"): "active",
    }


def test_cadence_exiting_only_on_meetings_goes_on_after_a_reply(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path, exit_rules='[exit]\non = ["meeting"]', leads=("ann@corp.example",))
    result = inbound(cli, tmp_path, reply(sender="ann@corp.example", body="Interesting, tell me more.",
                                          in_reply_to=sent_to(smtp_sink, "ann@corp.example")["Message-ID"]))
    assert "opened a reply task for the owner" in result["actions"]
    assert states(runtime) == {("ann@corp.example", "main"): "active"}
    assert reply_tasks(runtime) == [("ann@corp.example", touch_of(runtime, "ann@corp.example").id)]
    cli("worker", "--once", now="2026-03-04T14:00:00Z")
    assert sent_to(smtp_sink, "ann@corp.example")["Subject"] == "Re: Question for Ann"


def test_account_scope_does_not_join_people_on_a_free_mail_domain(cli, world, runtime, tmp_path,
                                                                    smtp_sink) -> None:
    leads = tmp_path / "gmail.csv"
    leads.write_text(f"email,first_name,company,owner\nkim@gmail.com,Kim,Kim Bakery,{REP}\n"
                     f"lou@gmail.com,Lou,Lou Plumbing,{REP}\n", encoding="utf-8")
    cli("leads", "import", str(leads), now=START)
    start(cli, tmp_path, exit_rules='[exit]\nscope = "account"', leads=("kim@gmail.com", "lou@gmail.com"))
    inbound(cli, tmp_path, reply(sender="kim@gmail.com", body="No thanks.",
                                 in_reply_to=sent_to(smtp_sink, "kim@gmail.com")["Message-ID"]))
    assert states(runtime) == {("kim@gmail.com", "main"): "replied", ("lou@gmail.com", "main"): "active"}


# -- opt-outs and complaints -------------------------------------------------------------------


def _assert_opted_out(runtime, email: str) -> None:
    with runtime.session() as s:
        lead = s.scalar(sa.select(Lead).where(Lead.email == email))
        suppressed = s.scalars(sa.select(Suppression.value).where(Suppression.kind == "email")).all()
        kinds = s.scalars(sa.select(InboundEvent.kind).where(InboundEvent.lead_id == lead.id)).all()
    assert lead.opted_out_at is not None
    assert email in suppressed
    assert "opt_out" in kinds
    assert states(runtime)[(email, "main")] == "opted_out"


def test_unsubscribe_reply_opts_out_and_suppresses(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path)
    inbound(cli, tmp_path, reply(sender="ann@corp.example", body="Please unsubscribe me from these emails.",
                                 in_reply_to=sent_to(smtp_sink, "ann@corp.example")["Message-ID"]))
    _assert_opted_out(runtime, "ann@corp.example")
    cli("worker", "--once", now="2026-03-04T14:00:00Z")
    assert "ann@corp.example" not in recipients(smtp_sink)[3:]


def test_complaint_opts_out(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path)
    result = inbound(cli, tmp_path, arf(sent_to(smtp_sink, "ben@corp.example"), "ben@corp.example"))
    assert result["kind"] == "complaint"
    _assert_opted_out(runtime, "ben@corp.example")
    assert states(runtime)[("ann@corp.example", "main")] == "active"


# -- auto-replies ----------------------------------------------------------------------------


def test_out_of_office_pauses_until_the_next_working_day_then_resumes(cli, world, runtime, tmp_path,
                                                                     smtp_sink) -> None:
    start(cli, tmp_path, leads=("ann@corp.example",))
    result = inbound(cli, tmp_path, reply(
        sender="ann@corp.example", subject="Automatic reply: Question for Ann",
        body="I am out of the office until 13 March 2026 with limited access to email.",
        in_reply_to=sent_to(smtp_sink, "ann@corp.example")["Message-ID"], headers={"Auto-Submitted": "auto-replied"}))
    assert result["kind"] == "auto_reply"
    with runtime.session() as s:
        e = s.scalar(sa.select(Enrollment))
    # Back Friday the 13th: resume on Monday the 16th, midnight in New York (EDT since the 8th).
    assert (e.state, e.paused_reason, e.resume_at) == ("paused", "out_of_office", utc("2026-03-16T04:00:00Z"))
    assert reply_tasks(runtime) == []

    cli("worker", "--once", now="2026-03-16T03:59:00Z")
    assert len(smtp_sink.messages()) == 1
    cli("worker", "--once", now="2026-03-16T04:00:00Z")
    assert sent_to(smtp_sink, "ann@corp.example")["Subject"] == "Re: Question for Ann"
    assert states(runtime)[("ann@corp.example", "main")] == "finished"


TASK_FIRST = 'name = "research"\n' + ALWAYS_OPEN + """
[[steps]]
key = "research"
channel = "task"
body = "Look up {{ lead.company }}."

[[steps]]
key = "email"
channel = "email"
subject = "After the call"
body = "Hi {{ lead.first_name }}."
"""


def test_out_of_office_during_an_open_task_does_not_duplicate_it(cli, world, runtime, tmp_path) -> None:
    apply(cli, tmp_path, TASK_FIRST)
    cli("enroll", "--cadence", "research", "ann@corp.example", now=START)
    cli("worker", "--once", now=START)
    assert states(runtime)[("ann@corp.example", "research")] == "waiting_task"
    inbound(cli, tmp_path, reply(sender="ann@corp.example", subject="Out of office",
                                 body="I am out of the office until 4 March 2026.",
                                 headers={"Auto-Submitted": "auto-replied"}))
    assert states(runtime)[("ann@corp.example", "research")] == "paused"

    cli("worker", "--once", now="2026-03-06T14:00:00Z")
    with runtime.session() as s:
        tasks = s.execute(sa.select(Task.kind, Task.state)).all()
    assert tasks == [("task", "open")]
    assert states(runtime)[("ann@corp.example", "research")] == "waiting_task"


# -- bounces and delivery reports -------------------------------------------------------------

DMARC_FAILURE = ("550 5.7.26 This mail has been blocked because the sender is unauthenticated. "
                 "DMARC policy of acme.example requires SPF or DKIM to pass")


def test_sender_problem_holds_the_mailbox_not_the_lead(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path, leads=("ann@corp.example",))
    result = inbound(cli, tmp_path, dsn(sent_to(smtp_sink, "ann@corp.example"), "ann@corp.example", "5.7.26",
                                        DMARC_FAILURE))
    assert result["kind"] == "bounce" and f"held mailbox {REP}" in result["actions"]

    [mailbox] = json.loads(cli("mailboxes", "list", "--format", "json").output)
    assert mailbox["state"] == "held" and "5.7.26" in mailbox["held_reason"]
    assert mailbox["held_at"] == "2026-03-02T15:00:00Z"
    with runtime.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
        assert s.scalar(sa.select(Lead.email_invalid).where(Lead.email == "ann@corp.example")) is False
    assert states(runtime) == {("ann@corp.example", "main"): "active"}

    cli("worker", "--once", now="2026-03-04T14:00:00Z")  # the bump is due
    assert len(smtp_sink.messages()) == 1
    with runtime.session() as s:
        e = s.scalar(sa.select(Enrollment))
    assert (e.state, e.paused_reason) == ("paused", "mailbox_held")

    assert "1 enrollment(s) resumed" in cli("mailboxes", "release", REP, now="2026-03-05T14:00:00Z").output
    cli("worker", "--once", now="2026-03-05T14:00:00Z")
    assert sent_to(smtp_sink, "ann@corp.example")["Subject"] == "Re: Question for Ann"
    assert states(runtime) == {("ann@corp.example", "main"): "finished"}


def test_sender_problem_without_our_headers_holds_the_mailbox_it_came_back_to(cli, world, runtime, tmp_path,
                                                                               smtp_sink) -> None:
    start(cli, tmp_path, leads=("ann@corp.example",))
    bare = EmailMessage()  # a DSN whose returned part carries no Message-ID
    bare["From"], bare["To"], bare["Subject"] = REP, "ann@corp.example", "Question for Ann"
    result = inbound(cli, tmp_path, dsn(bare, "ann@corp.example", "5.7.26", DMARC_FAILURE))
    assert result["kind"] == "bounce"
    [mailbox] = json.loads(cli("mailboxes", "list", "--format", "json").output)
    assert mailbox["state"] == "held"


def test_delivery_report_marks_the_touch_delivered(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path, leads=("ann@corp.example",))
    assert touch_of(runtime, "ann@corp.example").status == "sent"
    result = inbound(cli, tmp_path, dsn(sent_to(smtp_sink, "ann@corp.example"), "ann@corp.example", "2.0.0",
                                        "250 2.0.0 OK queued as 12345", action="delivered"))
    assert result["kind"] == "delivery_report"
    touch = touch_of(runtime, "ann@corp.example")
    assert (touch.status, touch.provider_status) == ("delivered", "delivered")
    assert states(runtime) == {("ann@corp.example", "main"): "active"}


def test_unmatched_message_is_recorded(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path)
    result = inbound(cli, tmp_path, reply(sender="stranger@nowhere.example", subject="Hello?",
                                          body="Who is this?", in_reply_to="<not-ours@nowhere.example>"))
    assert (result["kind"], result["lead_id"]) == ("reply", None)
    with runtime.session() as s:
        event = s.scalar(sa.select(InboundEvent))
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == 0
    assert (event.kind, event.lead_id, event.touch_id) == ("reply", None, None)
    assert "Who is this?" in event.raw
    assert set(states(runtime).values()) == {"active"}


# -- messages that cannot be acted on ---------------------------------------------------------

def arf_naming_nobody() -> bytes:
    """A feedback-loop report that neither names the recipient nor returns our message (some ISPs redact both)."""
    return (
        "From: Feedback Loop <fbl@isp.example>\r\nTo: rep@acme.example\r\n"
        "Subject: Email Feedback Report for IP 192.0.2.10\r\nMessage-ID: <fbl-redacted@isp.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\nSource-IP: 192.0.2.10\r\n\r\n"
        "--F--\r\n"
    ).encode()


def unmatched_events(runtime) -> list[tuple[str, int | None, str]]:
    with runtime.session() as s:
        return [(e.kind, e.lead_id, e.summary) for e in s.scalars(sa.select(InboundEvent).order_by(InboundEvent.id))
                if e.classification.get("unmatched")]


def nothing_changed(runtime) -> None:
    with runtime.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == 0
    assert set(states(runtime).values()) == {"active"}


def test_complaint_naming_no_recipient_is_recorded_not_a_crash(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path)
    result = inbound(cli, tmp_path, arf_naming_nobody())  # exits 0: `inbound` asserts it
    assert result["kind"] == "complaint" and result["unmatched"] == "the complaint names no recipient"
    assert unmatched_events(runtime) == [("complaint", None, "unmatched: the complaint names no recipient - "
                                                            "Email Feedback Report for IP 192.0.2.10")]
    nothing_changed(runtime)


def test_bounce_for_an_address_we_never_wrote_to_is_left_alone(cli, world, runtime, tmp_path, smtp_sink) -> None:
    """Backscatter: mail forged in our name bounces; neither the stranger nor our mailbox is acted on."""
    start(cli, tmp_path)
    forged = EmailMessage()
    forged["From"], forged["To"], forged["Subject"] = REP, "stranger@elsewhere.example", "Cheap pills"
    forged["Message-ID"] = "<forged@spam.example>"
    for status, diagnostic in (("5.1.1", "550 5.1.1 <stranger@elsewhere.example>: user unknown"),
                               ("5.7.26", DMARC_FAILURE)):
        result = inbound(cli, tmp_path, dsn(forged, "stranger@elsewhere.example", status, diagnostic))
        assert result["kind"] == "bounce" and result["actions"] == []
        assert result["unmatched"] == ("the bounce names no recipient we wrote to, only "
                                       "stranger@elsewhere.example, to whom we never wrote")
    assert len(unmatched_events(runtime)) == 2
    nothing_changed(runtime)
    [mailbox] = json.loads(cli("mailboxes", "list", "--format", "json").output)
    assert mailbox["state"] != "held"


def test_each_recipient_of_a_bounce_is_acted_on_by_itself(cli, world, runtime, tmp_path, smtp_sink,
                                                          monkeypatch) -> None:
    start(cli, tmp_path)
    bare = EmailMessage()  # a report that returns none of our Message-IDs: each address speaks for itself
    bare["From"], bare["To"], bare["Subject"] = REP, "ann@corp.example", "Question"
    report = dsn(bare, "ann@corp.example", "5.1.1", "550 5.1.1 user unknown")
    # Two more failed recipients in the same report: ben (ours) and a stranger.
    report = report.replace(b"--B\r\nContent-Type: text/rfc822-headers", (
        "\r\nFinal-Recipient: rfc822; ben@corp.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "\r\nFinal-Recipient: rfc822; nobody@elsewhere.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        "--B\r\nContent-Type: text/rfc822-headers").encode(), 1)
    real_add = suppressions.add

    def add_failing_for_ann(session, kind, value, **kwargs):
        if value == "ann@corp.example":
            raise ValueError("the suppression list refused ann@corp.example")
        return real_add(session, kind, value, **kwargs)

    monkeypatch.setattr(suppressions, "add", add_failing_for_ann)
    result = inbound(cli, tmp_path, report)

    assert result["kind"] == "bounce" and "unmatched" not in result
    assert result["actions"] == [
        "could not act on ann@corp.example: ValueError: the suppression list refused ann@corp.example",
        "suppressed ben@corp.example (invalid address)",
        "ignored nobody@elsewhere.example, to whom we never wrote",
    ]
    # Ann's half-done work is undone with her savepoint; Ben's stands; the event is recorded either way.
    assert states(runtime) == {("ann@corp.example", "main"): "active", ("ben@corp.example", "main"): "bounced",
                               ("zed@other.example", "main"): "active"}
    with runtime.session() as s:
        assert s.scalars(sa.select(Suppression.value)).all() == ["ben@corp.example"]
        assert s.scalar(sa.select(Lead.email_invalid).where(Lead.email == "ann@corp.example")) is False
        assert s.scalar(sa.select(sa.func.count()).select_from(InboundEvent)) == 1


def test_notification_is_for_a_person_never_a_reply(cli, world, runtime, tmp_path, smtp_sink, monkeypatch) -> None:
    """A mail system's notice naming no failed recipient: recorded on the lead's timeline, nothing acted on."""
    start(cli, tmp_path)
    ours = sent_to(smtp_sink, "ann@corp.example")["Message-ID"]
    notice = reply(sender="Postmaster <postmaster@corp.example>", subject="Mail loop detected",
                   body="A mail loop was detected for a message you sent.", in_reply_to=ours,
                   headers={"Auto-Submitted": "auto-generated"})
    # Recognising a notification is the reading's part (test_mailreading.py): here the reading
    # is given, and only what is done with it is under test.
    real_read = inbound_module.read_message
    monkeypatch.setattr(inbound_module, "read_message",
                        lambda raw, today: dataclasses.replace(real_read(raw, today=today), kind="notification"))
    result = inbound(cli, tmp_path, notice)

    assert (result["kind"], result["actions"]) == ("notification", [])
    assert result["unmatched"].startswith("a delivery or system notification")
    assert reply_tasks(runtime) == []
    nothing_changed(runtime)
    ann_id = touch_of(runtime, "ann@corp.example").lead_id
    assert result["lead_id"] == ann_id
    timeline = json.loads(cli("timeline", "ann@corp.example", "--format", "json").output)
    [row] = [r for r in timeline if r["kind"] == "notification"]
    assert row["detail"].startswith("unmatched: a delivery or system notification")

    # The same notice from the lead's company but about none of our messages is no one's: postmaster@
    # the lead's domain is not a colleague of the lead.
    unrelated = (notice.replace(ours.encode(), b"<elsewhere@corp.example>")
                 .replace(b"Message-ID: <", b"Message-ID: <2", 1))
    assert inbound(cli, tmp_path, unrelated)["lead_id"] is None

    # Both wait for a person in `inbound list`, newest first, with the mailbox they came to.
    listed = json.loads(cli("inbound", "list", "--unmatched", "--format", "json").output)
    assert [(r["kind"], r["lead"], r["mailbox"]) for r in listed] == [
        ("notification", None, REP), ("notification", "ann@corp.example", REP)]
    assert listed[0]["summary"].startswith("unmatched: a delivery or system notification")
    assert json.loads(cli("inbound", "list", "--kind", "reply", "--format", "json").output) == []


def test_unreadable_message_is_recorded(cli, world, runtime, tmp_path, smtp_sink) -> None:
    start(cli, tmp_path)
    result = inbound(cli, tmp_path, b"\x00\xff\xfe garbage without a single header\r\n")
    assert result["kind"] == "unknown" and result["lead_id"] is None
    assert result["unmatched"] == "it could not be read as a reply, auto-reply, bounce, complaint or report"
    with runtime.session() as s:
        event = s.scalar(sa.select(InboundEvent))
    assert "garbage without a single header" in event.raw and "\x00" not in event.raw
    nothing_changed(runtime)


class BrokenPlugin:
    @hookimpl
    def inbound_received(self, event: InboundEvent) -> None:
        raise RuntimeError("plugin bug")


def test_acting_that_fails_is_undone_and_recorded(cli, world, runtime, tmp_path, smtp_sink) -> None:
    """A failure a retry would not cure (here a plugin's bug) must not make the MTA or the poller retry forever."""
    start(cli, tmp_path)
    raw = reply(sender="ann@corp.example", body="Yes, let's talk.",
                in_reply_to=sent_to(smtp_sink, "ann@corp.example")["Message-ID"])
    core = runtime.plugins.core("email")
    runtime.plugins.add_plugin(BrokenPlugin(), "broken")
    try:
        with core.session():
            result = act_once(core, raw)
    finally:
        runtime.plugins.remove_plugin("broken")
    assert result.kind == "unknown"
    assert result.unmatched == "acting on it failed (RuntimeError: plugin bug); a person must read it and act"
    assert [kind for kind, _, _ in unmatched_events(runtime)] == ["unknown"]
    nothing_changed(runtime)  # the reply's half-done work (its task, the enrollment's end) is undone
    with core.session():
        assert act_once(core, raw).duplicate  # recorded: a redelivery is not acted on again


def test_database_down_is_a_temporary_failure(cli, tmp_path, smtp_sink) -> None:
    """Exit 75 (EX_TEMPFAIL): the MTA keeps the message queued and tries again."""
    config = tmp_path / "down.toml"
    write_config(config, db_url=f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}", smtp_port=smtp_sink.port)
    path = tmp_path / "reply.eml"
    path.write_bytes(reply(sender="ann@corp.example", body="Yes, let's talk."))
    result = Cli(config)("inbound", "email", str(path), expect=75)
    assert "the database is unavailable, try again later" in result.output
