"""`sequencer numbers assign|unassign|list`: the phone numbers reps text and call from."""
from __future__ import annotations

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.numbers import NumberError, assign, list_numbers, unassign


def register(main: click.Group) -> None:
    main.add_command(numbers)


@click.group()
def numbers() -> None:
    """Phone numbers: a rep's own, or the team pool's. Leads keep hearing from the number they first heard from."""


@numbers.command("assign")
@click.argument("number", metavar="+E164")
@click.option("--owner", "owner_email", required=True, metavar="EMAIL", help="The user whose texts and calls use it.")
@pass_state
def numbers_assign(state: CliState, number: str, owner_email: str) -> None:
    """Give a number to a rep (adding it if it is new)."""
    rt = state.runtime()
    with rt.session() as session:
        try:
            row = assign(session, number, owner_email, rt.now())
        except NumberError as exc:
            raise UserError(str(exc)) from None
        audit.record(session, actor=audit.cli_actor(), action="number.assign", object_type="phone_number",
                     object_id=row.id, at=rt.now(), number=row.number, owner=owner_email.strip().lower())
        value = row.number
    click.echo(f"{value} assigned to {owner_email.strip().lower()}")


@numbers.command("unassign")
@click.argument("number", metavar="+E164")
@pass_state
def numbers_unassign(state: CliState, number: str) -> None:
    """Return a rep's number to the team pool."""
    rt = state.runtime()
    with rt.session() as session:
        try:
            row = unassign(session, number)
        except NumberError as exc:
            raise UserError(str(exc)) from None
        audit.record(session, actor=audit.cli_actor(), action="number.unassign", object_type="phone_number",
                     object_id=row.id, at=rt.now(), number=row.number)
        value = row.number
    click.echo(f"{value} is back in the team pool")


@numbers.command("list")
@format_option
@pass_state
def numbers_list(state: CliState, fmt: str) -> None:
    """List the numbers in the database: number, owner (empty: the team pool), added."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [{"number": row.number, "owner": email, "created_at": row.created_at}
                for row, email in list_numbers(session)]
    emit(rows, fmt, ["number", "owner", "created_at"])
