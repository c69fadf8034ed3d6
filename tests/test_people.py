"""Users and mailboxes: the CLI, validation, holds and releases, audit entries."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer.models import AuditEntry, Mailbox, User
from sequencer.users import (
    PeopleError,
    authenticate,
    add_mailbox,
    add_user,
    find_user,
    hold_mailbox,
    list_mailboxes,
    release_mailbox,
)

NOW = "2026-03-02T14:00:00Z"


def test_users_add_and_list(cli) -> None:
    assert cli("users", "add", "Ana@Example.com", "--role", "admin", "--name", "Ana Lopez", "--timezone",
               "europe/madrid", "--phone", "+34 912 34 56 78").output == "user ana@example.com added (admin)\n"
    cli("users", "add", "rep@example.com", "--role", "rep")
    users = json.loads(cli("users", "list", "--format", "json").output)
    assert users == [
        {"id": users[0]["id"], "email": "ana@example.com", "name": "Ana Lopez", "role": "admin",
         "timezone": "Europe/Madrid", "phone": "+34912345678", "locale": "en", "active": True, "password": False},
        {"id": users[1]["id"], "email": "rep@example.com", "name": "", "role": "rep", "timezone": "UTC",
         "phone": None, "locale": "en", "active": True, "password": False},
    ]
    table = cli("users", "list").output.splitlines()
    assert table[0].split() == ["ID", "EMAIL", "NAME", "ROLE", "TIMEZONE", "PHONE", "LOCALE", "ACTIVE",
                                "PASSWORD"] and len(table) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["ANA@example.com", "--role", "rep"], "user ana@example.com already exists"),
    (["bob@", "--role", "rep"], "email 'bob@' is not valid"),
    (["bob@example.com", "--role", "rep", "--timezone", "Mars/Olympus"], "time zone 'Mars/Olympus' is unknown"),
    (["bob@example.com", "--role", "rep", "--phone", "12345"], "phone '12345' has no valid country code"),
    (["bob@example.com", "--role", "boss"], "'boss' is not one of 'admin', 'ops', 'rep'"),
])
def test_users_add_errors_name_the_problem(cli, args: list[str], message: str) -> None:
    cli("users", "add", "ana@example.com", "--role", "admin")
    result = cli("users", "add", *args, expect=2 if "boss" in args else 1)
    assert message in result.output


def user_row(runtime, email: str) -> User:
    with runtime.session() as session:
        return find_user(session, email)


def test_users_add_and_set_with_a_password_from_stdin(cli, runtime) -> None:
    assert cli("users", "add", "rep@example.com", "--role", "rep", "--locale", "ru", "--password-stdin",
               input="first password\n").output == "user rep@example.com added (rep)\n"
    user = user_row(runtime, "rep@example.com")
    assert user.password_hash.startswith("scrypt:") and "first password" not in user.password_hash
    assert user.locale == "ru" and user.active
    output = cli("users", "set", "REP@example.com", "--role", "ops", "--phone", "+1 212 555 0199", "--timezone",
                 "asia/tokyo", "--locale", "en", "--password-stdin", input="second password\n").output
    assert output == "user rep@example.com: changed role, phone, timezone, locale, password\n"
    user = user_row(runtime, "rep@example.com")
    assert (user.role.value, user.phone, user.timezone, user.locale) == ("ops", "+12125550199", "Asia/Tokyo", "en")
    with runtime.session() as session:
        assert authenticate(session, "rep@example.com", "second password", now=runtime.now()) is not None
        assert authenticate(session, "rep@example.com", "first password", now=runtime.now()) is None
    assert cli("users", "set", "rep@example.com", "--deactivate").output == "user rep@example.com: changed active\n"
    with runtime.session() as session:
        assert authenticate(session, "rep@example.com", "second password", now=runtime.now()) is None
    assert cli("users", "set", "rep@example.com", "--activate", "--phone", "").output == \
        "user rep@example.com: changed phone, active\n"
    assert user_row(runtime, "rep@example.com").phone is None
    assert cli("users", "set", "rep@example.com", "--role", "ops").output == "user rep@example.com: nothing to change\n"
    with runtime.session() as session:
        audits = [e.detail for e in session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "user.set"))]
    assert audits[0]["changed"] == ["role", "phone", "timezone", "locale", "password"]
    assert "second password" not in json.dumps(audits) and "scrypt" not in json.dumps(audits)


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["nobody@example.com", "--role", "ops"], None, "no user nobody@example.com"),
    (["rep@example.com", "--timezone", "Mars/Olympus"], None, "time zone 'Mars/Olympus' is unknown"),
    (["rep@example.com", "--password-stdin"], "short\n", "the password has 5 characters; use at least 8"),
    (["rep@example.com", "--password-stdin"], "", "--password-stdin read no password"),
])
def test_users_set_errors_name_the_problem_and_change_nothing(cli, runtime, args, stdin, message) -> None:
    cli("users", "add", "rep@example.com", "--role", "rep")
    result = cli("users", "set", *args, "--role", "admin", input=stdin, expect=1)
    assert message in result.output
    assert user_row(runtime, "rep@example.com").role.value == "rep"


def test_demo_load_prints_who_can_sign_in(cli, runtime) -> None:
    from sequencer.demo import DEMO_PASSWORD
    from sequencer.testing import REPO

    output = cli("demo", "load", "--dir", str(REPO / "demo")).output
    assert f"with password {DEMO_PASSWORD} as:" in output
    for line in ("admin@demo.example (admin)", "ops@demo.example (ops)", "rita@demo.example (rep)",
                 "ivan@demo.example (rep)"):
        assert f"  {line}\n" in output
    with runtime.session() as session:
        assert authenticate(session, "ivan@demo.example", DEMO_PASSWORD, now=runtime.now()) is not None


def test_find_user_is_case_insensitive(runtime) -> None:
    with runtime.session() as session:
        user = add_user(session, "Ana@Example.com", "ops", now=runtime.now())
        assert find_user(session, " ANA@example.COM ") is user
        with pytest.raises(LookupError, match="no user bob@example.com; add them with `sequencer users add`"):
            find_user(session, "bob@example.com")
        with pytest.raises(PeopleError, match="role 'boss' is unknown; use one of admin, ops, rep"):
            add_user(session, "bob@example.com", "boss", now=runtime.now())


def test_mailboxes_add_list_and_hold(cli) -> None:
    cli("users", "add", "rep@example.com", "--role", "rep")
    assert cli("mailboxes", "add", "Rep@Example.com", "--owner", "REP@example.com", "--name", "Rep Person",
               "--daily-cap", "50", "--signature", "-- Rep").output == "mailbox rep@example.com added (daily cap 50)\n"
    cli("mailboxes", "add", "sales@example.com", "--owner", "rep@example.com")
    listed = json.loads(cli("mailboxes", "list", "--format", "json").output)
    assert [(m["address"], m["display_name"], m["owner"], m["daily_cap"], m["state"], m["held_reason"])
            for m in listed] == [("rep@example.com", "Rep Person", "rep@example.com", 50, "active", None),
                                 ("sales@example.com", "", "rep@example.com", 200, "active", None)]
    assert cli("mailboxes", "hold", "rep@example.com", "--reason", "5.7.26 DMARC failure", now=NOW).output == \
        "mailbox rep@example.com held: 5.7.26 DMARC failure\n"
    held = json.loads(cli("mailboxes", "list", "--format", "json").output)[0]
    assert (held["state"], held["held_reason"], held["held_at"]) == ("held", "5.7.26 DMARC failure", NOW)
    table = cli("mailboxes", "list").output.splitlines()
    assert table[0].split() == ["ADDRESS", "DISPLAY_NAME", "OWNER", "DAILY_CAP", "STATE", "HELD_REASON", "INBOUND"]


def test_mailbox_errors(cli) -> None:
    cli("users", "add", "rep@example.com", "--role", "rep")
    assert "no user ghost@example.com" in cli("mailboxes", "add", "a@example.com", "--owner", "ghost@example.com",
                                              expect=1).output
    cli("mailboxes", "add", "a@example.com", "--owner", "rep@example.com")
    assert "mailbox a@example.com already exists" in cli("mailboxes", "add", "A@example.com", "--owner",
                                                         "rep@example.com", expect=1).output
    assert "no mailbox b@example.com" in cli("mailboxes", "hold", "b@example.com", "--reason", "x", expect=1).output
    assert "a hold needs a reason" in cli("mailboxes", "hold", "a@example.com", "--reason", " ", expect=1).output


def test_hold_again_keeps_the_first_time_and_release_clears_it(runtime) -> None:
    now = runtime.now()
    with runtime.session() as session:
        add_user(session, "rep@example.com", "rep", now=now)
        box = add_mailbox(session, "rep@example.com", owner_email="rep@example.com", now=now)
        hold_mailbox(session, "rep@example.com", "blocklisted", now)
        hold_mailbox(session, "REP@example.com", "blocklisted (Spamhaus)", now + timedelta(hours=1))
        assert (box.state, box.held_reason, box.held_at) == ("held", "blocklisted (Spamhaus)", now)
        released = release_mailbox(session, "rep@example.com", now + timedelta(hours=2))
        assert released is box
        assert (box.state, box.held_reason, box.held_at) == ("active", None, None)
        assert [(m.address, owner) for m, owner in list_mailboxes(session)] == [("rep@example.com", "rep@example.com")]
    with runtime.session() as session:
        stored = session.scalar(sa.select(Mailbox))
        assert (stored.state, stored.held_reason) == ("active", None)


def test_changes_are_audited_with_the_cli_actor(cli, runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQUENCER_ACTOR", "ops-lead")
    cli("users", "add", "rep@example.com", "--role", "rep", now=NOW)
    cli("mailboxes", "add", "rep@example.com", "--owner", "rep@example.com", now=NOW)
    cli("mailboxes", "hold", "rep@example.com", "--reason", "bounce storm", now=NOW)
    with runtime.session() as session:
        entries = session.execute(sa.select(AuditEntry.actor, AuditEntry.action, AuditEntry.at)
                                  .order_by(AuditEntry.id)).all()
    assert [(actor, action) for actor, action, _at in entries] == [
        ("ops-lead", "user.add"), ("ops-lead", "mailbox.add"), ("ops-lead", "mailbox.hold")]
    assert all(at == runtime.now() for *_rest, at in entries)
