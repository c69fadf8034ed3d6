"""Calls as a team learns from them: the script a call task carries, the logged call, and the stats.

A call is logged when a rep completes a call task with an outcome (sequencer.tasks.complete_task):
one `calls` row, copied from the task and its touch, and one `call_objections` row per objection
heard. Stats read only those two tables, with GROUP BY in SQL.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlalchemy.orm as so

from sequencer.consent import consents
from sequencer.leads import infer_zones
from sequencer.messages import context_for_enrollment, step_content
from sequencer.models import Call, CallObjection, Cadence, Enrollment, Lead, Step, Task, Touch, User
from sequencer.rendering import Renderer, TemplateProblem
from sequencer.scripts import (KEY_RE, ScriptError, is_call_script, load_script, render_script, script_as_text,
                               script_key, script_version)

if TYPE_CHECKING:
    from sequencer.runtime import Runtime

# The outcomes the core acts on by name; the others only count in stats.
MEETING = "meeting_booked"
NOT_INTERESTED = "not_interested"
# A fact becomes a custom field, read by templates as lead.NAME: a name a template can spell.
_FACT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
LAST_TOUCHES = 5


class CallLogError(ValueError):
    """Objections or facts that cannot be logged; the message names the value and the fix."""


# ---------------------------------------------------------------- what a call task carries


def script_identity(template_dir: Path, step: Step, variant: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """Return (script key, script version) of the call script a step's task shows, (None, None) without one.

    The engine stores them on the touch when it opens the task (touch.script_key, touch.script_version).
    """
    _subject, template, _body = step_content(step, dict(variant) if variant else None)
    if not is_call_script(step.channel, step.action, template):
        return None, None
    assert template is not None
    return script_key(template), script_version(template_dir, template)


@dataclass(frozen=True)
class CallTaskScript:
    """What a call task carries from its script: the text the rep reads, and the script's key and version."""

    text: str
    script_key: str
    script_version: str | None


def call_task_script(renderer: Renderer, template_dir: Path, step: Step, variant: Mapping[str, Any] | None,
                     context: Mapping[str, Any]) -> CallTaskScript | None:
    """Render a call step's script for a task's instructions, None when the step has no script.

    For the engine when it opens a task: `instructions = found.text` and `touch.script_key`,
    `touch.script_version` from it. Raises TemplateProblem (file and line) when it cannot render.
    """
    key, version = script_identity(template_dir, step, variant)
    if key is None:
        return None
    try:
        script = load_script(template_dir, key)
    except ScriptError as exc:
        raise TemplateProblem(str(exc)) from exc
    return CallTaskScript(script_as_text(render_script(script, renderer, context)), key, version)


def step_of(session: so.Session, touch: Touch) -> tuple[Step | None, dict[str, Any] | None]:
    """Return the step a touch executed and the A/B variant it got."""
    step = session.scalar(sa.select(Step).join(Enrollment, Enrollment.cadence_id == Step.cadence_id)
                          .where(Enrollment.id == touch.enrollment_id, Step.key == touch.step_key))
    if step is None:
        return None, None
    variant = next((v for v in step.variants or () if v.get("key") == touch.variant_key), None)
    return step, variant


# ---------------------------------------------------------------- logging a call


def parse_facts(pairs: Sequence[str]) -> dict[str, str]:
    """Read `--fact KEY=VALUE` pairs; CallLogError names the pair that is not one."""
    facts: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _FACT_KEY.fullmatch(key):
            raise CallLogError(f"--fact {pair!r} is not KEY=VALUE with a field name of letters, digits and _;"
                               " write --fact leads_per_week=40")
        facts[key] = value.strip()
    return facts


def objection_keys(keys: Sequence[str]) -> list[str]:
    """Return the objection keys as stored (lower case, each once); CallLogError names a key that is not one."""
    found: list[str] = []
    for raw in keys:
        key = raw.strip().lower()
        if not KEY_RE.fullmatch(key):
            raise CallLogError(f"objection {raw!r} is not a key; use lowercase letters, digits and _, such as"
                               " too_expensive")
        if key not in found:
            found.append(key)
    return found


def learn_facts(lead: Lead, facts: Mapping[str, str], now: datetime) -> None:
    """Store facts learned on a call as the lead's custom fields (an empty value clears the field)."""
    if not facts:
        return
    custom = dict(lead.custom or {})
    for key, value in facts.items():
        if value:
            custom[key] = value
        else:
            custom.pop(key, None)
    # A new dict, so the JSON column is seen as changed.
    lead.custom, lead.updated_at = custom, now


def record_call(session: so.Session, task: Task, touch: Touch | None, *, outcome: str, objections: Sequence[str],
                cadence_name: str | None, template_dir: Path | None, now: datetime) -> Call:
    """Log a done call task: one calls row and a call_objections row per objection."""
    if touch is not None and touch.script_key is None and template_dir is not None:
        # A task opened before scripts were stamped at opening: the script as it is now.
        step, variant = step_of(session, touch)
        if step is not None:
            touch.script_key, touch.script_version = script_identity(template_dir, step, variant)
    call = Call(task_id=task.id, touch_id=touch and touch.id, lead_id=task.lead_id, rep_id=task.owner_id,
                cadence_name=cadence_name, script_key=touch and touch.script_key,
                script_version=touch and touch.script_version, outcome=outcome, logged_at=now)
    session.add(call)
    session.flush()
    if objections:
        session.execute(sa.insert(CallObjection), [{"call_id": call.id, "key": key} for key in objections])
    return call


def heard_objections(session: so.Session, script: str) -> list[str]:
    """Return the objection keys logged on calls with this script, most often heard first."""
    return list(session.scalars(
        sa.select(CallObjection.key).join(Call, Call.id == CallObjection.call_id)
        .where(Call.script_key == script)
        .group_by(CallObjection.key).order_by(sa.func.count().desc(), CallObjection.key)
    ))


# ---------------------------------------------------------------- a task as the rep sees it


def task_card(session: so.Session, task_id: int, runtime: Runtime) -> dict[str, Any]:
    """Return a task with its script rendered for the lead and the lead's card; LookupError when there is none."""
    task = session.get(Task, task_id)
    if task is None:
        raise LookupError(f"no task {task_id}; list them with `sequencer tasks`")
    touch = session.get(Touch, task.touch_id) if task.touch_id else None
    enrollment = session.get(Enrollment, task.enrollment_id) if task.enrollment_id else None
    lead = session.get(Lead, task.lead_id) if task.lead_id else None
    owner = session.get(User, task.owner_id) if task.owner_id else None
    card: dict[str, Any] = {
        "id": task.id, "kind": task.kind, "title": task.title, "state": task.state, "due_at": task.due_at,
        "owner": owner and owner.email, "cadence": enrollment and enrollment.cadence_name,
        "step": touch and touch.step_key, "variant": touch and touch.variant_key,
        "outcome": task.outcome, "notes": task.notes, "outcomes": list(runtime.settings.tasks.outcomes),
        "script": None, "instructions": task.instructions,
        "lead": lead_card(session, lead, runtime.now()) if lead is not None else None,
    }
    if touch is not None and enrollment is not None:
        card["script"] = _script_for(session, touch, enrollment, runtime)
    return card


def _script_for(session: so.Session, touch: Touch, enrollment: Enrollment, runtime: Runtime) -> dict[str, Any] | None:
    step, variant = step_of(session, touch)
    if step is None:
        return None
    _subject, template, _body = step_content(step, variant)
    if not is_call_script(step.channel, step.action, template):
        return None
    assert template is not None
    templates = runtime.settings.templates_dir
    shown = {"key": script_key(template), "version": touch.script_version or script_version(templates, template)}
    try:
        script = load_script(templates, template)
        context = context_for_enrollment(session, enrollment, runtime)
        shown.update(render_script(script, runtime.renderer, context))
    except (ScriptError, TemplateProblem) as exc:
        # The rep can still call: say what is wrong with the script instead of failing the command.
        shown["problem"] = getattr(exc, "reason", str(exc))
        return shown
    listed = {o["key"] for o in shown["objections"]}
    # Keys reps logged that the script does not list: offered so the next rep types the same key.
    shown["also_heard"] = [k for k in heard_objections(session, shown["key"]) if k not in listed]
    return shown


def lead_card(session: so.Session, lead: Lead, now: datetime) -> dict[str, Any]:
    """Return what a rep needs on the phone: who, where and what time it is there, what we know, what happened."""
    zones = lead.zones() or tuple(infer_zones(lead.phone, lead.country)[0])
    touches = session.execute(
        sa.select(Touch, Cadence.name).join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(Cadence, Cadence.id == Enrollment.cadence_id).where(Touch.lead_id == lead.id)
        .order_by(sa.func.coalesce(Touch.sent_at, Touch.created_at).desc(), Touch.id.desc()).limit(LAST_TOUCHES)
    ).all()
    return {
        "id": lead.id, "name": lead.full_name, "company": lead.company, "title": lead.title, "email": lead.email,
        "phone": lead.phone, "phone_wrong": lead.phone_wrong, "country": lead.country,
        "timezone": lead.timezone, "timezone_source": lead.timezone_source,
        # Every zone the lead may be in when it is not known: the rep sees each local time.
        "local_time": {zone: now.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes") for zone in zones},
        "custom_fields": dict(sorted((lead.custom or {}).items())),
        "consent": {c.channel: {"source": c.source, "given_at": c.given_at, "revoked_at": c.revoked_at}
                    for c in consents(lead).values()},
        "opted_out_at": lead.opted_out_at,
        "last_touches": [
            {"at": t.sent_at or t.created_at, "cadence": cadence, "step": t.step_key, "channel": t.channel,
             "status": t.status, "outcome": t.outcome}
            for t, cadence in touches
        ],
    }


# ---------------------------------------------------------------- stats


def _rate(n: int, of: int) -> dict[str, Any]:
    # Never a rate without its counts: a reader judges 1 of 2 and 50 of 100 differently.
    return {"n": n, "of": of, "rate": round(n / of, 4) if of else None}


def call_stats(session: so.Session, *, connected: Sequence[str], cadence: str | None = None,
               rep_id: int | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Return calls, connects and meetings per script version, and per objection how often it still met."""
    where = []
    if cadence is not None:
        where.append(Call.cadence_name == cadence)
    if rep_id is not None:
        where.append(Call.rep_id == rep_id)
    if since is not None:
        where.append(Call.logged_at >= since)
    connects = sa.func.sum(sa.case((Call.outcome.in_(list(connected)), 1), else_=0))
    meetings = sa.func.sum(sa.case((Call.outcome == MEETING, 1), else_=0))
    scripts = session.execute(
        sa.select(Call.script_key, Call.script_version, sa.func.count(), connects, meetings).where(*where)
        .group_by(Call.script_key, Call.script_version).order_by(Call.script_key, Call.script_version)
    ).all()
    objections = session.execute(
        sa.select(CallObjection.key, sa.func.count(), meetings).join(Call, Call.id == CallObjection.call_id)
        .where(*where).group_by(CallObjection.key).order_by(sa.func.count().desc(), CallObjection.key)
    ).all()
    total = [sum(int(row[i] or 0) for row in scripts) for i in (2, 3, 4)]
    return {
        "calls": total[0], "connects": _rate(total[1], total[0]), "meetings": _rate(total[2], total[0]),
        "scripts": [
            {"script": key, "version": version, "calls": calls, "connects": _rate(int(conn), calls),
             "meetings": _rate(int(met), calls)}
            for key, version, calls, conn, met in scripts
        ],
        "objections": [
            {"objection": key, "raised": raised, "share_of_calls": _rate(raised, total[0]),
             "still_met": _rate(int(met), raised)}
            for key, raised, met in objections
        ],
    }
