"""`sequencer tasks`, `task done|skip` and `timeline`: the rep's daily work and a lead's history."""
from __future__ import annotations

import json
from datetime import date
from typing import Any

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state, to_jsonable
from sequencer.clock import iso_z, parse_instant


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
    """Show a task, or log its outcome."""


@task.command()
@click.argument("task_id", type=int)
@format_option
@pass_state
def show(state: CliState, task_id: int, fmt: str) -> None:
    """Show a task with its call script rendered for the lead, and the lead's card."""
    from sequencer.calls import task_card

    rt = state.runtime()
    with rt.session() as session:
        try:
            card = task_card(session, task_id, rt)
        except LookupError as exc:
            raise UserError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(card), ensure_ascii=False, indent=2))
        return
    click.echo(_card_text(card))


def _card_text(card: dict[str, Any]) -> str:
    from sequencer.scripts import script_as_text

    lines = [f"Task {card['id']} ({card['kind']}, {card['state']}): {card['title']}",
             f"Due {iso_z(card['due_at'])}" + (f" - cadence {card['cadence']}, step {card['step']}"
                                                if card["cadence"] else "")]
    lead = card["lead"]
    if lead is not None:
        lines += ["", "LEAD"]
        for label, value in (("Name", lead["name"]), ("Company", lead["company"]), ("Title", lead["title"]),
                             ("Phone", (lead["phone"] or "") + (" (marked wrong)" if lead["phone_wrong"] else "")),
                             ("Email", lead["email"])):
            if value:
                lines.append(f"  {label}: {value}")
        for zone, local in lead["local_time"].items():
            lines.append(f"  Local time: {local[11:16]} {local[:10]} ({zone})")
        for key, value in lead["custom_fields"].items():
            lines.append(f"  {key}: {value}")
        for channel, given in lead["consent"].items():
            state = f"revoked {iso_z(given['revoked_at'])}" if given["revoked_at"] else f"given {iso_z(given['given_at'])}"
            lines.append(f"  Consent {channel}: {state} ({given['source']})")
        if lead["opted_out_at"]:
            lines.append(f"  OPTED OUT {iso_z(lead['opted_out_at'])}")
        for touch in lead["last_touches"]:
            lines.append(f"  {iso_z(touch['at'])} {touch['channel']} {touch['cadence']}/{touch['step']}:"
                         f" {touch['status']}" + (f", {touch['outcome']}" if touch["outcome"] else ""))
    script = card["script"]
    lines.append("")
    if script is None:
        lines.append(card["instructions"] or "(no instructions)")
    elif "problem" in script:
        lines += [f"SCRIPT {script['key']} ({script['version']}) cannot be shown: {script['problem']}", "",
                  card["instructions"]]
    else:
        lines += [f"SCRIPT {script['key']} (version {script['version']}, {script['language']})", "",
                  script_as_text(script).rstrip()]
        if script["also_heard"]:
            lines += ["", "Also heard on this script: " + ", ".join(script["also_heard"])]
    lines += ["", "Log it: sequencer task done " + str(card["id"]) + " --outcome " + "|".join(card["outcomes"])
              + (" [--objection KEY]... [--fact KEY=VALUE]... [--notes TEXT] [--call-back ISO8601]"
                 if card["kind"] == "call" else " [--notes TEXT]")]
    return "\n".join(lines)


@task.command()
@click.argument("task_id", type=int)
@click.option("--outcome", help="One of [tasks] outcomes (e.g. connected, left_voicemail, meeting_booked).")
@click.option("--objection", "objections", multiple=True, metavar="KEY",
              help="An objection the lead raised (repeat for each); a key the script does not list is kept.")
@click.option("--fact", "facts", multiple=True, metavar="KEY=VALUE",
              help="Something learned on the call, stored as the lead's custom field (repeat for each).")
@click.option("--notes")
@click.option("--call-back", "call_back", metavar="ISO8601",
              help="With call_back_later: when to call again (moved into the lead's contact hours).")
@pass_state
def done(state: CliState, task_id: int, outcome: str | None, objections: tuple[str, ...], facts: tuple[str, ...],
         notes: str | None, call_back: str | None) -> None:
    """Mark a task done (a call: its outcome, objections and facts); the lead's cadence continues from now."""
    from sequencer.calls import CallLogError, parse_facts
    from sequencer.tasks import TaskError, complete_task, follow_up

    rt = state.runtime()
    settings = rt.settings
    try:
        learned = parse_facts(facts)
        with rt.session() as session:
            done_task = complete_task(
                session, task_id, outcome=outcome, notes=notes, now=rt.now(), outcomes=settings.tasks.outcomes,
                plugins=rt.plugins, call_back_at=parse_instant(call_back) if call_back else None,
                objections=objections, facts=learned, hours=settings.contact_hours.hours(),
                template_dir=settings.templates_dir)
            audit.record(session, actor=audit.cli_actor(), action="task.done", object_type="task",
                         object_id=task_id, at=rt.now(), outcome=outcome,
                         # Which fields a call changed, not their values: the audit log outlives erasure.
                         **({"objections": list(objections)} if objections else {}),
                         **({"facts": sorted(learned)} if learned else {}))
            again = follow_up(session, done_task)
    except (TaskError, CallLogError, ValueError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"task {task_id} done" + (f" ({outcome})" if outcome else ""))
    if again is not None:
        click.echo(f"call back: task {again.id} due {iso_z(again.due_at)}")


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
