"""A lead's timeline: every kind of event, in time order, as `sequencer timeline` shows it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sequencer.testing.world import ALWAYS_OPEN, REP, apply, dsn, enroll_csv, reply, team

CADENCE = 'name = "tl"\n' + ALWAYS_OPEN + """
[[steps]]
key = "intro"
channel = "email"
subject = "Question for {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}."

[[steps]]
key = "call"
channel = "voice"
wait = "1d"
body = "Call {{ lead.first_name }}."

[[steps]]
key = "bump"
channel = "email"
wait = "2d"
thread = true
body = "Bumping this."
"""


@pytest.fixture
def history(cli, tmp_path: Path, smtp_sink) -> None:
    """Ann's whole story: enrolled, emailed, called, a delayed-mail report, then an unsubscribe reply."""
    team(cli, mailbox_name="")
    apply(cli, tmp_path, CADENCE)
    enroll_csv(cli, tmp_path, [f"ann@corp.example,+12125550100,Ann,{REP}"], "tl", "2026-03-02T14:00:00Z",
               header="email,phone,first_name,owner")
    cli("worker", "--once", now="2026-03-02T14:00:00Z")
    cli("worker", "--once", now="2026-03-03T14:00:00Z")
    [task] = json.loads(cli("tasks", "--format", "json", now="2026-03-03T14:30:00Z").output)
    cli("task", "done", str(task["id"]), "--outcome", "connected", "--notes", "asked for details",
        now="2026-03-03T15:00:00Z")
    [intro] = smtp_sink.messages()
    (tmp_path / "dsn.eml").write_bytes(dsn(intro, "ann@corp.example", "4.2.2", "452 4.2.2 Mailbox full",
                                           subject="Delayed Mail (still being retried)",
                                           explanation="The mailbox is full."))
    assert json.loads(cli("inbound", "email", str(tmp_path / "dsn.eml"), now="2026-03-03T16:00:00Z").output)[
        "kind"] == "bounce"
    (tmp_path / "reply.eml").write_bytes(reply(sender="Ann <ann@corp.example>", subject="Re: " + intro["Subject"],
                                               in_reply_to=intro["Message-ID"], domain="corp.example",
                                               body="Please remove me from your list."))
    cli("inbound", "email", str(tmp_path / "reply.eml"), now="2026-03-04T10:00:00Z")


def timeline(cli, ref: str) -> list[dict]:
    return json.loads(cli("timeline", ref, "--format", "json").output)


def test_every_kind_shows_up_in_time_order(cli, history) -> None:
    rows = timeline(cli, "ann@corp.example")
    seen = [(r["at"], r["kind"], r["step"]) for r in rows]
    assert seen[:7] == [
        ("2026-03-02T14:00:00Z", "enrolled", None),
        ("2026-03-02T14:00:00Z", "attempt", "intro"),
        ("2026-03-02T14:00:00Z", "touch", "intro"),
        ("2026-03-03T14:00:00Z", "task", "call"),
        ("2026-03-03T15:00:00Z", "touch", "call"),
        ("2026-03-03T15:00:00Z", "task_done", "call"),
        ("2026-03-03T16:00:00Z", "bounce", None),
    ]
    # The opt-out the reply asked for (the reply kept in it) and the exit share one instant; as on every
    # channel, no reply task invites a rep to write to someone who asked us to stop.
    assert sorted(seen[7:], key=str) == sorted([
        ("2026-03-04T10:00:00Z", "opt_out", None), ("2026-03-04T10:00:00Z", "exited", None)], key=str)
    assert seen[-1][1] == "exited"
    by_kind = {r["kind"]: r for r in rows if r["kind"] not in ("task", "touch")}
    intro, call = (r for r in rows if r["kind"] == "touch")
    assert (intro["status"], intro["channel"], intro["detail"]) == ("sent", "email", "Question for Ann")
    assert (call["status"], call["channel"]) == ("completed", "voice")
    assert "outcome connected: asked for details" in call["detail"]
    assert (by_kind["attempt"]["status"], by_kind["attempt"]["detail"]) == ("ok", "attempt 1")
    assert by_kind["task_done"]["detail"] == "connected, asked for details"
    assert by_kind["bounce"]["status"] == "transient"
    assert "Please remove me from your list." in by_kind["opt_out"]["detail"]
    assert (by_kind["exited"]["status"], by_kind["exited"]["cadence"]) == ("opted_out", "tl")
    assert by_kind["enrolled"]["cadence"] == "tl"


def test_json_times_are_utc_with_z(cli, history) -> None:
    rows = timeline(cli, "ann@corp.example")
    assert rows and all(r["at"].endswith("Z") and "+00:00" not in r["at"] for r in rows)


def test_lead_is_found_by_email_phone_or_id(cli, history) -> None:
    by_email = timeline(cli, "ANN@corp.example")
    [lead] = json.loads(cli("leads", "list", "--format", "json").output)
    assert timeline(cli, "+12125550100") == by_email
    assert timeline(cli, str(lead["id"])) == by_email
    table = cli("timeline", "+12125550100").output
    assert table.splitlines()[0].split() == ["AT", "KIND", "CHANNEL", "STATUS", "CADENCE", "STEP", "DETAIL"]
    assert "task_done" in table
    assert "no lead with email nobody@corp.example" in cli("timeline", "nobody@corp.example", expect=1).output
    assert "no lead with phone +12125550199" in cli("timeline", "+12125550199", expect=1).output
    assert "no lead with id 999" in cli("timeline", "999", expect=1).output
