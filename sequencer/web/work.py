"""/tasks/<id>: the work view of one task and what a rep does with it, then on to the next task.

A call shows the lead card, the timeline, the call script rendered for the lead and the outcome
form; a manual email or SMS shows its draft to edit and send. Every action (done, send, snooze,
skip) answers with the next task of the owner's day: htmx swaps it in place (a power-dialer
flow, the URL follows), a browser without script is redirected to it. A form with a mistake
comes back with the reason beside the field, as 422 (htmx is configured to swap it).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
import sqlalchemy.orm as so
from flask import Blueprint, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from sequencer import manual
from sequencer.calendar import NoContactHours
from sequencer.consent import consents
from sequencer.calls import CallLogError, heard_objections, parse_facts, objection_keys, task_card
from sequencer.models import Lead, Task, User
from sequencer.plugins import BUILTIN
from sequencer.tasks import TaskError, complete_task, skip_task
from sequencer.timeline import lead_timeline
from sequencer.web import get_runtime
from sequencer.web.leads import visible
from sequencer.web.security import viewer
from sequencer.web.times import for_both, lead_clock
from sequencer.web.today import next_task

bp = Blueprint("work", __name__)

# Task kinds whose draft the app sends through a channel; the others are done by hand and marked done.
MESSAGE_KINDS = ("email", "sms")
FACT_ROWS = 3
INVALID = 422


class FormError(ValueError):
    """A form value that cannot be used; `field` is where the reason is shown."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@bp.get("/tasks/<int:task_id>")
def task(task_id: int) -> ResponseReturnValue:
    """Show the work view of a task: lead card, timeline, and the script and outcome form, or the draft."""
    return _view(task_id)


@bp.post("/tasks/<int:task_id>/done")
def done(task_id: int) -> ResponseReturnValue:
    """Log the task's outcome (a call: disposition, objections, notes, facts, call-back time), then the next task."""
    runtime, me = get_runtime(), viewer()
    form = request.form
    settings = runtime.settings
    try:
        outcome = form.get("outcome") or None
        with runtime.session() as session:
            found = visible(session, Task, task_id, me)
            if found.kind == "call" and outcome is None:
                raise FormError("outcome", "pick how the call ended")
            if outcome is not None and outcome not in settings.tasks.outcomes:
                raise FormError("outcome", f"{outcome!r} is not one of the outcomes")
            call_back_at = _call_back(form.get("call_back", ""), me.timezone) if outcome == "call_back_later" else None
            complete_task(session, task_id, outcome=outcome, notes=form.get("notes", "").strip() or None,
                          now=runtime.now(), outcomes=list(settings.tasks.outcomes), plugins=runtime.plugins,
                          call_back_at=call_back_at, objections=_objections(form), facts=_facts(form),
                          hours=settings.contact_hours.hours(), template_dir=settings.templates_dir)
            owner_id = found.owner_id
    except FormError as exc:
        return _view(task_id, errors={exc.field: str(exc)}, status=INVALID)
    except TaskError as exc:
        return _view(task_id, errors={"form": str(exc)}, status=INVALID)
    return _next(owner_id, f"Task {task_id} done" + (f": {outcome}" if outcome else "") + ".")


@bp.post("/tasks/<int:task_id>/send")
def send(task_id: int) -> ResponseReturnValue:
    """Send the edited draft of a manual email or SMS task through its channel, then show the next task."""
    runtime, me = get_runtime(), viewer()
    with runtime.session() as session:
        owner_id = visible(session, Task, task_id, me).owner_id
    try:
        result = manual.send(runtime, task_id, subject=request.form.get("subject"), body=request.form.get("body", ""),
                             user_id=me.id)
    except manual.ManualError as exc:
        return _view(task_id, errors={exc.field or "form": str(exc)}, status=INVALID)
    if not result.accepted:
        why = result.error or result.recipient_problem or result.sender_problem or "refused"
        return _view(task_id, errors={"form": f"The message was not sent: {why}."}, status=INVALID)
    return _next(owner_id, f"Sent (task {task_id}).")


@bp.post("/tasks/<int:task_id>/snooze")
def snooze(task_id: int) -> ResponseReturnValue:
    """Put the task off until a time (in the viewer's zone); it leaves Today until then."""
    runtime, me = get_runtime(), viewer()
    try:
        with runtime.session() as session:
            owner_id = visible(session, Task, task_id, me).owner_id
            until = _when(request.form.get("until", ""), me.timezone, "until")
            manual.snooze(session, task_id, until=until, now=runtime.now())
    except FormError as exc:
        return _view(task_id, errors={exc.field: str(exc)}, status=INVALID)
    except manual.ManualError as exc:
        return _view(task_id, errors={exc.field or "form": str(exc)}, status=INVALID)
    return _next(owner_id, f"Task {task_id} snoozed.")


@bp.post("/tasks/<int:task_id>/skip")
def skip(task_id: int) -> ResponseReturnValue:
    """Skip the task with a reason; the lead's cadence goes on."""
    runtime, me = get_runtime(), viewer()
    reason = request.form.get("reason", "").strip()
    try:
        if not reason:
            raise FormError("reason", "say why the task is skipped")
        with runtime.session() as session:
            owner_id = visible(session, Task, task_id, me).owner_id
            skip_task(session, task_id, reason=reason, now=runtime.now(), plugins=runtime.plugins)
    except FormError as exc:
        return _view(task_id, errors={exc.field: str(exc)}, status=INVALID)
    except TaskError as exc:
        return _view(task_id, errors={"form": str(exc)}, status=INVALID)
    return _next(owner_id, f"Task {task_id} skipped.")


@bp.post("/tasks/<int:task_id>/dial")
def dial(task_id: int) -> ResponseReturnValue:
    """Ring the rep's phone and connect them to the lead: what `sequencer calls dial TASK_ID` does."""
    runtime, me = get_runtime(), viewer()
    with runtime.session() as session:
        visible(session, Task, task_id, me)
    command = _dial_command(runtime)
    if command is None:
        return _view(task_id, errors={"dial": "Click-to-call needs the voice plugin; dial the number yourself."},
                     status=INVALID)
    try:
        # The plugin's own command, so the web and the CLI place a call by the same rules.
        command.main([str(task_id)], prog_name="sequencer calls dial", standalone_mode=False)
    except click.ClickException as exc:
        return _view(task_id, errors={"dial": exc.format_message()}, status=INVALID)
    except (SystemExit, NoContactHours) as exc:
        return _view(task_id, errors={"dial": f"The call was not placed ({exc}); see the server log."},
                     status=INVALID)
    return _view(task_id, notice="Your phone is ringing: answer it to be connected to the lead.")


# ---------------------------------------------------------------- reading the forms


def _when(text: str, zone: str, field: str) -> datetime:
    """Read a datetime-local value (YYYY-MM-DDTHH:MM) as a time in the viewer's zone."""
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FormError(field, "enter a date and time, like 2026-03-03 14:30") from None
    if local.tzinfo is not None:
        raise FormError(field, "enter a local date and time, without a zone")
    return local.replace(tzinfo=ZoneInfo(zone))


def _call_back(text: str, zone: str) -> datetime | None:
    # Left empty, the call back is a day later (complete_task's default), moved into the lead's contact hours.
    return _when(text, zone, "call_back") if text.strip() else None


def _objections(form: Any) -> list[str]:
    raised = form.getlist("objection")
    new = [k for k in form.get("new_objection", "").replace(",", " ").split() if k]
    try:
        return objection_keys([*raised, *new])
    except CallLogError as exc:
        raise FormError("new_objection", str(exc)) from None


def _facts(form: Any) -> dict[str, str]:
    pairs = [f"{key.strip()}={value}" for key, value in zip(form.getlist("fact_key"), form.getlist("fact_value"))
             if key.strip() or value.strip()]
    try:
        return parse_facts(pairs)
    except CallLogError:
        bad = next(p for p in pairs if not _one_fact(p))
        raise FormError("facts", f"{bad.split('=')[0]!r} is not a field name: use letters, digits and _, "
                                 "like leads_per_week") from None


def _one_fact(pair: str) -> bool:
    try:
        parse_facts([pair])
    except CallLogError:
        return False
    return True


# ---------------------------------------------------------------- answering


def _next(owner_id: int | None, notice: str) -> ResponseReturnValue:
    """Answer with the owner's next task (htmx: in place, the URL follows; otherwise a redirect)."""
    runtime, me = get_runtime(), viewer()
    with runtime.session() as session:
        owner = session.get(User, owner_id) if owner_id is not None else None
        upcoming = next_task(session, owner, me.timezone, runtime.now()) if owner is not None else None
    target = url_for("work.task", task_id=upcoming) if upcoming else url_for("today.today")
    if not request.headers.get("HX-Request"):
        return redirect(target, 303)
    if upcoming is None:
        response = make_response(render_template("_all_done.html", notice=notice))
    else:
        response = make_response(_render(upcoming, notice=notice))
    response.headers["HX-Push-Url"] = target
    return response


def _view(task_id: int, *, errors: dict[str, str] | None = None, notice: str | None = None,
          status: int = 200) -> ResponseReturnValue:
    """The whole page, or (htmx) only the work area that the forms swap."""
    body = _render(task_id, errors=errors or {}, notice=notice, form=request.form if errors else None)
    return make_response(body, status)


def _render(task_id: int, *, errors: dict[str, str] | None = None, notice: str | None = None,
            form: Any = None) -> str:
    runtime, me = get_runtime(), viewer()
    now = runtime.now()
    with runtime.session() as session:
        found = visible(session, Task, task_id, me)
        lead = session.get(Lead, found.lead_id) if found.lead_id else None
        zones = lead.zones() if lead else ()
        page: dict[str, Any] = {
            "task": found, "lead": lead, "due": for_both(found.due_at, me.timezone, zones, now), "now": now,
            "clock": lead_clock(now, zones) if lead else None, "errors": errors or {}, "notice": notice,
            "form": form, "outcomes": runtime.settings.tasks.outcomes, "fact_rows": range(FACT_ROWS),
            "timeline": _timeline(session, lead, me.timezone, now) if lead else [],
            "script": None, "objections": [], "draft": None, "can_dial": False,
            "owner": session.get(User, lead.owner_id) if lead and lead.owner_id else None,
            "consents": sorted(consents(lead).values(), key=lambda c: c.channel) if lead else [],
        }
        if found.state == "open" and found.kind == "call":
            page["script"] = task_card(session, task_id, runtime)["script"]
            page["objections"] = _objection_choices(session, page["script"])
            page["can_dial"] = _dial_command(runtime) is not None
        elif found.state == "open" and found.kind in MESSAGE_KINDS and found.touch_id:
            try:
                page["draft"] = manual.draft(session, runtime, task_id)
            except manual.ManualError as exc:
                page["errors"].setdefault("form", str(exc))
        template = "_work.html" if request.headers.get("HX-Request") else "work.html"
        return render_template(template, **page)


def _timeline(session: so.Session, lead: Lead, zone: str, now: datetime) -> list[dict[str, Any]]:
    rows = lead_timeline(session, lead)
    for row in rows:
        row["when"] = for_both(row["at"], zone, lead.zones(), now)
    return rows[::-1]


def _objection_choices(session: so.Session, script: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Return (key, label) of every objection a rep may tick: the script's, then keys reps logged before."""
    if not script:
        return []
    listed = [(o["key"], o["label"] or o["key"]) for o in script.get("objections", ())]
    seen = {key for key, _label in listed}
    heard = script.get("also_heard") or [k for k in heard_objections(session, script["key"]) if k not in seen]
    return listed + [(key, key.replace("_", " ")) for key in heard if key not in seen]


def _dial_command(runtime: Any) -> click.Command | None:
    """Return the voice plugin's `calls dial` command when the plugin is installed and configured, else None."""
    channel = runtime.plugins.channel("voice")
    if channel is None or runtime.plugins.channel_plugin("voice") in (None, BUILTIN):
        return None
    if channel.unavailable_reason():
        return None
    group = click.Group("sequencer")
    runtime.plugins.hook.register_commands(cli=group)
    calls = group.commands.get("calls")
    return calls.commands.get("dial") if isinstance(calls, click.Group) else None
