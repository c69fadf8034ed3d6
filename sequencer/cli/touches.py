"""`sequencer touches ...`: review touches whose outcome is unknown."""
from __future__ import annotations

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state


def register(main: click.Group) -> None:
    main.add_command(touches)


@click.group()
def touches() -> None:
    """Touches that need a person: a worker stopped while sending them."""


@touches.command()
@format_option
@pass_state
def unknown(state: CliState, fmt: str) -> None:
    """List touches that may or may not have been sent; they are never resent by themselves."""
    from sequencer.touches import unknown_touches

    rt = state.runtime()
    with rt.session() as session:
        rows = unknown_touches(session)
    emit(rows, fmt, ["id", "since", "lead_email", "cadence", "step", "channel", "message_id"])


@touches.command()
@click.argument("touch_id", type=int)
@click.option("--sent", "outcome", flag_value="sent", help="It did go out (e.g. found in the sent folder).")
@click.option("--not-sent", "outcome", flag_value="not-sent", help="It did not: send it again as a new attempt.")
@pass_state
def resolve(state: CliState, touch_id: int, outcome: str | None) -> None:
    """Settle an unknown touch, saying whether it was sent."""
    from sequencer.touches import ResolveError, resolve_touch

    if outcome is None:
        raise UserError("say what happened: --sent or --not-sent")
    rt = state.runtime()
    try:
        with rt.session() as session:
            resolve_touch(session, touch_id, sent=outcome == "sent", now=rt.now(), plugins=rt.plugins)
            audit.record(session, actor=audit.cli_actor(), action=f"touch.resolve.{outcome}", object_type="touch",
                         object_id=touch_id, at=rt.now())
    except ResolveError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"touch {touch_id} resolved as {outcome.replace('-', ' ')}")
