"""Reps' tasks through the CLI: the daily list in the rep's zone, outcomes, skips and their audit trail."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.models import AuditEntry, Call, CallObjection, Enrollment, Lead, Task, Touch
from sequencer.scripts import script_version
from sequencer.testing.world import ALWAYS_OPEN, CALLS, apply, team, utc

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

RITA, OMAR = "rita@acme.example", "omar@acme.example"
TODO = 'name = "todo"\n' + ALWAYS_OPEN + """
[[steps]]
key = "research"
channel = "task"
body = "Look up {{ lead.company | default('the company') }}."
"""
LEADS = f"""email,phone,first_name,company,owner
early@a.example,+12125550101,Ella,Alpha,{RITA}
morning@b.example,+12125550102,Mo,Beta,{RITA}
late@c.example,+12125550103,Lars,Gamma,{RITA}
tomorrow@d.example,+12125550104,Tom,Delta,{RITA}
other@e.example,+12125550105,Otto,Epsilon,{OMAR}
"""


@pytest.fixture
def world(cli, tmp_path: Path, smtp_sink) -> None:
    """Two reps (Rita in New York), their mailboxes, a call cadence, a research cadence and five leads."""
    team(cli, RITA, name="Rita Rep", timezone="America/New_York", mailbox_name="")
    team(cli, OMAR, name="Omar Rep", timezone="America/New_York", mailbox_name="")
    for text in (CALLS, TODO):
        apply(cli, tmp_path, text)
    leads = tmp_path / "leads.csv"
    leads.write_text(LEADS, encoding="utf-8")
    cli("leads", "import", str(leads), now="2026-03-02T12:00:00Z")


def task_at(cli, email: str, cadence: str, at: str) -> None:
    """Enroll a lead at `at` and run the worker then, so its task is due at exactly that instant."""
    cli("enroll", "--cadence", cadence, email, now=at)
    cli("worker", "--once", now=at)


def listed(cli, *args: str, now: str) -> list[dict]:
    return json.loads(cli("tasks", *args, "--format", "json", now=now).output)


def open_task(cli, email: str, now: str = "2026-03-02T15:00:00Z") -> dict:
    [row] = [t for t in listed(cli, now=now) if t["lead_email"] == email]
    return row


def test_daily_list_is_the_reps_day_in_the_reps_zone(cli, world) -> None:
    task_at(cli, "early@a.example", "todo", "2026-03-02T15:00:00Z")      # overdue by the 3rd
    task_at(cli, "morning@b.example", "calls", "2026-03-03T14:00:00Z")   # 09:00 in New York
    task_at(cli, "other@e.example", "calls", "2026-03-03T15:00:00Z")     # Omar's
    task_at(cli, "late@c.example", "calls", "2026-03-04T04:30:00Z")      # 23:30 on the 3rd in New York
    task_at(cli, "tomorrow@d.example", "calls", "2026-03-04T05:30:00Z")  # 00:30 on the 4th in New York

    rows = listed(cli, "--rep", RITA, "--date", "2026-03-03", now="2026-03-04T06:00:00Z")
    # Calls before research tasks; within a priority, the earlier due first.
    assert [(r["lead_email"], r["due_at"]) for r in rows] == [
        ("morning@b.example", "2026-03-03T14:00:00Z"),
        ("late@c.example", "2026-03-04T04:30:00Z"),
        ("early@a.example", "2026-03-02T15:00:00Z"),
    ]
    first = rows[0]
    assert {"id", "lead_email", "lead_phone", "channel", "action", "cadence", "step", "due_at", "state"} <= set(first)
    assert (first["lead_phone"], first["channel"], first["action"], first["cadence"], first["step"], first["state"]) \
        == ("+12125550102", "voice", "manual", "calls", "call", "open")
    assert (rows[2]["channel"], rows[2]["cadence"], rows[2]["step"]) == ("task", "todo", "research")

    next_day = listed(cli, "--rep", RITA, "--date", "2026-03-04", now="2026-03-04T06:00:00Z")
    assert "tomorrow@d.example" in [r["lead_email"] for r in next_day]
    omar = listed(cli, "--rep", OMAR, "--date", "2026-03-03", now="2026-03-04T06:00:00Z")
    assert [r["lead_email"] for r in omar] == ["other@e.example"]


def test_unknown_rep_and_bad_date_are_refused(cli, world) -> None:
    assert "no user nobody@acme.example" in cli("tasks", "--rep", "nobody@acme.example", expect=1).output
    assert "is not a date" in cli("tasks", "--date", "03/03/2026", expect=1).output


@pytest.mark.parametrize("exit_on, ends", [(None, True), ('["reply"]', False)], ids=["exits-on-meeting", "reply-only"])
def test_meeting_booked_ends_the_enrollment_when_the_cadence_exits_on_meetings(
        cli, world, runtime, tmp_path, smtp_sink, exit_on, ends) -> None:
    if exit_on:
        path = tmp_path / "calls.toml"
        path.write_text(CALLS.replace("[[steps]]", f"[exit]\non = {exit_on}\n\n[[steps]]", 1), encoding="utf-8")
        assert "new version" in cli("cadence", "apply", str(path)).output
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    cli("task", "done", str(task["id"]), "--outcome", "meeting_booked", "--notes", "Thursday 10am",
        now="2026-03-02T15:10:00Z")

    with runtime.session() as s:
        e = s.scalar(sa.select(Enrollment))
        touch = s.scalar(sa.select(Touch))
    assert (touch.status, touch.outcome, touch.notes) == ("completed", "meeting_booked", "Thursday 10am")
    if ends:
        assert (e.state, e.exit_reason) == ("finished", "meeting booked")
    else:
        assert (e.state, e.step_position) == ("active", 1)
    cli("worker", "--once", now="2026-03-04T15:00:00Z")
    assert [m["Subject"] for m in smtp_sink.messages()] == ([] if ends else ["After our call"])


def test_call_back_later_opens_a_new_task_on_the_same_touch(cli, world, runtime) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    cli("task", "done", str(task["id"]), "--outcome", "call_back_later", "--call-back", "2026-03-05T16:00:00Z",
        now="2026-03-02T15:10:00Z")

    with runtime.session() as s:
        tasks = s.execute(sa.select(Task.id, Task.state, Task.touch_id, Task.due_at).order_by(Task.id)).all()
        touch = s.scalar(sa.select(Touch))
        e = s.scalar(sa.select(Enrollment))
    assert [(state, touch_id) for _, state, touch_id, _ in tasks] == [("done", touch.id), ("open", touch.id)]
    assert tasks[1].due_at == utc("2026-03-05T16:00:00Z")
    assert touch.status == "pending"
    assert (e.state, e.step_position) == ("waiting_task", 0)
    cli("worker", "--once", now="2026-03-04T15:00:00Z")
    assert listed(cli, "--rep", RITA, now="2026-03-04T16:00:00Z") == []  # not due before the 5th
    assert [t["id"] for t in listed(cli, "--rep", RITA, now="2026-03-05T16:00:00Z")] == [tasks[1].id]


def test_wrong_number_flags_the_phone(cli, world, runtime) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    cli("task", "done", str(open_task(cli, "morning@b.example")["id"]), "--outcome", "wrong_number",
        now="2026-03-02T15:10:00Z")
    with runtime.session() as s:
        assert s.scalar(sa.select(Lead.phone_wrong).where(Lead.email == "morning@b.example")) is True
        assert s.scalar(sa.select(Lead.phone_wrong).where(Lead.email == "late@c.example")) is False
        assert s.scalar(sa.select(Enrollment.step_position)) == 1


def test_unknown_outcome_is_refused_with_the_allowed_ones(cli, world, runtime) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    result = cli("task", "done", str(task["id"]), "--outcome", "maybe_later", expect=1)
    assert ("outcome 'maybe_later' is not one of: connected, left_voicemail, no_answer, busy, gatekeeper,"
            " wrong_number, not_interested, call_back_later, meeting_booked") in result.output
    assert open_task(cli, "morning@b.example")["state"] == "open"
    with runtime.session() as s:
        assert s.scalar(sa.select(Enrollment.state)) == "waiting_task"
        assert s.scalars(sa.select(AuditEntry.action)).all().count("task.done") == 0


def test_skip_needs_a_reason_and_moves_the_enrollment_on(cli, world, runtime) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task_id = str(open_task(cli, "morning@b.example")["id"])
    assert "Missing option '--reason'" in cli("task", "skip", task_id, expect=2).output
    assert "say why the task is skipped" in cli("task", "skip", task_id, "--reason", "  ", expect=1).output
    assert open_task(cli, "morning@b.example")["state"] == "open"

    cli("task", "skip", task_id, "--reason", "lead is travelling", now="2026-03-02T16:00:00Z")
    with runtime.session() as s:
        task = s.get(Task, int(task_id))
        touch = s.scalar(sa.select(Touch))
        e = s.scalar(sa.select(Enrollment))
    assert (task.state, task.notes) == ("skipped", "lead is travelling")
    assert (touch.status, touch.error) == ("skipped", "lead is travelling")
    # The next step's wait counts from the skip.
    assert (e.state, e.step_position, e.next_due_at) == ("active", 1, utc("2026-03-03T16:00:00Z"))


def test_done_twice_is_refused(cli, world) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task_id = str(open_task(cli, "morning@b.example")["id"])
    cli("task", "done", task_id, "--outcome", "connected", now="2026-03-02T15:10:00Z")
    assert f"task {task_id} is already done" in cli("task", "done", task_id, "--outcome", "connected",
                                                    expect=1).output
    assert f"task {task_id} is already done" in cli("task", "skip", task_id, "--reason", "x", expect=1).output
    assert "no task 999" in cli("task", "done", "999", expect=1).output


def test_task_actions_are_audited(cli, world, runtime, monkeypatch) -> None:
    monkeypatch.setenv("SEQUENCER_ACTOR", "rita@acme.example")
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task_at(cli, "late@c.example", "calls", "2026-03-02T15:00:00Z")
    done_id = open_task(cli, "morning@b.example")["id"]
    skip_id = open_task(cli, "late@c.example")["id"]
    cli("task", "done", str(done_id), "--outcome", "left_voicemail", now="2026-03-02T15:10:00Z")
    cli("task", "skip", str(skip_id), "--reason", "duplicate lead", now="2026-03-02T15:20:00Z")

    with runtime.session() as s:
        entries = s.execute(sa.select(AuditEntry.action, AuditEntry.object_id, AuditEntry.actor, AuditEntry.at,
                                      AuditEntry.detail).where(AuditEntry.object_type == "task")
                            .order_by(AuditEntry.id)).all()
    assert entries == [
        ("task.done", str(done_id), "rita@acme.example", utc("2026-03-02T15:10:00Z"), {"outcome": "left_voicemail"}),
        ("task.skip", str(skip_id), "rita@acme.example", utc("2026-03-02T15:20:00Z"), {"reason": "duplicate lead"}),
    ]


def suppress(runtime, kind: str, value: str, channel: str = "all") -> None:  # noqa: ANN001
    """Suppress a value as another path would (an inbound complaint, another process), ending nothing itself."""
    from sequencer import suppressions

    with runtime.session() as s:
        suppressions.add(s, kind, value, reason="do not contact", source="test", now=runtime.now(), channel=channel)


def test_tasks_never_lists_a_task_for_a_suppressed_or_opted_out_lead(cli, world, runtime) -> None:
    for email in ("early@a.example", "morning@b.example", "late@c.example", "tomorrow@d.example"):
        task_at(cli, email, "calls", "2026-03-02T15:00:00Z")
    suppress(runtime, "email", "early@a.example")
    suppress(runtime, "phone", "+12125550102", channel="voice")  # these are call tasks
    suppress(runtime, "phone", "+12125550103", channel="sms")  # does not cover calls
    with runtime.session() as s:
        s.execute(sa.update(Lead).where(Lead.email == "tomorrow@d.example").values(opted_out_at=runtime.now()))
    assert [t["lead_email"] for t in listed(cli, now="2026-03-02T16:00:00Z")] == ["late@c.example"]


def test_call_back_later_never_reopens_a_task_for_a_suppressed_lead(cli, world, runtime) -> None:
    task_at(cli, "morning@b.example", "calls", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    suppress(runtime, "phone", "+12125550102", channel="voice")
    cli("task", "done", str(task["id"]), "--outcome", "call_back_later", "--call-back", "2026-03-05T16:00:00Z",
        now="2026-03-02T15:10:00Z")
    reason = "suppressed: phone +12125550102 is suppressed on voice: do not contact"
    with runtime.session() as s:
        assert s.execute(sa.select(Task.state, Task.outcome)).all() == [("done", "call_back_later")]
        touch = s.scalar(sa.select(Touch))
        e = s.scalar(sa.select(Enrollment))
    assert (touch.status, touch.error) == ("skipped", reason)
    assert (e.state, e.exit_reason) == ("removed", reason)
    assert listed(cli, now="2026-03-05T16:00:00Z") == []


# ---------------------------------------------------------------- calls: scripts, objections, facts

# The calls cadence with the shipped call script instead of inline instructions.
SCRIPTED = CALLS.replace('name = "calls"', 'name = "scripted"').replace(
    'key = "call"\nchannel = "voice"\nbody = "Call {{ lead.first_name }} at {{ lead.phone }}."',
    'key = "discovery"\nchannel = "voice"\nsubject = "Discovery call"\ntemplate = "voice/discovery_call"')
assert "voice/discovery_call" in SCRIPTED


@pytest.fixture
def scripted(cli, world, tmp_path: Path) -> None:
    apply(cli, tmp_path, SCRIPTED)


def show(cli, task_id: int, now: str = "2026-03-02T15:05:00Z") -> dict:
    return json.loads(cli("task", "show", str(task_id), "--format", "json", now=now).output)


def test_task_show_renders_the_script_for_the_lead_and_the_lead_card(cli, scripted) -> None:
    task_at(cli, "morning@b.example", "scripted", "2026-03-02T15:00:00Z")
    card = show(cli, open_task(cli, "morning@b.example")["id"])
    script = card["script"]
    assert (script["key"], script["version"], script["language"]) == (
        "voice/discovery_call", script_version(TEMPLATES, "voice/discovery_call"), "en")
    assert [s["key"] for s in script["stages"]] == ["greeting", "discovery", "presentation", "objections", "close"]
    assert script["stages"][0]["text"].startswith('"Hi Mo, this is Rita Rep. I emailed you last week about how Beta')
    assert [o["key"] for o in script["objections"]][:2] == ["have_supplier", "no_time"]
    assert all(o["answers"] for o in script["objections"]) and script["also_heard"] == []
    lead = card["lead"]
    assert (lead["name"], lead["company"], lead["phone"]) == ("Mo", "Beta", "+12125550102")
    # 15:05 UTC is 10:05 in New York, where a 212 number rings.
    assert lead["local_time"] == {"America/New_York": "2026-03-02T10:05-05:00"}
    assert [(t["step"], t["status"]) for t in lead["last_touches"]] == [("discovery", "pending")]
    assert (card["cadence"], card["step"], card["kind"]) == ("scripted", "discovery", "call")

    text = cli("task", "show", str(card["id"]), now="2026-03-02T15:05:00Z").output
    assert "Local time: 10:05 2026-03-02 (America/New_York)" in text
    assert "1. GREETING AND INTRODUCTION [greeting]" in text and "\nOBJECTIONS\n" in text
    assert "[too_expensive] \"How much does it cost?\"\n  - It depends on the number of reps" in text
    assert f"sequencer task done {card['id']} --outcome connected|left_voicemail|" in text
    assert "no task 999" in cli("task", "show", "999", expect=1).output


def test_a_call_logs_objections_and_facts_and_a_new_key_is_offered_next_time(cli, scripted, runtime) -> None:
    task_at(cli, "morning@b.example", "scripted", "2026-03-02T15:00:00Z")
    task_at(cli, "late@c.example", "scripted", "2026-03-02T15:00:00Z")
    first = open_task(cli, "morning@b.example")["id"]
    result = cli("task", "done", str(first), "--outcome", "connected", "--objection", "too_expensive",
                 "--objection", "Uses_Spreadsheets", "--fact", "leads_per_week=40", "--fact", "crm=HubSpot",
                 "--notes", "Call back after budget", now="2026-03-02T15:10:00Z")
    assert result.output == f"task {first} done (connected)\n"

    with runtime.session() as s:
        lead = s.scalar(sa.select(Lead).where(Lead.email == "morning@b.example"))
        call = s.scalar(sa.select(Call))
        keys = s.scalars(sa.select(CallObjection.key).order_by(CallObjection.key)).all()
        touch = s.get(Touch, call.touch_id)
    assert lead.custom == {"leads_per_week": "40", "crm": "HubSpot"}
    assert (call.task_id, call.outcome, call.cadence_name, call.script_key, call.script_version) == (
        first, "connected", "scripted", "voice/discovery_call", script_version(TEMPLATES, "voice/discovery_call"))
    assert (touch.script_key, touch.script_version) == (call.script_key, call.script_version)
    # Keys are stored as typed (lower case): the one the script lists and the new one.
    assert keys == ["too_expensive", "uses_spreadsheets"]

    # The next call with this script offers the new key; the card shows the facts as custom fields.
    second = show(cli, open_task(cli, "late@c.example")["id"])
    assert second["script"]["also_heard"] == ["uses_spreadsheets"]
    again = show(cli, first)
    assert again["lead"]["custom_fields"] == {"crm": "HubSpot", "leads_per_week": "40"}
    stats = json.loads(cli("calls", "stats", "--format", "json").output)
    assert stats["scripts"] == [{"script": "voice/discovery_call", "version": call.script_version, "calls": 1,
                                 "connects": {"n": 1, "of": 1, "rate": 1.0}, "meetings": {"n": 0, "of": 1, "rate": 0.0}}]


@pytest.mark.parametrize(("args", "message"), [
    (["--objection", "too expensive", "--outcome", "connected"], "objection 'too expensive' is not a key"),
    (["--objection", "no_time"], "say how the call of task"),
    (["--outcome", "connected", "--fact", "leads per week=4"], "--fact 'leads per week=4' is not KEY=VALUE"),
    (["--outcome", "connected", "--fact", "budget"], "--fact 'budget' is not KEY=VALUE"),
])
def test_bad_objections_and_facts_are_refused_and_change_nothing(cli, scripted, runtime, args, message) -> None:
    task_at(cli, "morning@b.example", "scripted", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    assert message in cli("task", "done", str(task["id"]), *args, expect=1).output
    with runtime.session() as s:
        assert s.scalar(sa.select(Task.state).where(Task.id == task["id"])) == "open"
        assert s.scalar(sa.select(sa.func.count()).select_from(Call)) == 0


def test_objections_belong_to_calls(cli, world) -> None:
    task_at(cli, "early@a.example", "todo", "2026-03-02T15:00:00Z")
    task = open_task(cli, "early@a.example")
    result = cli("task", "done", str(task["id"]), "--objection", "no_time", expect=1)
    assert f"task {task['id']} is a task task, not a call; remove --objection" in result.output


@pytest.mark.parametrize("exit_on, ends", [(None, True), ('["reply", "meeting"]', False)],
                         ids=["default-exits", "not-listed"])
def test_not_interested_ends_the_enrollment_when_the_cadence_exits_on_it(
        cli, scripted, runtime, tmp_path, smtp_sink, exit_on, ends) -> None:
    if exit_on:
        apply(cli, tmp_path, SCRIPTED.replace("[[steps]]", f"[exit]\non = {exit_on}\n\n[[steps]]", 1))
    task_at(cli, "morning@b.example", "scripted", "2026-03-02T15:00:00Z")
    cli("task", "done", str(open_task(cli, "morning@b.example")["id"]), "--outcome", "not_interested",
        "--objection", "have_supplier", now="2026-03-02T15:10:00Z")
    with runtime.session() as s:
        e = s.scalar(sa.select(Enrollment))
    if ends:
        assert (e.state, e.exit_reason) == ("finished", "not_interested")
    else:
        assert (e.state, e.step_position, e.exit_reason) == ("active", 1, None)
    cli("worker", "--once", now="2026-03-04T15:00:00Z")
    assert [m["Subject"] for m in smtp_sink.messages()] == ([] if ends else ["After our call"])


@pytest.mark.parametrize(("call_back", "due"), [
    ("2026-03-02T21:30:00-05:00", "2026-03-03T13:00:00Z"),   # after 21:00 there: 08:00 the next morning
    (None, "2026-03-04T01:30:00Z"),                          # a day later is 20:30 there: inside the hours
    ("2026-03-03T06:00:00-05:00", "2026-03-03T13:00:00Z"),   # before 08:00 there: 08:00
    ("2026-03-03T11:00:00-05:00", "2026-03-03T16:00:00Z"),   # inside: as asked
])
def test_call_back_later_falls_inside_the_leads_contact_hours(cli, scripted, runtime, call_back, due) -> None:
    task_at(cli, "morning@b.example", "scripted", "2026-03-02T15:00:00Z")
    task = open_task(cli, "morning@b.example")
    at = "2026-03-03T01:30:00Z"  # 20:30 in New York
    result = cli("task", "done", str(task["id"]), "--outcome", "call_back_later",
                 *(["--call-back", call_back] if call_back else []), now=at)
    with runtime.session() as s:
        reopened = s.scalar(sa.select(Task).where(Task.state == "open"))
    assert reopened.due_at == utc(due)
    assert result.output.endswith(f"call back: task {reopened.id} due {due}\n")
