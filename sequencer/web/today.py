"""/: Today, the signed-in rep's overdue and due-today open tasks, grouped by kind, most urgent first."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, abort, make_response, render_template, request
from flask.typing import ResponseReturnValue

from sequencer.models import InboundEvent, Lead, User
from sequencer.tasks import list_tasks
from sequencer.web import get_runtime
from sequencer.web.security import viewer
from sequencer.web.times import for_both, overdue

bp = Blueprint("today", __name__)

# The groups, in the order a rep works them; a task kind not named here is "other" (replies, to-dos, alerts).
GROUPS = (("call", "Calls"), ("email", "Emails"), ("sms", "SMS"), ("other", "Other"))
_GROUP_OF = {key: key for key, _title in GROUPS[:-1]}


@dataclass
class Group:
    key: str
    title: str
    tasks: list[dict[str, Any]] = field(default_factory=list)


def group_of(kind: str) -> str:
    return _GROUP_OF.get(kind, "other")


def urgency(task: dict[str, Any]) -> tuple:
    """Sort key: leads who replied first, then the longest overdue, then the more important, then the oldest."""
    return (not task["replied"], task["due_at"], -task["priority"], task["id"])


def arrange(tasks: list[dict[str, Any]]) -> list[Group]:
    """Return the tasks in their groups (every group, empty or not), each group most urgent first."""
    groups = {key: Group(key, title) for key, title in GROUPS}
    for task in sorted(tasks, key=urgency):
        groups[group_of(task["kind"])].tasks.append(task)
    return list(groups.values())


@bp.get("/")
def today() -> ResponseReturnValue:
    """Show a rep's day: the signed-in user's own, or (ops and admins) the chosen rep's with ?rep=ID."""
    me = viewer()
    runtime = get_runtime()
    now = runtime.now()
    with runtime.session() as session:
        people = _people(session) if me.sees_everyone else []
        chosen, error = _chosen(request.args.get("rep"), me.id, people, me.sees_everyone)
        owner = session.get(User, chosen)
        tasks = day_of(session, owner, me.timezone, now)
        page = render_template("today.html", groups=arrange(tasks), total=len(tasks), owner=owner, people=people,
                               chosen=chosen, error=error, now=now)
    return make_response(page, 400 if error else 200)


def day_of(session: so.Session, owner: User, viewer_zone: str, now: datetime) -> list[dict[str, Any]]:
    """Return the owner's overdue and due-today tasks, each with replied, due_text and late."""
    tasks = list_tasks(session, rep=owner, day=None, now=now)
    _annotate(session, tasks, viewer_zone, now)
    return tasks


def next_task(session: so.Session, owner: User, viewer_zone: str, now: datetime) -> int | None:
    """Return the task to work next in the owner's day: the first of Today's first non-empty group."""
    for group in arrange(day_of(session, owner, viewer_zone, now)):
        if group.tasks:
            return int(group.tasks[0]["id"])
    return None


def _people(session: so.Session) -> list[tuple[int, str]]:
    """Return (id, label) of every active user, for the picker of ops and admins."""
    rows = session.execute(sa.select(User.id, User.email, User.name, User.role).where(User.active)
                           .order_by(User.role, User.email))
    return [(uid, f"{name or email} ({role.value})") for uid, email, name, role in rows]


def _chosen(text: str | None, own: int, people: list[tuple[int, str]], may_choose: bool) -> tuple[int, str | None]:
    """Return whose day to show and an error for the picker; a rep asking for anyone else gets 404."""
    if not text or text == str(own):
        return own, None
    if not may_choose:
        abort(404)
    if text.isdigit() and int(text) in {uid for uid, _label in people}:
        return int(text), None
    return own, f"There is no active user {text!r}; pick one from the list."


def _annotate(session: so.Session, tasks: list[dict[str, Any]], viewer_zone: str, now: datetime) -> None:
    """Add to each task whether its lead has replied, its due time for both sides and how late it is."""
    lead_ids = {t["lead_id"] for t in tasks if t["lead_id"] is not None}
    replied: set[int] = set()
    zones: dict[int, tuple[str, ...]] = {}
    if lead_ids:
        replied = set(session.scalars(sa.select(InboundEvent.lead_id).distinct().where(
            InboundEvent.lead_id.in_(lead_ids), InboundEvent.kind == "reply")))
        zones = {lid: (tz,) if tz else tuple(candidates or ()) for lid, tz, candidates in session.execute(
            sa.select(Lead.id, Lead.timezone, Lead.candidate_zones).where(Lead.id.in_(lead_ids)))}
    for task in tasks:
        task["replied"] = task["kind"] == "reply" or task["lead_id"] in replied
        task["due_text"] = for_both(task["due_at"], viewer_zone, zones.get(task["lead_id"], ()), now)
        task["late"] = overdue(task["due_at"], now)
