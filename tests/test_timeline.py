"""A lead's timeline: every kind of event, in time order, as `sequencer timeline` shows it."""
from __future__ import annotations

import json
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

REP = "rep@acme.example"
CADENCE = """
name = "tl"
[schedule]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
timezone = "UTC"
holidays = "none"

[[steps]]
key = "intro"
channel = "email"
subject = "Question for {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}."

[[steps]]
key = "call"
channel = "voice"
wait = "1d"
body = "Call {{ lead.first_name }}."

[[steps]]
key = "bump"
channel = "email"
wait = "2d"
thread = true
body = "Bumping this."
"""


def _dsn(original: EmailMessage) -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in original.items())
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.corp.example>\r\n"
        f"To: {REP}\r\nSubject: Delayed Mail (still being retried)\r\n"
        f"Message-ID: {make_msgid(domain='mx.corp.example')}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.corp.example\r\n\r\n"
        "Final-Recipient: rfc822; ann@corp.example\r\nAction: delayed\r\nStatus: 4.2.2\r\n"
        "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}--B--\r\n"
    ).encode()


def _unsubscribe_reply(original: EmailMessage) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "Ann <ann@corp.example>", REP, "Re: " + original["Subject"]
    msg["Message-ID"] = make_msgid(domain="corp.example")
    msg["In-Reply-To"] = original["Message-ID"]
    msg.set_content("Please remove me from your list.")
    return bytes(msg)


@pytest.fixture
def history(cli, tmp_path: Path, smtp_sink) -> None:
    """Ann's whole story: enrolled, emailed, called, a delayed-mail report, then an unsubscribe reply."""
    cli("users", "add", REP, "--role", "rep", "--name", "Rita Rep")
    cli("mailboxes", "add", REP, "--owner", REP)
    (tmp_path / "tl.toml").write_text(CADENCE, encoding="utf-8")
    cli("cadence", "apply", str(tmp_path / "tl.toml"))
    (tmp_path / "leads.csv").write_text(f"email,phone,first_name,owner\nann@corp.example,+12125550100,Ann,{REP}\n",
                                        encoding="utf-8")
    cli("leads", "import", str(tmp_path / "leads.csv"), "--cadence", "tl", now="2026-03-02T14:00:00Z")
    cli("worker", "--once", now="2026-03-02T14:00:00Z")
    cli("worker", "--once", now="2026-03-03T14:00:00Z")
    [task] = json.loads(cli("tasks", "--format", "json", now="2026-03-03T14:30:00Z").output)
    cli("task", "done", str(task["id"]), "--outcome", "connected", "--notes", "asked for details",
        now="2026-03-03T15:00:00Z")
    [intro] = smtp_sink.messages()
    (tmp_path / "dsn.eml").write_bytes(_dsn(intro))
    assert json.loads(cli("inbound", "email", str(tmp_path / "dsn.eml"), now="2026-03-03T16:00:00Z").output)[
        "kind"] == "bounce"
    (tmp_path / "reply.eml").write_bytes(_unsubscribe_reply(intro))
    cli("inbound", "email", str(tmp_path / "reply.eml"), now="2026-03-04T10:00:00Z")


def timeline(cli, ref: str) -> list[dict]:
    return json.loads(cli("timeline", ref, "--format", "json").output)


def test_every_kind_shows_up_in_time_order(cli, history) -> None:
    rows = timeline(cli, "ann@corp.example")
    seen = [(r["at"], r["kind"], r["step"]) for r in rows]
    assert seen[:7] == [
        ("2026-03-02T14:00:00Z", "enrolled", None),
        ("2026-03-02T14:00:00Z", "attempt", "intro"),
        ("2026-03-02T14:00:00Z", "touch", "intro"),
        ("2026-03-03T14:00:00Z", "task", "call"),
        ("2026-03-03T15:00:00Z", "touch", "call"),
        ("2026-03-03T15:00:00Z", "task_done", "call"),
        ("2026-03-03T16:00:00Z", "bounce", None),
    ]
    # The reply, the opt-out it asked for, the rep's reply task and the exit share one instant.
    assert sorted(seen[7:], key=str) == sorted([
        ("2026-03-04T10:00:00Z", "opt_out", None), ("2026-03-04T10:00:00Z", "reply", None),
        ("2026-03-04T10:00:00Z", "task", "intro"), ("2026-03-04T10:00:00Z", "exited", None)], key=str)
    assert seen[-1][1] == "exited"
    by_kind = {r["kind"]: r for r in rows if r["kind"] not in ("task", "touch")}
    intro, call = (r for r in rows if r["kind"] == "touch")
    assert (intro["status"], intro["channel"], intro["detail"]) == ("sent", "email", "Question for Ann")
    assert (call["status"], call["channel"]) == ("completed", "voice")
    assert "outcome connected: asked for details" in call["detail"]
    assert (by_kind["attempt"]["status"], by_kind["attempt"]["detail"]) == ("ok", "attempt 1")
    assert by_kind["task_done"]["detail"] == "connected, asked for details"
    assert by_kind["bounce"]["status"] == "transient"
    assert by_kind["reply"]["detail"] == "Please remove me from your list."
    assert (by_kind["exited"]["status"], by_kind["exited"]["cadence"]) == ("opted_out", "tl")
    assert by_kind["enrolled"]["cadence"] == "tl"


def test_json_times_are_utc_with_z(cli, history) -> None:
    rows = timeline(cli, "ann@corp.example")
    assert rows and all(r["at"].endswith("Z") and "+00:00" not in r["at"] for r in rows)


def test_lead_is_found_by_email_phone_or_id(cli, history) -> None:
    by_email = timeline(cli, "ANN@corp.example")
    [lead] = json.loads(cli("leads", "list", "--format", "json").output)
    assert timeline(cli, "+12125550100") == by_email
    assert timeline(cli, str(lead["id"])) == by_email
    table = cli("timeline", "+12125550100").output
    assert table.splitlines()[0].split() == ["AT", "KIND", "CHANNEL", "STATUS", "CADENCE", "STEP", "DETAIL"]
    assert "task_done" in table
    assert "no lead with email nobody@corp.example" in cli("timeline", "nobody@corp.example", expect=1).output
    assert "no lead with phone +12125550199" in cli("timeline", "+12125550199", expect=1).output
    assert "no lead with id 999" in cli("timeline", "999", expect=1).output
