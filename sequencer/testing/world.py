"""The world the tests set up and look at: a rep with a mailbox, cadences, leads, enrollments, the
messages that went out and the ones that come back (replies, delivery reports, complaints).

`cli` is the `cli` fixture of sequencer.testing (or any callable with its signature), `runtime` the
`runtime` fixture and `sink` a MailSink.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from sequencer.clock import iso_z
from sequencer.mailsink import MailSink
from sequencer.models import Cadence, Enrollment, Lead, Touch
from sequencer.web import create_app

REP = "rep@acme.example"

# A schedule that never waits: every day, all day, in UTC, without holidays.
ALWAYS_OPEN = """
[schedule]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
timezone = "UTC"
holidays = "none"
"""

# A call the rep makes (a task), then an email a day later.
CALLS = 'name = "calls"\n' + ALWAYS_OPEN + """
[[steps]]
key = "call"
channel = "voice"
body = "Call {{ lead.first_name }} at {{ lead.phone }}."

[[steps]]
key = "after"
channel = "email"
wait = "1d"
subject = "After our call"
body = "Hi {{ lead.first_name }}, thanks for your time."
"""


def utc(text: str) -> datetime:
    """An aware UTC datetime from ISO text such as 2026-03-02T14:00:00Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _at(now: datetime | str | None) -> str | None:
    return iso_z(now) if isinstance(now, datetime) else now


# -- the rep, cadences, leads -------------------------------------------------------------------


def team(cli, rep: str = REP, *, name: str = "Rita Rep", timezone: str = "UTC", mailbox_name: str | None = None,
         daily_cap: int | None = None, now: str | None = None) -> None:
    """A rep and a mailbox of the same address that the rep owns.

    The mailbox shows the rep's name unless `mailbox_name` says otherwise ("" for none); without
    `daily_cap` it gets the configured default cap.
    """
    cli("users", "add", rep, "--role", "rep", "--name", name, "--timezone", timezone, now=now)
    cap = [] if daily_cap is None else ["--daily-cap", str(daily_cap)]
    cli("mailboxes", "add", rep, "--owner", rep, "--name", name if mailbox_name is None else mailbox_name, *cap,
        now=now)


def cadence_name(text: str) -> str:
    return re.search(r'name = "([^"]+)"', text).group(1)  # type: ignore[union-attr]


def apply(cli, tmp_path: Path, text: str, *, now: str | None = None) -> Path:
    """Write a cadence's TOML to NAME.toml and `cadence apply` it; return the file."""
    path = tmp_path / f"{cadence_name(text)}.toml"
    path.write_text(text, encoding="utf-8")
    cli("cadence", "apply", str(path), now=now)
    return path


def enroll_csv(cli, tmp_path: Path, rows: list[str], cadence: str, now: datetime | str | None = None,
               header: str = "email,first_name,owner") -> None:
    """Import CSV rows under `header` into `cadence`, at `now`."""
    path = tmp_path / "leads.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    cli("leads", "import", str(path), "--cadence", cadence, now=_at(now))


def enroll_emails(cli, tmp_path: Path, emails: list[str], cadence: str, now: datetime | str | None = None) -> None:
    """Import leads of the rep by address alone (the first name is the local part) into `cadence`."""
    enroll_csv(cli, tmp_path, [f"{e},{e.split('@')[0].title()},{REP}" for e in emails], cadence, now)


# -- reading the database and the sink ---------------------------------------------------------


def enrollment_of(runtime, email: str) -> Enrollment:
    """The lead's latest enrollment."""
    with runtime.session() as s:
        return s.scalars(sa.select(Enrollment).join(Lead).where(Lead.email == email)
                         .order_by(Enrollment.id.desc())).first()


def touches(runtime, email: str | None = None) -> list[Touch]:
    """Every touch (of one lead, given its address), in the order they were made."""
    with runtime.session() as s:
        query = sa.select(Touch).order_by(Touch.id)
        if email:
            query = query.join(Lead, Lead.id == Touch.lead_id).where(Lead.email == email)
        return list(s.scalars(query))


def recipients(sink: MailSink) -> list[str]:
    """The To address of each message the sink received, in order."""
    return [m["To"].addresses[0].addr_spec for m in sink.messages()]


def messages_to(sink: MailSink, email: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"].addresses[0].addr_spec == email]


def sent_to(sink: MailSink, email: str) -> EmailMessage:
    """The last message the sink received for `email`."""
    return messages_to(sink, email)[-1]


# -- what comes back ------------------------------------------------------------------------------


def reply(*, sender: str, body: str, to: str = REP, subject: str = "Re: Question", message_id: str | None = None,
          in_reply_to: str | None = None, references: str | None = None, headers: dict[str, str] | None = None,
          domain: str = "mail.example") -> bytes:
    """A plain-text message to the rep (a new Message-ID at `domain` unless `message_id` is given)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return bytes(msg)


def reply_to(original: EmailMessage, *, sender: str, body: str, headers: dict[str, str] | None = None) -> bytes:
    """An answer from the lead's side in the thread of `original`, to its sender ("Re: " its subject)."""
    return reply(sender=sender, body=body, to=original["From"], subject="Re: " + original["Subject"],
                 in_reply_to=original["Message-ID"], references=original["Message-ID"], headers=headers,
                 domain="lead.example")


def dsn(original: EmailMessage, recipient: str, status: str, diagnostic: str, *, action: str | None = None,
        to: str = REP, mta: str = "mx.corp.example", subject: str = "Delivery Status Notification",
        explanation: str | None = None) -> bytes:
    """An RFC 3464 delivery status notification from `mta`, returning our message's headers.

    The action is `failed` for a 5.x.x status and `delayed` otherwise, unless given.
    """
    headers = "".join(f"{k}: {v}\r\n" for k, v in original.items())
    action = action or ("failed" if status[0] == "5" else "delayed")
    explanation = explanation or f"This is the mail system at host {mta}."
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain=mta)}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\n{explanation}\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {mta}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\n"
        f"Status: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}"
        "--B--\r\n"
    ).encode()


def arf(original: EmailMessage, recipient: str, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 abuse report, in the shape of shared/data/bounces/arf-*.eml, about our message."""
    return (
        "From: Feedback Loop <fbl@isp.example>\r\n"
        f"To: {REP}\r\n"
        "Subject: Email Feedback Report for IP 192.0.2.10\r\n"
        f"Message-ID: {make_msgid(domain='isp.example')}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: {recipient}\r\nSource-IP: 192.0.2.10\r\n\r\n"
        f"--F\r\nContent-Type: message/rfc822\r\n\r\n{original.as_string()}\r\n"
        "--F--\r\n"
    ).encode()


# -- a lead in the database, and the web app -------------------------------------------------------


def make_lead(session, now: datetime, *, email: str = "Jane.Doe@Example.com", phone: str | None = "+14155552671",
              enroll_in: tuple[str, ...] = ("Outbound Q2",)) -> Lead:
    """Add a lead with one active enrollment per named cadence."""
    lead = Lead(email=email, email_normalized=email.lower(), phone=phone, created_at=now, updated_at=now)
    session.add(lead)
    session.flush()
    for name in enroll_in:
        cadence = Cadence(name=name, version=1, state="active", schedule={}, exit_rules={},
                          definition_hash="x", created_at=now)
        session.add(cadence)
        session.flush()
        session.add(Enrollment(lead_id=lead.id, cadence_id=cadence.id, cadence_name=name, state="active",
                               anchor_at=now, enrolled_at=now, next_due_at=now))
    session.flush()
    return lead


# Fixtures of the web app: a test module uses them by importing them
# (`from sequencer.testing.world import client_fixture`), then asks for `client` by name.


@pytest.fixture(name="app")
def app_fixture(runtime) -> Flask:
    return create_app(runtime, test_config={"TESTING": True})


@pytest.fixture(name="client")
def client_fixture(app: Flask):
    return app.test_client(use_cookies=False)


@pytest.fixture(name="lead_id")
def lead_id_fixture(runtime) -> int:
    """A lead with one active enrollment (make_lead)."""
    with runtime.session() as session:
        return make_lead(session, runtime.now()).id
