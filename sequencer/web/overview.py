"""/: a read-only overview of cadences and recent touches.

There is no login yet (UI auth is a later issue), so this page only reads: it must
never gain a form or an action before authentication is in place.
"""
from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from flask import Blueprint, render_template

from sequencer.models import Cadence, Enrollment, Lead, Touch
from sequencer.web import get_runtime

bp = Blueprint("overview", __name__)

RECENT_TOUCHES = 20


@bp.get("/")
def index() -> str:
    """Show each cadence's latest version with enrollment counts by state, and the latest touches."""
    runtime = get_runtime()
    with runtime.session() as session:
        latest = (sa.select(Cadence.name, sa.func.max(Cadence.version).label("version"))
                  .group_by(Cadence.name).subquery())
        cadences = list(session.scalars(
            sa.select(Cadence).join(latest, sa.and_(Cadence.name == latest.c.name,
                                                    Cadence.version == latest.c.version))
            .order_by(Cadence.name)
        ))
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for name, state, count in session.execute(
            sa.select(Enrollment.cadence_name, Enrollment.state, sa.func.count())
            .group_by(Enrollment.cadence_name, Enrollment.state)
        ):
            # The column hands back EnrollmentState members; the page shows their values.
            counts[name][getattr(state, "value", state)] = count
        touches = session.execute(
            sa.select(Touch, Lead.email).join(Lead, Lead.id == Touch.lead_id)
            .order_by(Touch.created_at.desc(), Touch.id.desc())
            .limit(RECENT_TOUCHES)
        ).all()
        return render_template("overview.html", cadences=cadences, counts=counts, touches=touches,
                               now=runtime.now())
