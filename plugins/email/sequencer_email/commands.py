"""`sequencer inbound ...` and `sequencer mailboxes inbound`: read inbound mail as an MTA pipe would, poll IMAP
now, show how mail reads, list what came in, and set a mailbox's IMAP settings."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from sequencer.channels import CoreUnavailable, core_for, emit_rows

format_option = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Output format.")


def register(cli: click.Group) -> None:
    """Add the `inbound` group, and `inbound` to the core's `mailboxes` group."""
    cli.add_command(inbound)
    mailboxes = cli.commands.get("mailboxes")
    if isinstance(mailboxes, click.Group):
        mailboxes.add_command(mailboxes_inbound)


@click.group()
def inbound() -> None:
    """Inbound messages: replies, auto-replies, bounces, complaints."""


@inbound.command()
@click.argument("source", default="-", metavar="[FILE|-]")
def email(source: str) -> None:
    """Take one RFC 5322 message (a file, or standard input as an MTA pipe gives it) and act on it.

    A message that cannot be acted on (no recipient named, no lead, unreadable) is recorded
    as unmatched and the command exits 0, so the MTA does not bounce it or try it forever.
    Exits 75 (EX_TEMPFAIL) only when the database cannot be reached, so the MTA keeps the
    message queued and tries again instead of bouncing the lead's reply back to them.
    """
    from sequencer_email.inbound import receive_email

    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    try:
        result = receive_email(core_for("email"), raw)
    except CoreUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(75)
    click.echo(json.dumps(result.as_json(), ensure_ascii=False))


@inbound.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option
def classify(files: tuple[Path, ...], fmt: str) -> None:
    """Show how each message is read, without acting on it."""
    from sequencer_email.reading import as_dict, read_message

    # The application clock: --now decides what "back on Monday" means.
    today = core_for("email").now().date()
    rows = [{"file": str(path), **as_dict(read_message(path.read_bytes(), today=today))} for path in files]
    if fmt == "table":
        rows = [{"file": r["file"], "kind": r["kind"], "suppress": r["suppress"],
                 "addresses": [f"{a['address']}:{a['cause']}:{a['status']}" for a in r["addresses"]]} for r in rows]
    emit_rows(rows, fmt, ["file", "kind", "suppress", "addresses"])


@inbound.command(name="list")
@click.option("--unmatched", is_flag=True, help="Only the messages that could not be acted on, with the reason.")
@click.option("--kind", default=None, help="Only this kind: reply, auto_reply, bounce, complaint, notification...")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@format_option
def list_events(unmatched: bool, kind: str | None, limit: int, fmt: str) -> None:
    """Show the latest inbound messages, newest first; the unmatched ones and notifications wait here for a person."""
    rows = core_for("email").messages("email", unmatched=unmatched, kind=kind, limit=limit)
    if fmt != "json":
        rows = [{**row, "summary": row["summary"][:100]} for row in rows]
    emit_rows(rows, fmt, ["id", "received_at", "kind", "lead", "mailbox", "summary"])


@inbound.command()
@click.option("--mailbox", "address", metavar="ADDRESS", default=None,
              help="Poll only this mailbox (default: every mailbox with IMAP settings).")
@format_option
def poll(address: str | None, fmt: str) -> None:
    """Poll IMAP now, even a mailbox that is backing off after a failure, and show what was read."""
    from sequencer_email.imap import poll_inbound, poll_mailbox

    core = core_for("email")
    if address is None:
        results = poll_inbound(core, include_waiting=True)
    else:
        try:
            mailbox_id = core.find_sender("email", address).sender_id
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        results = [poll_mailbox(core, mailbox_id)]
    if fmt == "json":
        emit_rows([{"mailbox": r.mailbox, "fetched": r.fetched, "skipped": r.skipped, "errors": r.errors,
                    "messages": r.messages} for r in results], fmt)
    else:
        rows = [{"mailbox": r.mailbox, "uid": m["uid"], "kind": m.get("kind"), "lead_id": m.get("lead_id"),
                 "actions": m.get("note") or "; ".join(m.get("actions", []))
                 or (f"unmatched: {m['unmatched']}" if m.get("unmatched") else "")}
                for r in results for m in r.messages]
        if rows:
            emit_rows(rows, fmt, ["mailbox", "uid", "kind", "lead_id", "actions"])
        for r in results:
            summary = f"{r.mailbox or 'mailbox'}: {r.fetched} message(s) handled"
            if r.skipped:
                summary += f", {r.skipped} already recorded"
            click.echo(summary + "".join(f"\nerror: {e}" for e in r.errors))
        if not results:
            click.echo("no mailbox has IMAP settings; add them with `sequencer mailboxes inbound`")
    if any(r.errors for r in results):
        raise SystemExit(1)


@click.command("inbound")
@click.argument("address")
@click.option("--host", required=True, help="IMAP server, like imap.gmail.com.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="IMAP port (default 993 for ssl, 143 for starttls and none).")
@click.option("--security", type=click.Choice(["ssl", "starttls", "none"]), default="ssl", show_default=True,
              help="ssl: IMAPS; starttls: plain IMAP upgraded to TLS; none: no encryption, a server on this "
                   "machine only.")
@click.option("--username", required=True, help="The login of the mailbox on the IMAP server.")
@click.option("--password-env", metavar="VAR", default=None,
              help="Read the (app) password from this environment variable where the worker runs (preferred).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input and store it in the database.")
@click.option("--folder", default="INBOX", show_default=True, help="The folder to read.")
@click.option("--mark-seen", is_flag=True, help="Mark each handled message as read (default: leave it unread).")
@click.option("--move-to", metavar="FOLDER", default=None, help="Move each handled message to this folder.")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
              help="PEM file of a CA to trust, for a server with a private or self-signed certificate.")
@click.option("--skip-existing", is_flag=True,
              help="Leave the messages already in the folder alone; read only mail that arrives from now on.")
def mailboxes_inbound(address: str, host: str, port: int | None, security: str, username: str,
                      password_env: str | None, password_stdin: bool, folder: str, mark_seen: bool,
                      move_to: str | None, ca_file: str | None, skip_existing: bool) -> None:
    """Poll a mailbox over IMAP for replies and bounces (the worker's poll_inbound job)."""
    from sequencer_email.imap import InboundSettingsError, configure_inbound

    if password_env and password_stdin:
        raise click.ClickException("give either --password-env or --password-stdin, not both")
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        shown = configure_inbound(core_for("email"), address, host=host, port=port, security=security,
                                  username=username, password=password, password_env=password_env, folder=folder,
                                  mark_seen=mark_seen, move_to=move_to, ca_file=ca_file, skip_existing=skip_existing)
    except (InboundSettingsError, LookupError) as exc:
        raise click.ClickException(str(exc)) from None
    on_server = "marked read" if mark_seen else "left unread"
    if move_to:
        on_server += f" and moved to {move_to}"
    click.echo(f"mailbox {address} reads {shown['folder']} of {shown['username']} at "
               f"{shown['host']}:{shown['port']} ({security}); handled messages are {on_server}")
    if password is not None:
        click.echo("note: the password is stored in the database; --password-env keeps it out of it")
    elif password_env not in os.environ:
        click.echo(f"note: {password_env} is not set here; set it where the worker runs")
