"""/overview (ops and admins): a read-only overview of cadences and what went out, in aggregate counts."""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, render_template

from sequencer.models import Cadence, Enrollment, Role, Task, Touch
from sequencer.web import get_runtime
from sequencer.web.security import requires

bp = Blueprint("overview", __name__)

# The window of the touch counts.
TOUCH_WINDOW = timedelta(days=7)


@bp.get("/overview")
@requires(Role.ops)
def index() -> str:
    """Show each cadence's latest version with enrollment counts by state, touch counts and open tasks."""
    runtime = get_runtime()
    now = runtime.now()
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
        touches: dict[str, dict[str, int]] = defaultdict(dict)
        for channel, status, count in session.execute(
            sa.select(Touch.channel, Touch.status, sa.func.count())
            .where(Touch.created_at > now - TOUCH_WINDOW)
            .group_by(Touch.channel, Touch.status)
        ):
            touches[channel][getattr(status, "value", status)] = count
        open_tasks = session.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.state == "open"))
        return render_template("overview.html", cadences=cadences, counts=counts, touches=dict(touches),
                               touch_days=TOUCH_WINDOW.days, open_tasks=open_tasks, now=now)
