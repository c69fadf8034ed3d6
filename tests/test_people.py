"""Users and mailboxes: the CLI, validation, holds and releases, audit entries."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sequencer.models import AuditEntry, Mailbox
from sequencer.users import (
    PeopleError,
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
         "timezone": "Europe/Madrid", "phone": "+34912345678"},
        {"id": users[1]["id"], "email": "rep@example.com", "name": "", "role": "rep", "timezone": "UTC",
         "phone": None},
    ]
    table = cli("users", "list").output.splitlines()
    assert table[0].split() == ["ID", "EMAIL", "NAME", "ROLE", "TIMEZONE", "PHONE"] and len(table) == 3


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
