"""`sequencer calls dial TASK_ID`: ring the rep's phone, then connect them to the task's lead."""
from __future__ import annotations

import sys
from urllib.parse import urlencode

import click

from sequencer.channels import DialError, core_for
from sequencer_voice import calls
from sequencer_voice.channel import STATUS_EVENTS, STATUS_PATH
from sequencer_voice.settings import VoiceConfigError, read_settings
from sequencer_voice.webhooks import BRIDGE_PATH


def register(cli: click.Group) -> None:
    """Add `dial` to the core's `calls` group, or a `calls` group of our own when the core has none."""
    group = cli.commands.get("calls")
    if not isinstance(group, click.Group):
        group = click.Group("calls", help="Calls: dial a lead over Twilio Voice.")
        cli.add_command(group)
    group.add_command(dial)


@click.command()
@click.argument("task_id", type=int)
def dial(task_id: int) -> None:
    """Ring the task owner's phone; when they answer, Twilio connects them to the lead.

    Refused outside the lead's contact hours ([contact_hours], in every zone the lead may be in),
    saying when they open.
    """
    core = core_for("voice")
    try:
        settings = read_settings(core.settings)
        task = core.call_task(task_id)
    except (VoiceConfigError, DialError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        opening = core.contact_opening(task.zones)
    except DialError as exc:
        raise click.ClickException(f"task {task_id}: {exc}") from None
    if opening > core.now():
        raise click.ClickException(
            f"task {task_id}: it is outside {task.lead_name}'s contact hours ({', '.join(task.zones)}); "
            f"they open at {opening.isoformat().replace('+00:00', 'Z')}")
    # The lead hears from the number of their conversation: the rep's own, else the pool's (sticky).
    caller_id = (core.sender_number(task.touch_id, settings.numbers) if task.touch_id is not None
                 else None) or settings.numbers[0]
    base = core.base_url.rstrip("/")
    placed = calls.place(core, settings, calls.client(settings), to=task.rep_phone, from_=caller_id,
                         url=f"{base}{BRIDGE_PATH}/{task_id}?{urlencode({'caller_id': caller_id})}",
                         status_callback=f"{base}{STATUS_PATH}/dial", status_callback_event=STATUS_EVENTS)
    if placed.sid is None:
        click.echo(f"error: task {task_id}: the call was not placed: {placed.error}", err=True)
        sys.exit(75 if placed.retryable or placed.defer_until else 1)
    if task.touch_id is not None:
        core.call_placed(task.touch_id, placed.sid)
    click.echo(f"calling {task.rep_email} at {task.rep_phone}; answer to be connected to {task.lead_name} "
               f"({task.lead_phone}) from {caller_id}. Call {placed.sid}")
