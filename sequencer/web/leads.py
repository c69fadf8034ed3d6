"""/leads/<id>, the card and the full timeline; a rep reaches only their own leads and tasks (404 otherwise)."""
from __future__ import annotations

from typing import TypeVar

import sqlalchemy.orm as so
from flask import Blueprint, abort, render_template
from flask.typing import ResponseReturnValue

from sequencer.consent import consents
from sequencer.models import Lead, Task, User
from sequencer.timeline import lead_timeline
from sequencer.web import get_runtime
from sequencer.web.security import Viewer, viewer
from sequencer.web.times import for_both, lead_clock

bp = Blueprint("leads", __name__)
T = TypeVar("T", Lead, Task)


def may_see(me: Viewer, owner_id: int | None) -> bool:
    """Return whether the user may see a lead or task with this owner (COMPLIANCE rule 17)."""
    return me.sees_everyone or owner_id == me.id


def visible(session: so.Session, model: type[T], ident: int, me: Viewer) -> T:
    """Return the lead or task, or answer 404, whether it is missing or another rep's.

    Another rep's answers exactly like a missing one: its existence is not theirs to know.
    """
    found = session.get(model, ident)
    if found is None or not may_see(me, found.owner_id):
        abort(404)
    return found


@bp.get("/leads/<int:lead_id>")
def lead(lead_id: int) -> ResponseReturnValue:
    """Show the lead's card (company, title, local time now, custom fields, consent) and timeline."""
    me = viewer()
    runtime = get_runtime()
    now = runtime.now()
    with runtime.session() as session:
        found = visible(session, Lead, lead_id, me)
        zones = found.zones()
        owner = session.get(User, found.owner_id) if found.owner_id else None
        rows = lead_timeline(session, found)
        for row in rows:
            row["when"] = for_both(row["at"], me.timezone, zones, now)
        return render_template("lead.html", lead=found, owner=owner, clock=lead_clock(now, zones),
                               consents=sorted(consents(found).values(), key=lambda c: c.channel),
                               timeline=rows[::-1], now=now)
