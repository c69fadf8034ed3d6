"""The engine opens a manual call step's task with the call script rendered for the lead."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from sequencer.models import Task, Touch
from sequencer.scripts import script_version
from sequencer.testing.world import ALWAYS_OPEN, apply, team

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
SCRIPTED = 'name = "scripted"\n' + ALWAYS_OPEN + """
[[steps]]
key = "discovery"
channel = "voice"
subject = "Discovery call"
template = "voice/discovery_call"
"""


def test_a_call_task_carries_the_rendered_script_and_its_version(cli, runtime, tmp_path: Path) -> None:
    team(cli, "rita@acme.example", name="Rita Rep", timezone="America/New_York")
    apply(cli, tmp_path, SCRIPTED)
    leads = tmp_path / "leads.csv"
    leads.write_text("email,phone,first_name,company,owner\n"
                     "mo@b.example,+12125550102,Mo,Beta,rita@acme.example\n", encoding="utf-8")
    cli("leads", "import", str(leads), now="2026-03-02T12:00:00Z")
    cli("enroll", "--cadence", "scripted", "mo@b.example", now="2026-03-02T15:00:00Z")
    cli("worker", "--once", now="2026-03-02T15:00:00Z")

    with runtime.session() as s:
        task = s.scalar(sa.select(Task))
        touch = s.scalar(sa.select(Touch))
    # Stage labels as the rep reads them, never the file's [stage ...] markup.
    assert "GREETING AND INTRODUCTION [greeting]" in task.instructions
    assert '"Hi Mo, this is Rita Rep.' in task.instructions
    assert "[stage " not in task.instructions and "[objection " not in task.instructions
    assert touch.body_text == task.instructions
    assert (touch.script_key, touch.script_version) == (
        "voice/discovery_call", script_version(TEMPLATES, "voice/discovery_call"))
