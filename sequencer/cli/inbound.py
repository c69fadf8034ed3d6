"""`sequencer inbound ...`: read inbound mail as an MTA pipe would, or just show how it reads."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sequencer.cli.base import CliState, emit, format_option, pass_state


def register(main: click.Group) -> None:
    main.add_command(inbound)


@click.group()
def inbound() -> None:
    """Inbound messages: replies, auto-replies, bounces, complaints."""


@inbound.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@pass_state
def email(state: CliState, source: str) -> None:
    """Take one RFC 5322 message (a file, or standard input as an MTA pipe gives it) and act on it."""
    from sequencer.inbound import handle_email

    raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    rt = state.runtime()
    with rt.session() as session:
        result = handle_email(session, raw, now=rt.now(), plugins=rt.plugins,
                              out_of_office_days=rt.settings.inbound.out_of_office_default_days)
    click.echo(json.dumps({"kind": result.kind, "lead_id": result.lead_id, "actions": result.actions},
                          ensure_ascii=False))


@inbound.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option
@pass_state
def classify(state: CliState, files: tuple[Path, ...], fmt: str) -> None:
    """Show how each message is read, without acting on it."""
    from sequencer.mailreading import as_dict, read_message

    today = state.runtime().now().date() if state.now_text else None
    rows = [{"file": str(path), **as_dict(read_message(path.read_bytes(), today=today))} for path in files]
    if fmt == "table":
        rows = [{"file": r["file"], "kind": r["kind"], "suppress": r["suppress"],
                 "addresses": [f"{a['address']}:{a['cause']}:{a['status']}" for a in r["addresses"]]} for r in rows]
    emit(rows, fmt, ["file", "kind", "suppress", "addresses"])
