"""`sequencer tasks`, `task done|skip` and `timeline`: the rep's daily work and a lead's history."""
from __future__ import annotations

from datetime import date

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.clock import parse_instant


def register(main: click.Group) -> None:
    main.add_command(tasks)
    main.add_command(task)
    main.add_command(timeline)


@click.command()
@click.option("--rep", "rep_email", metavar="EMAIL", help="Whose tasks (default: everyone's).")
@click.option("--date", "day", metavar="YYYY-MM-DD", help="The day, in the rep's time zone (default: today).")
@format_option
@pass_state
def tasks(state: CliState, rep_email: str | None, day: str | None, fmt: str) -> None:
    """List open tasks due that day or overdue, most urgent first."""
    from sequencer.tasks import list_tasks
    from sequencer.users import find_user

    rt = state.runtime()
    try:
        the_day = date.fromisoformat(day) if day else None
    except ValueError:
        raise UserError(f"--date '{day}' is not a date; write it as YYYY-MM-DD") from None
    with rt.session() as session:
        try:
            rep = find_user(session, rep_email) if rep_email else None
        except LookupError as exc:
            raise UserError(str(exc)) from None
        rows = list_tasks(session, rep=rep, day=the_day, now=rt.now())
    emit(rows, fmt, ["id", "due_at", "channel", "title", "lead_email", "lead_phone", "cadence", "step"])


@click.group()
def task() -> None:
    """Log the outcome of a task."""


@task.command()
@click.argument("task_id", type=int)
@click.option("--outcome", help="One of [tasks] outcomes (e.g. connected, left_voicemail, meeting_booked).")
@click.option("--notes")
@click.option("--call-back", "call_back", metavar="ISO8601", help="With call_back_later: when to call again.")
@pass_state
def done(state: CliState, task_id: int, outcome: str | None, notes: str | None, call_back: str | None) -> None:
    """Mark a task done; the lead's cadence continues from now."""
    from sequencer.tasks import TaskError, complete_task

    rt = state.runtime()
    try:
        with rt.session() as session:
            complete_task(session, task_id, outcome=outcome, notes=notes, now=rt.now(),
                          outcomes=rt.settings.tasks.outcomes, plugins=rt.plugins,
                          call_back_at=parse_instant(call_back) if call_back else None)
            audit.record(session, actor=audit.cli_actor(), action="task.done", object_type="task",
                         object_id=task_id, at=rt.now(), outcome=outcome)
    except (TaskError, ValueError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"task {task_id} done" + (f" ({outcome})" if outcome else ""))


@task.command()
@click.argument("task_id", type=int)
@click.option("--reason", required=True)
@pass_state
def skip(state: CliState, task_id: int, reason: str) -> None:
    """Skip a task; the lead's cadence continues from now."""
    from sequencer.tasks import TaskError, skip_task

    rt = state.runtime()
    try:
        with rt.session() as session:
            skip_task(session, task_id, reason=reason, now=rt.now(), plugins=rt.plugins)
            audit.record(session, actor=audit.cli_actor(), action="task.skip", object_type="task",
                         object_id=task_id, at=rt.now(), reason=reason)
    except TaskError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"task {task_id} skipped")


@click.command()
@click.argument("lead_ref", metavar="LEAD")
@format_option
@pass_state
def timeline(state: CliState, lead_ref: str, fmt: str) -> None:
    """Show every touch, attempt, reply, bounce, opt-out and task of a lead (email, E.164 phone or id)."""
    from sequencer.leads import find_lead
    from sequencer.timeline import lead_timeline

    rt = state.runtime()
    with rt.session() as session:
        try:
            lead = find_lead(session, lead_ref)
        except LookupError as exc:
            raise UserError(str(exc)) from None
        rows = lead_timeline(session, lead)
    emit(rows, fmt, ["at", "kind", "channel", "status", "cadence", "step", "detail"])
