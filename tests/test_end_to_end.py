"""The core issue end to end, through the CLI with --now, a real SMTP server, SQLite and PostgreSQL."""
from __future__ import annotations

import json
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.models import Enrollment, Lead, Suppression, Task, Touch
from sequencer.testing.world import apply, dsn, enrollment_of, messages_to, recipients, reply_to, team, utc

CADENCE = """
name = "e2e"
[schedule]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
timezone = "lead"
holidays = "lead"

[[steps]]
key = "intro"
channel = "email"
subject = "Quick question, {{ lead.first_name }}"
body = "Hi {{ lead.first_name }},\\n\\nWould {{ lead.company }} like fewer manual follow-ups?"

[[steps]]
key = "call"
channel = "voice"
action = "manual"
wait = "2 business days"
body = "Call {{ lead.first_name }} at {{ lead.phone | default('their number') }}."

[[steps]]
key = "bump"
channel = "email"
wait = "3d"
thread = true
body = "Hi {{ lead.first_name }}, bumping this up."
"""

LEADS = """email,phone,first_name,last_name,company,country,timezone,owner
nina@ny.example,+12125550100,Nina,York,Big Apple Inc,US,America/New_York,rep@acme.example
bernd@berlin.example,+4930123456,Bernd,Bär,Spree GmbH,DE,Europe/Berlin,rep@acme.example
"""


@pytest.fixture
def world(cli, tmp_path: Path):
    """A rep with a mailbox, the three-step cadence, and a CSV of leads."""
    team(cli, timezone="America/New_York")
    cadence = apply(cli, tmp_path, CADENCE)
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")
    return {"cadence": cadence, "leads": leads}


def worker(cli, now: str) -> dict:
    return json.loads(cli("worker", "--once", now=now).output.strip().splitlines()[-1])


def test_cadence_across_weekend_holiday_and_dst_in_two_zones(cli, world, runtime, smtp_sink) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-27T16:30:00Z")

    # Friday 16:30Z: 12:30 in New York (open), 17:30 in Berlin (closed: windows exclude their end).
    worker(cli, "2026-03-27T16:30:00Z")
    assert recipients(smtp_sink) == ["nina@ny.example"]
    # Berlin moves to Monday 09:00 local, which is 07:00Z: Europe changed to summer time on Sunday.
    assert enrollment_of(runtime, "bernd@berlin.example").next_due_at == utc("2026-03-30T07:00:00Z")

    worker(cli, "2026-03-30T07:00:00Z")
    first_ny, first_berlin = smtp_sink.messages()
    assert first_berlin["To"].addresses[0].addr_spec == "bernd@berlin.example"
    assert first_berlin["Subject"] == "Quick question, Bernd"

    # The call comes two business days after the email: Tuesday 12:30 New York time.
    assert enrollment_of(runtime, "nina@ny.example").next_due_at == utc("2026-03-31T16:30:00Z")
    worker(cli, "2026-03-31T16:30:00Z")
    tasks = json.loads(cli("tasks", "--rep", "rep@acme.example", "--date", "2026-03-31", "--format", "json",
                           now="2026-03-31T16:31:00Z").output)
    assert [(t["lead_email"], t["channel"], t["step"], t["cadence"]) for t in tasks] == [
        ("nina@ny.example", "voice", "call", "e2e")]
    cli("task", "done", str(tasks[0]["id"]), "--outcome", "connected", "--notes", "asked for a follow-up",
        now="2026-03-31T17:00:00Z")

    worker(cli, "2026-04-01T07:00:00Z")
    tasks = json.loads(cli("tasks", "--format", "json", now="2026-04-01T07:10:00Z").output)
    assert [t["lead_email"] for t in tasks] == ["bernd@berlin.example"]
    cli("task", "done", str(tasks[0]["id"]), "--outcome", "no_answer", now="2026-04-01T07:30:00Z")

    # The bump waits 3 calendar days from the call: Friday 13:00 New York time.
    worker(cli, "2026-04-03T17:00:00Z")
    bump_ny = smtp_sink.messages()[-1]
    assert bump_ny["To"].addresses[0].addr_spec == "nina@ny.example"
    assert bump_ny["Subject"] == "Re: Quick question, Nina"
    assert bump_ny["In-Reply-To"] == first_ny["Message-ID"]
    assert first_ny["Message-ID"] in bump_ny["References"]
    # Berlin: 3 days from Wednesday is Saturday; Monday April 6 is Easter Monday in Germany.
    assert enrollment_of(runtime, "bernd@berlin.example").next_due_at == utc("2026-04-07T07:00:00Z")
    worker(cli, "2026-04-06T12:00:00Z")
    assert len(smtp_sink.messages()) == 3

    worker(cli, "2026-04-07T07:00:00Z")
    assert smtp_sink.messages()[-1]["In-Reply-To"] == first_berlin["Message-ID"]
    assert len(smtp_sink.messages()) == 4
    for email in ("nina@ny.example", "bernd@berlin.example"):
        assert enrollment_of(runtime, email).state == "finished"

    timeline = json.loads(cli("timeline", "nina@ny.example", "--format", "json").output)
    kinds = [(row["kind"], row["step"]) for row in timeline if row["kind"] in ("touch", "task_done", "exited")]
    assert kinds == [("touch", "intro"), ("touch", "call"), ("task_done", "call"), ("touch", "bump"),
                     ("exited", None)]
    assert all(row["at"].endswith("Z") for row in timeline)


def test_sent_email_is_complete_and_compliant(cli, world, smtp_sink) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-27T16:30:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    messages = {m["To"].addresses[0].addr_spec: m for m in smtp_sink.messages()}
    msg = messages["bernd@berlin.example"]
    assert msg["From"].addresses[0].addr_spec == "rep@acme.example"
    assert msg["From"].addresses[0].display_name == "Rita Rep"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Spree GmbH" in text and "Spree GmbH" in html
    assert "Sequencer Test Co, 1 Test Street" in text and "Sequencer Test Co, 1 Test Street" in html
    assert msg["List-Unsubscribe"].startswith("<https://sequencer.test/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert smtp_sink.received[0].mail_from == "rep@acme.example"


def test_reply_ends_cadence_and_auto_reply_does_not(cli, world, runtime, smtp_sink, tmp_path) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    to_nina = messages_to(smtp_sink, "nina@ny.example")[0]
    to_bernd = messages_to(smtp_sink, "bernd@berlin.example")[0]

    auto = tmp_path / "auto.eml"
    auto.write_bytes(reply_to(to_bernd, sender="Bernd <bernd@berlin.example>",
                               body="I am out of the office and will read your message later.",
                               headers={"Auto-Submitted": "auto-replied"}))
    out = json.loads(cli("inbound", "email", str(auto), now="2026-03-30T15:00:00Z").output)
    assert out["kind"] == "auto_reply"
    # Not a reply: the cadence only pauses (no return date given: [inbound] out_of_office_default_days).
    paused = enrollment_of(runtime, "bernd@berlin.example")
    assert (paused.state, paused.paused_reason) == ("paused", "out_of_office")

    reply = tmp_path / "reply.eml"
    reply.write_bytes(reply_to(to_nina, sender="Nina York <NINA@ny.example>",
                                body="Sounds interesting, can we talk Thursday?\n\nOn Mon, Rita wrote:\n> Hi Nina"))
    out = json.loads(cli("inbound", "email", "-", input=reply.read_bytes().decode(), now="2026-03-30T15:05:00Z").output)
    assert out["kind"] == "reply"
    assert enrollment_of(runtime, "nina@ny.example").state == "replied"

    worker(cli, "2026-04-01T14:30:00Z")  # both calls would be due by now
    worker(cli, "2026-04-02T08:00:00Z")  # Bernd is back: the next working day after the pause
    with runtime.session() as s:
        tasks = {(t.kind, t.lead.email) for t in s.scalars(sa.select(Task).options(sa.orm.joinedload(Task.lead)))}
    assert ("reply", "nina@ny.example") in tasks
    assert ("call", "nina@ny.example") not in tasks
    assert ("call", "bernd@berlin.example") in tasks
    timeline = json.loads(cli("timeline", "nina@ny.example", "--format", "json").output)
    reply_rows = [r for r in timeline if r["kind"] == "reply"]
    assert len(reply_rows) == 1 and "Thursday" in reply_rows[0]["detail"]
    assert "Hi Nina" not in reply_rows[0]["detail"]  # the quoted history is not the reply


def _dsn(original: EmailMessage, recipient: str, status: str, diagnostic: str) -> bytes:
    """An RFC 3464 delivery status notification, as Postfix writes one."""
    return dsn(original, recipient, status, diagnostic, to=original["From"], mta="mx.berlin.example",
               subject="Undelivered Mail Returned to Sender", explanation="Your message could not be delivered.")


def test_invalid_address_report_suppresses(cli, world, runtime, smtp_sink, tmp_path) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    to_bernd = messages_to(smtp_sink, "bernd@berlin.example")[0]
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes(_dsn(to_bernd, "bernd@berlin.example", "5.1.1", "550 5.1.1 <bernd@berlin.example>: "
                                                                       "Recipient address rejected: User unknown"))
    out = json.loads(cli("inbound", "email", str(bounce), now="2026-03-30T15:00:00Z").output)
    assert out["kind"] == "bounce"
    assert enrollment_of(runtime, "bernd@berlin.example").state == "bounced"
    listed = json.loads(cli("suppress", "list", "--format", "json").output)
    assert "bernd@berlin.example" in [row["value"] for row in listed]
    with runtime.session() as s:
        assert s.scalar(sa.select(Lead.email_invalid).where(Lead.email == "bernd@berlin.example")) is True
    # Re-importing the lead does not bring it back into the cadence.
    result = cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T16:00:00Z")
    assert enrollment_of(runtime, "bernd@berlin.example").state == "bounced"
    assert "bernd@berlin.example" not in recipients(smtp_sink)[2:]
    assert result.exit_code == 0


def test_temporary_failure_report_retries_later(cli, world, runtime, smtp_sink, tmp_path) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    to_bernd = messages_to(smtp_sink, "bernd@berlin.example")[0]
    delayed = tmp_path / "delayed.eml"
    delayed.write_bytes(_dsn(to_bernd, "bernd@berlin.example", "4.2.2", "452 4.2.2 Mailbox full"))
    cli("inbound", "email", str(delayed), now="2026-03-30T14:10:00Z")
    assert enrollment_of(runtime, "bernd@berlin.example").state == "active"
    with runtime.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Suppression)) == 0
    worker(cli, "2026-03-30T15:15:00Z")  # an hour later it is 17:15 in Berlin: the window is closed
    worker(cli, "2026-03-31T07:00:00Z")
    resent = messages_to(smtp_sink, "bernd@berlin.example")
    assert len(resent) == 2 and resent[1]["Message-ID"] == resent[0]["Message-ID"]


def test_one_click_unsubscribe_stops_every_channel(cli, world, runtime, smtp_sink) -> None:
    from sequencer.web import create_app

    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    to_nina = messages_to(smtp_sink, "nina@ny.example")[0]
    path = to_nina["List-Unsubscribe"].strip("<>").removeprefix("https://sequencer.test")
    client = create_app(runtime).test_client()
    response = client.post(path, data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    worker(cli, "2026-04-01T14:30:00Z")  # the call step is due for both leads
    with runtime.session() as s:
        calls = set(s.scalars(sa.select(Lead.email).join(Task, Task.lead_id == Lead.id).where(Task.kind == "call")))
    assert calls == {"bernd@berlin.example"}
    assert enrollment_of(runtime, "nina@ny.example").state == "opted_out"


def test_missing_variable_blocks_one_lead_not_the_batch(cli, world, runtime, smtp_sink, tmp_path) -> None:
    leads = tmp_path / "partial.csv"
    leads.write_text("email,first_name,company,timezone,owner\n"
                     "full@a.example,Ann,Acme,America/New_York,rep@acme.example\n"
                     "nofirst@b.example,,Beta,America/New_York,rep@acme.example\n", encoding="utf-8")
    cli("leads", "import", str(leads), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    assert recipients(smtp_sink) == ["full@a.example"]
    blocked = enrollment_of(runtime, "nofirst@b.example")
    assert (blocked.state, blocked.paused_reason) == ("paused", "template_error")
    timeline = json.loads(cli("timeline", "nofirst@b.example", "--format", "json").output)
    failed = [r for r in timeline if r["kind"] == "touch"]
    assert failed[0]["status"] == "failed" and "first_name" in failed[0]["detail"]


def test_sandbox_escape_raises_and_sends_nothing(cli, world, runtime, smtp_sink, tmp_path) -> None:
    evil = tmp_path / "evil.toml"
    evil.write_text(textwrap.dedent("""
        name = "evil"
        [schedule]
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        start = "00:00"
        end = "24:00"
        [[steps]]
        key = "x"
        channel = "email"
        subject = "hello"
        body = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    """), encoding="utf-8")
    cli("cadence", "apply", str(evil))
    cli("leads", "import", str(world["leads"]), "--cadence", "evil", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    assert smtp_sink.messages() == []
    with runtime.session() as s:
        errors = list(s.scalars(sa.select(Touch.error)))
    assert len(errors) == 2 and all("not allowed" in e or "unsafe" in e.lower() for e in errors)


def test_disabled_channel_pauses_and_resumes(cli, world, runtime, smtp_sink) -> None:
    cli("plugins", "disable", "email")
    listed = json.loads(cli("plugins", "list", "--format", "json").output)
    assert {"name": "email", "enabled": False} == {k: listed[0][k] for k in ("name", "enabled")}
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    worker(cli, "2026-03-30T14:00:00Z")
    assert smtp_sink.messages() == []
    paused = enrollment_of(runtime, "nina@ny.example")
    assert (paused.state, paused.paused_reason) == ("paused", "channel_unavailable")
    cli("plugins", "enable", "email")
    worker(cli, "2026-03-30T14:05:00Z")
    assert len(smtp_sink.messages()) == 2
    with runtime.session() as s:
        statuses = set(s.scalars(sa.select(Touch.status)))
    assert statuses == {"sent"}  # nothing was skipped or failed while the channel was off


def test_new_cadence_version_is_not_seen_by_running_enrollments(cli, world, runtime, smtp_sink) -> None:
    cli("leads", "import", str(world["leads"]), "--cadence", "e2e", now="2026-03-30T14:00:00Z")
    assert "unchanged" in cli("cadence", "apply", str(world["cadence"])).output
    world["cadence"].write_text(CADENCE.replace("bumping this up", "a new text"), encoding="utf-8")
    assert "version 2" in cli("cadence", "apply", str(world["cadence"])).output
    worker(cli, "2026-03-30T14:00:00Z")
    with runtime.session() as s:
        versions = set(s.scalars(sa.select(Enrollment.cadence_id)))
    assert len(versions) == 1
    for at in ("2026-04-01T14:30:00Z",):
        worker(cli, at)
    for task in json.loads(cli("tasks", "--format", "json", now="2026-04-01T14:30:00Z").output):
        cli("task", "done", str(task["id"]), "--outcome", "connected", now="2026-04-01T14:30:00Z")
    worker(cli, "2026-04-06T16:00:00Z")
    bumps = [m for m in smtp_sink.messages() if m["Subject"].startswith("Re:")]
    assert bumps and all("bumping this up" in m.get_body(("plain",)).get_content() for m in bumps)
