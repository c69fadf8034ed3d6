"""`sequencer users ...` and `sequencer mailboxes ...`: the team and the addresses it sends from."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.users import (
    LOCALES,
    ROLES,
    PeopleError,
    add_mailbox,
    add_user,
    hold_mailbox,
    list_mailboxes,
    list_users,
    release_mailbox,
    set_user,
)

if TYPE_CHECKING:
    from sequencer.models import Mailbox


def register(main: click.Group) -> None:
    main.add_command(users)
    main.add_command(mailboxes)


@click.group()
def users() -> None:
    """Users: admins, ops and reps."""


ROLE_HELP = ("admin manages plugins, users and suppressions; ops manages cadences; "
             "rep works their own leads and tasks.")
password_stdin_option = click.option(
    "--password-stdin", is_flag=True,
    help="Read the sign-in password from the first line of standard input (never from the command line, "
         "where other users and the shell history would see it).")


@users.command("add")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES), help=ROLE_HELP)
@click.option("--name", default="", help="Full name.")
@click.option("--timezone", "zone", default="UTC", show_default=True, help="IANA time zone, like Europe/Berlin.")
@click.option("--phone", default=None, help="Phone in international form (+...).")
@click.option("--locale", type=click.Choice(LOCALES), default="en", show_default=True,
              help="Language of the web pages.")
@password_stdin_option
@pass_state
def users_add(state: CliState, email: str, role: str, name: str, zone: str, phone: str | None, locale: str,
              password_stdin: bool) -> None:
    """Add a user; without --password-stdin they cannot sign in until `users set --password-stdin`."""
    password = _read_password() if password_stdin else None
    rt = state.runtime()
    with rt.session() as session:
        try:
            user = add_user(session, email, role, name=name, timezone=zone, phone=phone, locale=locale,
                            password=password, now=rt.now())
        except PeopleError as exc:
            raise UserError(str(exc)) from None
        audit.record(session, actor=audit.cli_actor(), action="user.add", object_type="user", object_id=user.id,
                     at=rt.now(), email=user.email, role=role, can_sign_in=password is not None)
    click.echo(f"user {user.email} added ({role})")


@users.command("set")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default=None, help=ROLE_HELP)
@click.option("--phone", default=None, help="Phone in international form (+...); \"\" removes it.")
@click.option("--timezone", "zone", default=None, help="IANA time zone, like Europe/Berlin.")
@click.option("--locale", type=click.Choice(LOCALES), default=None, help="Language of the web pages.")
@password_stdin_option
@click.option("--deactivate/--activate", "deactivate", default=None,
              help="A deactivated user cannot sign in (their sessions end) but keeps their history.")
@pass_state
def users_set(state: CliState, email: str, role: str | None, phone: str | None, zone: str | None,
              locale: str | None, password_stdin: bool, deactivate: bool | None) -> None:
    """Change a user's role, phone, time zone, language or password, or (de)activate them."""
    password = _read_password() if password_stdin else None
    rt = state.runtime()
    with rt.session() as session:
        try:
            user, changed = set_user(session, email, role=role, phone=phone, timezone=zone, locale=locale,
                                     password=password, active=None if deactivate is None else not deactivate)
        except (PeopleError, LookupError) as exc:
            raise UserError(str(exc)) from None
        if changed:
            # The audit names what changed, never the password or its hash.
            audit.record(session, actor=audit.cli_actor(), action="user.set", object_type="user",
                         object_id=user.id, at=rt.now(), email=user.email, changed=changed,
                         **{f: str(getattr(user, f)) for f in changed if f != "password"})
    click.echo(f"user {user.email}: " + (f"changed {', '.join(changed)}" if changed else "nothing to change"))


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserError("--password-stdin read no password; pipe it in, e.g. `printf '%s' \"$PW\" | sequencer ...`")
    return password


@users.command("list")
@format_option
@pass_state
def users_list(state: CliState, fmt: str) -> None:
    """List users: id, email, name, role, time zone, phone, language, active, whether they can sign in."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [{"id": u.id, "email": u.email, "name": u.name, "role": u.role.value, "timezone": u.timezone,
                 "phone": u.phone, "locale": u.locale, "active": u.active,
                 "password": u.password_hash is not None} for u in list_users(session)]
    emit(rows, fmt, ["id", "email", "name", "role", "timezone", "phone", "locale", "active", "password"])


@click.group()
def mailboxes() -> None:
    """Mailboxes: the addresses email goes out from."""


@mailboxes.command("add")
@click.argument("address")
@click.option("--owner", "owner_email", required=True, metavar="EMAIL", help="The user who owns the mailbox.")
@click.option("--name", "display_name", default="", help="Display name in the From header.")
@click.option("--daily-cap", type=click.IntRange(min=0), default=None,
              help="Emails a day at most (default: [sending] default_daily_cap).")
@click.option("--signature", default="", help="Signature appended to emails from this mailbox.")
@pass_state
def mailboxes_add(state: CliState, address: str, owner_email: str, display_name: str, daily_cap: int | None,
                  signature: str) -> None:
    """Add a mailbox."""
    rt = state.runtime()
    cap = rt.settings.sending.default_daily_cap if daily_cap is None else daily_cap
    with rt.session() as session:
        try:
            mailbox = add_mailbox(session, address, owner_email=owner_email, display_name=display_name,
                                  daily_cap=cap, signature=signature, now=rt.now())
        except (PeopleError, LookupError) as exc:
            raise UserError(str(exc)) from None
        audit.record(session, actor=audit.cli_actor(), action="mailbox.add", object_type="mailbox",
                     object_id=mailbox.id, at=rt.now(), address=mailbox.address, owner=owner_email)
    click.echo(f"mailbox {mailbox.address} added (daily cap {cap})")


def _inbound_health(mailbox: Mailbox) -> str:
    """Return "ok", "never polled", "not configured", or the last error of reading the mailbox's incoming mail."""
    if not mailbox.inbound:
        return "not configured"
    if mailbox.inbound_error:
        return mailbox.inbound_error
    return "ok" if mailbox.inbound_checked_at else "never polled"


@mailboxes.command("list")
@format_option
@pass_state
def mailboxes_list(state: CliState, fmt: str) -> None:
    """List mailboxes: address, display name, owner, daily cap, state, hold reason, IMAP polling health."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [{"address": m.address, "display_name": m.display_name, "owner": owner, "daily_cap": m.daily_cap,
                 "state": m.state, "held_reason": m.held_reason, "held_at": m.held_at,
                 "inbound": _inbound_health(m), "inbound_failures": m.inbound_failures,
                 "inbound_checked_at": m.inbound_checked_at, "inbound_retry_at": m.inbound_retry_at}
                for m, owner in list_mailboxes(session)]
    emit(rows, fmt, ["address", "display_name", "owner", "daily_cap", "state", "held_reason", "inbound"])


@mailboxes.command("hold")
@click.argument("address")
@click.option("--reason", required=True, help="Why sending stops (e.g. the bounce that caused it).")
@pass_state
def mailboxes_hold(state: CliState, address: str, reason: str) -> None:
    """Stop sending from a mailbox; its enrollments wait until it is released."""
    rt = state.runtime()
    with rt.session() as session:
        try:
            mailbox = hold_mailbox(session, address, reason, rt.now())
        except (PeopleError, LookupError) as exc:
            raise UserError(str(exc)) from None
        audit.record(session, actor=audit.cli_actor(), action="mailbox.hold", object_type="mailbox",
                     object_id=mailbox.id, at=rt.now(), reason=reason)
    click.echo(f"mailbox {mailbox.address} held: {mailbox.held_reason}")


@mailboxes.command("release")
@click.argument("address")
@pass_state
def mailboxes_release(state: CliState, address: str) -> None:
    """Release a held mailbox and resume the enrollments its hold paused."""
    # Imported here, so that the other people commands do not load the enrollment rules.
    from sequencer.enrollments import resume_mailbox_enrollments

    rt = state.runtime()
    with rt.session() as session:
        try:
            mailbox = release_mailbox(session, address, rt.now())
        except LookupError as exc:
            raise UserError(str(exc)) from None
        resumed = resume_mailbox_enrollments(session, mailbox_id=mailbox.id, now=rt.now())
        audit.record(session, actor=audit.cli_actor(), action="mailbox.release", object_type="mailbox",
                     object_id=mailbox.id, at=rt.now(), resumed=resumed)
    click.echo(f"mailbox {mailbox.address} released; {resumed} enrollment(s) resumed")

