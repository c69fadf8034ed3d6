"""IMAP polling against a real Dovecot (Debian's dovecot-imapd), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.models import AuditEntry, Enrollment, InboundEvent, Lead, Mailbox, Task
from sequencer.runtime import Runtime
from sequencer.testing import unavailable
from sequencer.testing.dovecot import PASSWORD, Dovecot, DovecotUnavailable
from sequencer.testing.world import REP, apply, enroll_csv, team
from sequencer_email import inbound as inbound_module
from sequencer_email.imap import backoff, poll_inbound, poll_mailbox
from test_inbound import arf_naming_nobody

LEAD = "nina@ny.example"
NOW = "2026-03-02T14:00:00Z"  # the `clock` fixture: Monday 09:00 in New York
PASSWORD_ENV = "SEQ_TEST_IMAP_PASSWORD"

CADENCE = """
name = "imap"
[schedule]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
timezone = "lead"

[[steps]]
key = "intro"
channel = "email"
subject = "Quick question, {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, would fewer manual follow-ups help?"

[[steps]]
key = "bump"
channel = "email"
wait = "3d"
thread = true
body = "Bumping this up."
"""


def start_dovecot() -> Dovecot:
    try:
        return Dovecot().start()
    except DovecotUnavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def dovecot():
    """One Dovecot per xdist worker; each test gets a user, and so an INBOX, of its own."""
    server = start_dovecot()
    yield server
    server.destroy()


@pytest.fixture
def private_dovecot():
    """A Dovecot of the test's own: failed logins make Dovecot slow down every later login from the address."""
    server = start_dovecot()
    yield server
    server.destroy()


@pytest.fixture
def sent(cli, tmp_path: Path, smtp_sink) -> EmailMessage:
    """A rep's mailbox, a lead in a two-email cadence, and the first email sent to the lead."""
    team(cli)
    apply(cli, tmp_path, CADENCE)
    enroll_csv(cli, tmp_path, [f"{LEAD},Nina,Big Apple,America/New_York,{REP}"], "imap", NOW,
               header="email,first_name,company,timezone,owner")
    cli("worker", "--once", now=NOW)
    (message,) = smtp_sink.messages()
    return message


def configure(cli, server: Dovecot, user: str, *extra: str, port: int | None = None,
              security: str = "none") -> None:
    cli("mailboxes", "inbound", REP, "--host", server.host, "--port", str(port or server.port),
        "--security", security, "--username", user, "--password-env", PASSWORD_ENV, *extra, now=NOW)


@pytest.fixture
def imap_user(dovecot: Dovecot, cli, sent, monkeypatch) -> str:
    """A fresh Dovecot user whose INBOX the rep's mailbox polls, read-only."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    user = dovecot.add_user()
    configure(cli, dovecot, user)
    return user


def reply_to(original: EmailMessage, body: str = "Sounds good, can we talk Thursday?") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Nina York <{LEAD}>"
    msg["To"] = original["From"]
    msg["Subject"] = "Re: " + original["Subject"]
    msg["Message-ID"] = make_msgid(domain="ny.example")
    msg["In-Reply-To"] = original["Message-ID"]
    msg["References"] = original["Message-ID"]
    msg.set_content(body)
    return bytes(msg)


def other_mail(subject: str = "Lunch?") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Colleague <colleague@acme.example>"
    msg["To"] = REP
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg.set_content("Lunch at noon?")
    return bytes(msg)


def mailbox(runtime) -> Mailbox:
    with runtime.session() as session:
        return session.scalar(sa.select(Mailbox).where(Mailbox.address == REP))


def state_of_lead(runtime) -> str:
    with runtime.session() as session:
        state = session.scalar(sa.select(Enrollment.state).join(Lead).where(Lead.email == LEAD))
        return str(getattr(state, "value", state))


def recorded(runtime) -> list[tuple[str, str | None]]:
    with runtime.session() as session:
        return [(e.kind, e.message_id) for e in session.scalars(sa.select(InboundEvent).order_by(InboundEvent.id))]


def reply_tasks(runtime) -> int:
    with runtime.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.kind == "reply"))


def test_a_reply_is_picked_up_once_and_left_unread(runtime, settings, clock, dovecot, imap_user, sent) -> None:
    message = reply_to(sent)
    uid = dovecot.append(imap_user, message)

    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.mailbox, result.fetched, result.skipped, result.errors) == (REP, 1, 0, [])
    assert result.messages[0]["kind"] == "reply"
    assert state_of_lead(runtime) == "replied"
    assert reply_tasks(runtime) == 1
    assert "\\Seen" not in dovecot.flags(imap_user)[uid]
    box = mailbox(runtime)
    assert (box.imap_uidvalidity, box.imap_last_uid) == (dovecot.uidvalidity(imap_user), uid)
    assert (box.inbound_error, box.inbound_failures, box.inbound_checked_at) == (None, 0, clock.now())

    # Polling again, from a restarted poller, and after a restart of the server: nothing is read twice.
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 0
    restarted = Runtime(settings, clock)
    try:
        assert poll_inbound(restarted.plugins.core("email"))[0].fetched == 0
        dovecot.restart()
        assert poll_inbound(restarted.plugins.core("email"))[0].fetched == 0
        later = dovecot.append(imap_user, other_mail())
        (result,) = poll_inbound(restarted.plugins.core("email"))
        assert (result.fetched, [m["uid"] for m in result.messages]) == (1, [later])
    finally:
        restarted.dispose()
    assert [kind for kind, _ in recorded(runtime)] == ["reply", "reply"]
    assert reply_tasks(runtime) == 1  # the colleague is not a lead: recorded, nothing to act on
    assert all("\\Seen" not in flags for flags in dovecot.flags(imap_user).values())


def test_uidvalidity_change_rereads_without_acting_twice(runtime, dovecot, imap_user, sent) -> None:
    first = reply_to(sent)
    dovecot.append(imap_user, first)
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 1
    before = dovecot.uidvalidity(imap_user)

    dovecot.change_uidvalidity(imap_user)
    new = dovecot.append(imap_user, other_mail())
    assert dovecot.uidvalidity(imap_user) != before

    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.fetched, result.skipped, result.errors) == (1, 1, [])
    assert [m["note"] for m in result.messages if "note" in m] == ["already recorded; not acted on again"]
    assert [kind for kind, _ in recorded(runtime)] == ["reply", "reply"]
    assert reply_tasks(runtime) == 1
    box = mailbox(runtime)
    assert (box.imap_uidvalidity, box.imap_last_uid) == (dovecot.uidvalidity(imap_user), new)
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 0


def test_mark_seen_marks_handled_messages_read(runtime, cli, dovecot, imap_user, sent) -> None:
    configure(cli, dovecot, imap_user, "--mark-seen")
    uid = dovecot.append(imap_user, reply_to(sent))
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 1
    assert "\\Seen" in dovecot.flags(imap_user)[uid]


def test_move_to_moves_handled_messages(runtime, cli, dovecot, imap_user, sent) -> None:
    configure(cli, dovecot, imap_user, "--move-to", "Sequencer/Done")
    dovecot.append(imap_user, reply_to(sent))
    dovecot.append(imap_user, other_mail())
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.fetched, result.errors) == (2, [])
    assert dovecot.flags(imap_user) == {}
    moved = dovecot.flags(imap_user, "Sequencer/Done")
    assert len(moved) == 2 and all("\\Seen" not in flags for flags in moved.values())
    assert mailbox(runtime).inbound_error is None


def test_skip_existing_reads_only_new_mail(runtime, cli, dovecot, imap_user, sent) -> None:
    dovecot.append(imap_user, reply_to(sent))
    configure(cli, dovecot, imap_user, "--skip-existing")
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 0
    assert state_of_lead(runtime) == "active"
    dovecot.append(imap_user, other_mail())
    assert poll_inbound(runtime.plugins.core("email"))[0].fetched == 1


def test_wrong_password_backs_off(runtime, cli, clock, private_dovecot, sent, monkeypatch) -> None:
    user = private_dovecot.add_user()
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    configure(cli, private_dovecot, user)

    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert result.fetched == 0 and "login failed for " + user in result.errors[0]
    box = mailbox(runtime)
    assert "AUTHENTICATIONFAILED" in box.inbound_error
    assert (box.inbound_failures, box.inbound_retry_at) == (1, clock.now() + timedelta(minutes=1))
    listed = json.loads(cli("mailboxes", "list", "--format", "json").output)[0]
    assert listed["inbound"].startswith("login failed") and listed["inbound_failures"] == 1
    assert "login failed" in cli("mailboxes", "list").output.splitlines()[1]
    assert private_dovecot.login_failures(user) == 1

    # Not again before the retry time: no tight loop against the server.
    clock.advance(timedelta(seconds=59))
    assert poll_inbound(runtime.plugins.core("email")) == []
    assert mailbox(runtime).inbound_failures == 1
    assert private_dovecot.login_failures(user) == 1

    clock.advance(timedelta(seconds=1))
    assert poll_inbound(runtime.plugins.core("email"))[0].errors
    box = mailbox(runtime)
    assert (box.inbound_failures, box.inbound_retry_at) == (2, clock.now() + timedelta(minutes=2))
    assert private_dovecot.login_failures(user) == 2

    # Fixed: the next poll succeeds and the mailbox is healthy again.
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    clock.advance(timedelta(minutes=2))
    assert poll_inbound(runtime.plugins.core("email"))[0].errors == []
    box = mailbox(runtime)
    assert (box.inbound_error, box.inbound_failures, box.inbound_retry_at) == (None, 0, None)
    assert json.loads(cli("mailboxes", "list", "--format", "json").output)[0]["inbound"] == "ok"


def test_unreachable_server_is_an_error_not_a_crash(runtime, cli, clock, sent, monkeypatch) -> None:
    from sequencer.testing.postgres import free_port

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    cli("mailboxes", "inbound", REP, "--host", "127.0.0.1", "--port", str(free_port()), "--security", "none",
        "--username", "u", "--password-env", PASSWORD_ENV)
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert result.errors[0].startswith("cannot connect to 127.0.0.1:")
    assert mailbox(runtime).inbound_retry_at == clock.now() + timedelta(minutes=1)


def test_missing_password_variable_is_reported(runtime, cli, dovecot, sent, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    configure(cli, dovecot, dovecot.add_user())
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert f"environment variable {PASSWORD_ENV}, which is not set" in result.errors[0]
    assert mailbox(runtime).inbound_failures == 1


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_with_the_servers_certificate(runtime, cli, dovecot, imap_user, sent, security) -> None:
    port = dovecot.ssl_port if security == "ssl" else dovecot.port
    configure(cli, dovecot, imap_user, port=port, security=security)
    dovecot.append(imap_user, reply_to(sent))
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert "CERTIFICATE_VERIFY_FAILED" in result.errors[0]  # an unknown certificate is never trusted

    configure(cli, dovecot, imap_user, "--ca-file", str(dovecot.cert), port=port, security=security)
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.fetched, result.errors) == (1, [])
    assert state_of_lead(runtime) == "replied"
    logins = [line for line in dovecot.log.read_text().splitlines() if f"Login: user=<{imap_user}>" in line]
    assert any("TLS" in line for line in logins)  # the poller's; the test's own appends use plain IMAP


def test_poll_command_shows_what_was_read(cli, dovecot, imap_user, sent) -> None:
    dovecot.append(imap_user, reply_to(sent))
    out = cli("inbound", "poll", "--mailbox", REP, now=NOW).output
    assert "reply" in out and "ended 1 enrollment(s) as replied" in out
    assert f"{REP}: 1 message(s) handled" in out
    (row,) = json.loads(cli("inbound", "poll", "--format", "json", now=NOW).output)
    assert (row["mailbox"], row["fetched"], row["messages"]) == (REP, 0, [])


def test_poll_command_fails_on_errors(cli, sent) -> None:
    assert "has no IMAP settings" in cli("inbound", "poll", "--mailbox", REP, expect=1).output
    assert "no mailbox" in cli("inbound", "poll", "--mailbox", "nobody@acme.example", expect=1).output


def test_inbound_settings_keep_the_password_out_of_sight(runtime, cli, sent) -> None:
    result = cli("mailboxes", "inbound", REP, "--host", "imap.acme.example", "--username", REP,
                 "--password-stdin", "--mark-seen", input="app-password-123\n")
    assert "app-password-123" not in result.output
    assert "stored in the database" in result.output
    assert mailbox(runtime).inbound == {"host": "imap.acme.example", "port": 993, "security": "ssl",
                                        "username": REP, "folder": "INBOX", "mark_seen": True,
                                        "password": "app-password-123"}
    listed = cli("mailboxes", "list", "--format", "json").output
    assert "app-password-123" not in listed and json.loads(listed)[0]["inbound"] == "never polled"
    with runtime.session() as session:
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "mailbox.inbound")).one()
    assert entry.detail["password"] == "stored" and entry.object_type == "mailbox"
    assert entry.detail["host"] == "imap.acme.example"

    cli("mailboxes", "inbound", REP, "--host", "imap.acme.example", "--username", REP,
        "--password-env", "ACME_IMAP_PASSWORD")
    assert "password" not in mailbox(runtime).inbound
    assert mailbox(runtime).inbound["password_env"] == "ACME_IMAP_PASSWORD"


@pytest.mark.parametrize(("args", "error"), [
    (["--security", "none", "--password-env", "X"], "would send the password to imap.acme.example unencrypted"),
    (["--password-env", "X", "--password-stdin"], "not both"),
    ([], "give exactly one of --password-env"),
    (["--password-env", "NOT A NAME"], "is not an environment variable name"),
    (["--password-env", "X", "--move-to", "INBOX"], "--move-to must name another folder"),
    (["--password-env", "X", "--ca-file", "/nonexistent.pem"], "--ca-file /nonexistent.pem: no such file"),
])
def test_inbound_settings_errors(cli, sent, args, error) -> None:
    result = cli("mailboxes", "inbound", REP, "--host", "imap.acme.example", "--username", REP, *args, expect=1)
    assert error in result.output


def test_poll_mailbox_of_an_unknown_id(runtime) -> None:
    with pytest.raises(LookupError, match="no sender with id 999"):
        poll_mailbox(runtime.plugins.core("email"), 999)


def test_backoff_doubles_up_to_an_hour() -> None:
    assert [backoff(n) for n in (1, 2, 3, 6, 7, 50)] == [timedelta(minutes=m) for m in (1, 2, 4, 32, 60, 60)]


def test_a_message_that_cannot_be_acted_on_does_not_stop_the_poller(runtime, dovecot, imap_user, sent) -> None:
    complaint_uid = dovecot.append(imap_user, arf_naming_nobody())
    reply_uid = dovecot.append(imap_user, reply_to(sent))
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.fetched, result.errors) == (2, [])
    assert [(m["uid"], m["kind"], m.get("unmatched")) for m in result.messages] == [
        (complaint_uid, "complaint", "the complaint names no recipient"), (reply_uid, "reply", None)]
    assert state_of_lead(runtime) == "replied"
    assert mailbox(runtime).imap_last_uid == reply_uid


def test_acting_that_fails_for_good_moves_on(runtime, dovecot, imap_user, sent, monkeypatch) -> None:
    real_handle = inbound_module.handle_email

    def handle_failing_on_the_colleague(core, raw):
        if b"Lunch at noon?" in raw:
            raise ValueError("a value the database refuses")
        return real_handle(core, raw)

    monkeypatch.setattr(inbound_module, "handle_email", handle_failing_on_the_colleague)
    dovecot.append(imap_user, other_mail())
    reply_uid = dovecot.append(imap_user, reply_to(sent))
    (result,) = poll_inbound(runtime.plugins.core("email"))
    assert (result.fetched, result.errors) == (2, [])
    assert [m["kind"] for m in result.messages] == ["unknown", "reply"]
    assert result.messages[0]["unmatched"].startswith("acting on it failed (ValueError: a value the database refuses)")
    assert state_of_lead(runtime) == "replied"
    assert mailbox(runtime).imap_last_uid == reply_uid


def test_database_failure_keeps_the_message_for_the_next_poll(runtime, dovecot, imap_user, sent,
                                                              monkeypatch) -> None:
    def database_down(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO inbound_events ...", {}, Exception("server closed the connection"))

    with monkeypatch.context() as patch:
        patch.setattr(inbound_module, "handle_email", database_down)
        uid = dovecot.append(imap_user, reply_to(sent))
        (result,) = poll_inbound(runtime.plugins.core("email"))
    assert result.fetched == 0
    assert result.errors == [f"message UID {uid} in INBOX could not be handled (OperationalError: "
                             "server closed the connection); it will be tried again"]
    box = mailbox(runtime)
    assert (box.imap_last_uid, box.inbound_failures) == (None, 1)
    assert recorded(runtime) == []

    (result,) = poll_inbound(runtime.plugins.core("email"), include_waiting=True)  # the database is back
    assert (result.fetched, result.errors) == (1, [])
    assert state_of_lead(runtime) == "replied"
    assert mailbox(runtime).imap_last_uid == uid
