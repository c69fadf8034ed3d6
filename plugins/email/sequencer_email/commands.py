"""`sequencer inbound ...`: read inbound mail as an MTA pipe would, poll IMAP now, or just show how mail reads."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state


def register(main: click.Group) -> None:
    main.add_command(inbound)


@click.group()
def inbound() -> None:
    """Inbound messages: replies, auto-replies, bounces, complaints."""


@inbound.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@pass_state
def email(state: CliState, source: str) -> None:
    """Take one RFC 5322 message (a file, or standard input as an MTA pipe gives it) and act on it.

    A message that cannot be acted on (no recipient named, no lead, unreadable) is recorded
    as unmatched and the command exits 0, so the MTA does not bounce it or try it forever.
    Exits 75 (EX_TEMPFAIL) only when the database cannot be reached, so the MTA keeps the
    message queued and tries again instead of bouncing the lead's reply back to them.
    """
    from sequencer.inbound import InboundUnavailable, receive_email

    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    try:
        result = receive_email(state.runtime(), raw)
    except InboundUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(75)
    click.echo(json.dumps(result.as_json(), ensure_ascii=False))


@inbound.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option
@pass_state
def classify(state: CliState, files: tuple[Path, ...], fmt: str) -> None:
    """Show how each message is read, without acting on it."""
    from sequencer_email.reading import as_dict, read_message

    today = state.runtime().now().date() if state.now_text else None
    rows = [{"file": str(path), **as_dict(read_message(path.read_bytes(), today=today))} for path in files]
    if fmt == "table":
        rows = [{"file": r["file"], "kind": r["kind"], "suppress": r["suppress"],
                 "addresses": [f"{a['address']}:{a['cause']}:{a['status']}" for a in r["addresses"]]} for r in rows]
    emit(rows, fmt, ["file", "kind", "suppress", "addresses"])


@inbound.command(name="list")
@click.option("--unmatched", is_flag=True, help="Only the messages that could not be acted on, with the reason.")
@click.option("--kind", default=None, help="Only this kind: reply, auto_reply, bounce, complaint, notification...")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@format_option
@pass_state
def list_events(state: CliState, unmatched: bool, kind: str | None, limit: int, fmt: str) -> None:
    """Show the latest inbound messages, newest first; the unmatched ones and notifications wait here for a person."""
    import sqlalchemy as sa

    from sequencer.models import InboundEvent, Lead, Mailbox

    query = (sa.select(InboundEvent, Lead.email, Mailbox.address)
             .outerjoin(Lead, Lead.id == InboundEvent.lead_id).outerjoin(Mailbox, Mailbox.id == InboundEvent.mailbox_id)
             .where(InboundEvent.channel == "email").order_by(InboundEvent.id.desc()).limit(limit))
    if unmatched:
        query = query.where(InboundEvent.summary.startswith("unmatched: "))
    if kind:
        query = query.where(InboundEvent.kind == kind)
    with state.runtime().session() as session:
        rows = [{"id": event.id, "received_at": event.received_at, "kind": event.kind, "lead": lead,
                 "mailbox": mailbox, "message_id": event.message_id,
                 "summary": event.summary if fmt == "json" else event.summary[:100]}
                for event, lead, mailbox in session.execute(query)]
    emit(rows, fmt, ["id", "received_at", "kind", "lead", "mailbox", "summary"])


@inbound.command()
@click.option("--mailbox", "address", metavar="ADDRESS", default=None,
              help="Poll only this mailbox (default: every mailbox with IMAP settings).")
@format_option
@pass_state
def poll(state: CliState, address: str | None, fmt: str) -> None:
    """Poll IMAP now, even a mailbox that is backing off after a failure, and show what was read."""
    from sequencer.imap import poll_inbound, poll_mailbox
    from sequencer.users import find_mailbox

    rt = state.runtime()
    if address is None:
        results = poll_inbound(rt, include_waiting=True)
    else:
        with rt.session() as session:
            try:
                mailbox_id = find_mailbox(session, address).id
            except LookupError as exc:
                raise UserError(str(exc)) from None
        results = [poll_mailbox(rt, mailbox_id)]
    if fmt == "json":
        emit([{"mailbox": r.mailbox, "fetched": r.fetched, "skipped": r.skipped, "errors": r.errors,
               "messages": r.messages} for r in results], fmt)
    else:
        rows = [{"mailbox": r.mailbox, "uid": m["uid"], "kind": m.get("kind"), "lead_id": m.get("lead_id"),
                 "actions": m.get("note") or "; ".join(m.get("actions", []))
                 or (f"unmatched: {m['unmatched']}" if m.get("unmatched") else "")}
                for r in results for m in r.messages]
        if rows:
            emit(rows, fmt, ["mailbox", "uid", "kind", "lead_id", "actions"])
        for r in results:
            summary = f"{r.mailbox or 'mailbox'}: {r.fetched} message(s) handled"
            if r.skipped:
                summary += f", {r.skipped} already recorded"
            click.echo(summary + "".join(f"\nerror: {e}" for e in r.errors))
        if not results:
            click.echo("no mailbox has IMAP settings; add them with `sequencer mailboxes inbound`")
    if any(r.errors for r in results):
        raise SystemExit(1)
