from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer import cadences
from sequencer.cadences import CadenceError, apply_cadence, export_cadence, parse_cadence, simulate
from sequencer.models import AuditEntry, Cadence, Enrollment, Lead, Step, Task
from sequencer.rendering import Renderer, build_context

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "cadences").glob("*.toml")) + sorted((REPO / "demo" / "cadences").glob("*.toml"))
UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)

BASIC = """
name = "intro"

[[steps]]
channel = "email"
subject = "Hello {{ lead.company }}"
template = "email/intro"

[[steps]]
channel = "task"
wait = "2 business days"
body = "Look the company up on LinkedIn."

[[steps]]
channel = "email"
wait = "3d"
thread = true
template = "email/follow_up"

[[steps.variants]]
weight = 3
body = "Hi again {{ lead.first_name | default('there') }}"

[[steps.variants]]
key = "b"
template = "email/follow_up"
"""


def parse(text: str, source: str = "cadences/intro.toml") -> cadences.CadenceSpec:
    return parse_cadence(text, source)


def steps_toml(*steps: str, head: str = 'name = "intro"') -> str:
    return head + "\n" + "\n".join(f"[[steps]]\n{s}\n" for s in steps)


EMAIL = 'channel = "email"\nsubject = "Hi"\nbody = "Hello"'


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(("text", "expected"), [
    (steps_toml(EMAIL, EMAIL, EMAIL + '\nwait = "3 dias"'),
     "cadences/intro.toml step 3: wait '3 dias' is not a wait; write 3d, 2 business days or 4h"),
    (steps_toml(EMAIL, 'key = "call"\nchannel = "fax"'),
     "cadences/intro.toml step 2 (call): channel 'fax' is unknown; write channel = one of email, sms, voice, task"),
    (steps_toml('channel = "email"\nthread = true\nbody = "x"'),
     "cadences/intro.toml step 1: thread = true replies to an earlier email of the cadence, and there is none"),
    (steps_toml('channel = "sms"\nbody = "x"', 'channel = "sms"\nthread = true\nbody = "x"'),
     "step 2: only email steps can reply in a thread; remove thread = true"),
    (steps_toml('key = "first"\nchannel = "email"\ntemplate = "email/intro"'),
     "step 1 (first): an email that starts a thread needs a subject; add subject"),
    (steps_toml(EMAIL + '\nsubjct = "typo"'),
     "step 1: unknown key 'subjct'; the keys a step takes are key, channel"),
    (steps_toml(EMAIL + '\nkey = "a"', EMAIL + '\nkey = "a"'),
     "step 2 (a): key 'a' is used by an earlier step; give each step its own key"),
    (steps_toml(EMAIL + '\ntemplate = "email/intro"'), "step 1: has both template and body; keep one"),
    (steps_toml('channel = "task"\naction = "auto"\nbody = "x"'), "step 1: a task step is always done by a person"),
    (steps_toml('channel = "sms"'), "step 1: an SMS step needs its text"),
    (steps_toml(EMAIL + '\nwait = 3'), "step 1: wait 3 is not a wait; write 3d"),
    (steps_toml(EMAIL + '\n[[steps.variants]]\nsubject = "A"\nweight = 0\n[[steps.variants]]\nsubject = "B"'),
     "step 1 variant 1: weight 0 must be a whole number of at least 1"),
    (steps_toml(EMAIL + '\n[[steps.variants]]\nsubject = "A"\nweight = 1.5\n[[steps.variants]]\nsubject = "B"'),
     "step 1 variant 1: weight 1.5 must be a whole number"),
    (steps_toml(EMAIL + '\n[[steps.variants]]\nsubject = "A"'), "step 1: an A/B test needs at least two"),
    (steps_toml(EMAIL, head='name = "intro"\n[schedule]\ntimezone = "Mars/Olympus"'),
     "cadences/intro.toml: schedule timezone 'Mars/Olympus' is unknown"),
    (steps_toml(EMAIL, head='name = "intro"\n[schedule]\nholidays = "XX"'),
     "cadences/intro.toml: schedule holidays 'XX' is not a supported country"),
    (steps_toml(EMAIL, head='name = "intro"\n[schedule]\ndays = ["monday"]'),
     "schedule day 'monday' is not a day; use mon, tue"),
    (steps_toml(EMAIL, head='name = "intro"\n[schedule]\nstart = "18:00"\nend = "09:00"'),
     "cadences/intro.toml: schedule: window 18:00-09:00 is empty"),
    (steps_toml(EMAIL, head='name = "intro"\n[exit]\non = ["bounce"]'),
     "exit on 'bounce' is unknown; use any of reply, meeting, not_interested (opt-outs, complaints and invalid"),
    (steps_toml(EMAIL, head='name = "intro"\n[exit]\nscope = "company"'), "exit scope 'company' is unknown"),
    (steps_toml(EMAIL, head='name = "intro"\nstate = "live"'), "state 'live' is unknown; write one of draft"),
    ('name = "intro"', "cadences/intro.toml: the cadence has no steps; add at least one [[steps]]"),
    (steps_toml(EMAIL, head=""), "cadences/intro.toml: the cadence has no name; add name ="),
    ('name = "intro', "cadences/intro.toml: not valid TOML"),
])
def test_parse_errors_name_the_file_the_step_and_the_fix(text: str, expected: str) -> None:
    with pytest.raises(CadenceError) as caught:
        parse(text)
    assert expected in str(caught.value)


def test_parse_applies_the_documented_defaults() -> None:
    spec = parse(steps_toml(EMAIL, 'channel = "sms"\nbody = "x"', 'channel = "voice"\nsubject = "Call"',
                            'channel = "task"\nsubject = "Research"'))
    assert spec.state is None
    assert spec.schedule == {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00",
                             "timezone": "lead", "holidays": "lead", "skip_dates": []}
    assert spec.exit_rules == {"on": ["reply", "meeting", "not_interested"], "scope": "lead"}
    assert [s.action for s in spec.steps] == ["auto", "auto", "manual", "manual"]
    assert [s.wait for s in spec.steps] == ["0d"] * 4
    assert [s.key for s in spec.steps] == ["1-email", "2-sms", "3-voice", "4-task"]


def test_parse_normalizes_schedule_and_waits() -> None:
    spec = parse(steps_toml(EMAIL + '\nwait = "2  Business Days"', EMAIL + '\nwait = "4 hours"',
                            head='name = " intro "\n[schedule]\ndays = ["Fri", "mon", "mon"]\nstart = "8:00"\n'
                                 'end = "24:00"\nholidays = "us"\nskip_dates = ["2026-12-24", 2026-12-23]\n'
                                 '[exit]\non = ["meeting", "reply"]\nscope = "account"'))
    assert spec.name == "intro"
    assert spec.schedule == {"days": ["mon", "fri"], "start": "08:00", "end": "24:00", "timezone": "lead",
                             "holidays": "US", "skip_dates": ["2026-12-23", "2026-12-24"]}
    assert spec.exit_rules == {"on": ["reply", "meeting"], "scope": "account"}
    assert [s.wait for s in spec.steps] == ["2 business days", "4h"]


def test_generated_keys_avoid_the_explicit_ones() -> None:
    spec = parse(steps_toml(EMAIL + '\nkey = "2-email"', EMAIL, EMAIL))
    assert [s.key for s in spec.steps] == ["2-email", "2-email-2", "3-email"]


def test_variants_get_keys_weights_and_fall_back_to_the_step() -> None:
    spec = parse(BASIC)
    step = spec.steps[2]
    assert [(v.key, v.weight) for v in step.variants] == [("a", 3), ("b", 1)]
    assert cadences.step_contents(step) == [
        ("a", None, None, "Hi again {{ lead.first_name | default('there') }}"),
        ("b", None, "email/follow_up", None),
    ]


def test_a_threaded_step_after_an_email_is_accepted_and_tasks_may_carry_a_script() -> None:
    spec = parse(BASIC)
    assert spec.steps[2].thread is True
    assert spec.steps[1].body == "Look the company up on LinkedIn."
    assert spec.steps[1].action == "manual"


def test_the_hash_ignores_state_and_formatting_but_not_content() -> None:
    base = parse(BASIC)
    assert cadences.definition_hash(parse(BASIC.replace('name = "intro"', 'name = "intro"\nstate = "paused"\n\n'))) \
        == cadences.definition_hash(base)
    assert cadences.definition_hash(parse(BASIC.replace('wait = "3d"', 'wait = "4d"'))) \
        != cadences.definition_hash(base)


def test_renderer_check_names_the_step_with_the_broken_template(tmp_path: Path) -> None:
    spec = parse(steps_toml(EMAIL, 'key = "call"\nchannel = "voice"\ntemplate = "voice/missing"'))
    with pytest.raises(CadenceError) as caught:
        cadences.check_templates(spec, Renderer(REPO / "templates"))
    assert str(caught.value).startswith("cadences/intro.toml step 2 (call): template 'voice/missing' not found")

    spec = parse(steps_toml('channel = "email"\nsubject = "Hi {{ lead.company"\nbody = "x"'))
    with pytest.raises(CadenceError, match=r"step 1 \(1-email\): .*line 1"):
        cadences.check_templates(spec, Renderer(REPO / "templates"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_and_their_templates_compile(path: Path) -> None:
    spec = parse_cadence(path.read_text(encoding="utf-8"), str(path))
    cadences.check_templates(spec, Renderer(REPO / "templates"))
    assert spec.name == path.stem


def test_the_examples_cover_the_issue() -> None:
    outbound = parse_cadence((REPO / "cadences/outbound_intro.toml").read_text(), "outbound_intro.toml")
    assert [(s.channel, s.action) for s in outbound.steps] == [
        ("email", "auto"), ("voice", "manual"), ("sms", "auto"), ("email", "auto")]
    assert len(outbound.steps[0].variants) == 2 and outbound.steps[3].thread
    ru = parse_cadence((REPO / "cadences/ru_intro.toml").read_text(), "ru_intro.toml")
    assert ru.schedule["holidays"] == "RU" and ru.schedule["timezone"] == "lead"
    for name in ("demo_en", "demo_ru"):
        demo = parse_cadence((REPO / f"demo/cadences/{name}.toml").read_text(), name)
        assert demo.schedule["days"] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        assert (demo.schedule["start"], demo.schedule["end"], demo.schedule["holidays"]) == ("00:00", "24:00", "none")
        assert [(s.channel, s.action, s.wait, s.thread) for s in demo.steps] == [
            ("email", "auto", "0d", False), ("voice", "manual", "0d", False), ("email", "auto", "1h", True)]
        due = [s.due_utc for s in simulate(demo, zone="Pacific/Auckland", start=NOW)]
        assert due == [NOW, NOW, NOW + dt.timedelta(hours=1)]


# ---------------------------------------------------------------- simulation and calendars


def test_simulate_skips_the_weekend_and_july_4th() -> None:
    spec = parse(steps_toml(EMAIL, EMAIL + '\nwait = "1 business day"', EMAIL + '\nwait = "1d"'))
    # Thursday 2 July 2026, 16:00 in New York; 4 July is a Saturday, observed on Friday 3 July.
    start = dt.datetime(2026, 7, 2, 20, 0, tzinfo=UTC)
    steps = simulate(spec, zone="America/New_York", country="US", start=start)
    assert [f"{s.due_local:%a %Y-%m-%d %H:%M %Z}" for s in steps] == [
        "Thu 2026-07-02 16:00 EDT", "Mon 2026-07-06 16:00 EDT", "Tue 2026-07-07 16:00 EDT"]
    assert steps[1].due_utc == dt.datetime(2026, 7, 6, 20, 0, tzinfo=UTC)
    # Without a country there is no holiday: 3 July is an ordinary Friday.
    plain = simulate(spec, zone="America/New_York", country=None, start=start)
    assert plain[1].due_local.date() == dt.date(2026, 7, 3)


def test_simulate_moves_into_the_window_and_keeps_wall_time_across_dst() -> None:
    spec = parse(steps_toml(EMAIL, EMAIL + '\nwait = "2d"'))
    # Saturday 7 March 2026, 10:00 in New York: the first step waits for Monday 09:00 (EDT from the 8th).
    start = dt.datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    steps = simulate(spec, zone="America/New_York", country="US", start=start)
    assert steps[0].due_utc == dt.datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    assert f"{steps[0].due_local:%a %H:%M %Z}" == "Mon 09:00 EDT"
    assert f"{steps[1].due_local:%a %H:%M %Z}" == "Wed 09:00 EDT"


def test_a_fixed_schedule_zone_wins_and_a_lead_zone_is_needed_otherwise() -> None:
    fixed = parse(steps_toml(EMAIL, head='name = "x"\n[schedule]\ntimezone = "Europe/Moscow"'))
    steps = simulate(fixed, zone=None, start=NOW)
    # 14:00 UTC is 17:00 in Moscow: the window excludes its end, so the step waits for Tuesday 09:00.
    assert f"{steps[0].due_local:%a %H:%M} {steps[0].due_local.tzinfo}" == "Tue 09:00 Europe/Moscow"
    assert steps[0].due_utc == dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    with pytest.raises(CadenceError, match="each lead's own time zone"):
        simulate(parse(steps_toml(EMAIL)), zone=None, start=NOW)


def _lead(**fields) -> Lead:
    return Lead(created_at=NOW, updated_at=NOW, **fields)


def test_calendar_for_lead_uses_the_lead_zone_country_and_fallbacks() -> None:
    schedule = parse(steps_toml(EMAIL, head='name = "x"\n[schedule]\nskip_dates = ["2026-03-03"]')).schedule
    cal = cadences.calendar_for_lead(schedule, _lead(timezone="Europe/Berlin", country="de"))
    assert cal.zones == ("Europe/Berlin",) and cal.holiday_country == "DE"
    assert dt.date(2026, 3, 3) in cal.skip_dates
    assert cadences.calendar_for_lead(schedule, _lead(candidate_zones=["America/Chicago", "America/Denver"])).zones \
        == ("America/Chicago", "America/Denver")
    unknown = cadences.calendar_for_lead(schedule, _lead(country="XX"))
    assert unknown.zones == ("UTC",) and unknown.holiday_country is None
    fixed = {**schedule, "timezone": "Asia/Tokyo", "holidays": "none"}
    cal = cadences.calendar_for_lead(fixed, _lead(timezone="Europe/Berlin", country="DE"))
    assert cal.zones == ("Asia/Tokyo",) and cal.holiday_country is None


# ---------------------------------------------------------------- database


def _count(session, model) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def _enroll(session, cadence: Cadence, email: str, *, state: str = "active", **lead_fields) -> Enrollment:
    lead = _lead(email=email, email_normalized=email.lower(), **lead_fields)
    session.add(lead)
    session.flush()
    enrollment = Enrollment(lead_id=lead.id, cadence_id=cadence.id, cadence_name=cadence.name, anchor_at=NOW,
                            enrolled_at=NOW, state=state, next_due_at=NOW,
                            exited_at=None if state == "active" else NOW)
    session.add(enrollment)
    session.flush()
    return enrollment


def test_apply_creates_v1_and_an_unchanged_file_changes_nothing(runtime) -> None:
    spec = parse(BASIC)
    with runtime.session() as session:
        first = apply_cadence(session, spec, now=NOW)
        assert (first.created, first.new_version, first.unchanged) == (True, False, False)
        cadence_id = first.cadence.id
    with runtime.session() as session:
        stored = cadences.latest(session, "intro")
        assert (stored.id, stored.version, stored.state) == (cadence_id, 1, "active")
        assert [(s.key, s.position, s.channel, s.action, s.wait) for s in stored.steps] == [
            ("1-email", 0, "email", "auto", "0d"), ("2-task", 1, "task", "manual", "2 business days"),
            ("3-email", 2, "email", "auto", "3d")]
        assert stored.steps[2].variants[0] == {"key": "a", "weight": 3, "subject": None, "template": None,
                                               "body": "Hi again {{ lead.first_name | default('there') }}"}
        assert stored.schedule["days"] == ["mon", "tue", "wed", "thu", "fri"]
        assert stored.exit_rules == {"on": ["reply", "meeting", "not_interested"], "scope": "lead"}
    with runtime.session() as session:
        again = apply_cadence(session, parse(BASIC), now=NOW + dt.timedelta(days=1))
        assert (again.created, again.new_version, again.unchanged, again.state_changed) == (False, False, True, False)
        assert again.cadence.id == cadence_id
    with runtime.session() as session:
        assert (_count(session, Cadence), _count(session, Step)) == (1, 3)
        assert session.get(Cadence, cadence_id).created_at == NOW


def test_an_edited_file_makes_v2_and_running_enrollments_keep_v1(runtime) -> None:
    with runtime.session() as session:
        v1 = apply_cadence(session, parse(BASIC), now=NOW).cadence
        enrollment_id = _enroll(session, v1, "ada@example.com").id
        v1_id = v1.id
    edited = BASIC.replace('wait = "3d"', 'wait = "5d"')
    with runtime.session() as session:
        result = apply_cadence(session, parse(edited), now=NOW)
        assert (result.created, result.new_version, result.unchanged) == (False, True, False)
        assert result.cadence.version == 2 and result.cadence.id != v1_id
    with runtime.session() as session:
        assert session.get(Enrollment, enrollment_id).cadence_id == v1_id
        assert [s.wait for s in session.get(Cadence, v1_id).steps] == ["0d", "2 business days", "3d"]
        assert [s.wait for s in cadences.latest(session, "intro").steps] == ["0d", "2 business days", "5d"]
        assert (_count(session, Cadence), _count(session, Step)) == (2, 6)


def test_the_file_state_applies_to_all_versions_and_a_missing_state_keeps_it(runtime) -> None:
    with runtime.session() as session:
        apply_cadence(session, parse(BASIC), now=NOW)
        apply_cadence(session, parse(BASIC.replace('"3d"', '"4d"')), now=NOW)
    with runtime.session() as session:
        paused = BASIC.replace('"3d"', '"4d"').replace('name = "intro"', 'name = "intro"\nstate = "paused"')
        result = apply_cadence(session, parse(paused), now=NOW)
        assert result.unchanged and result.state_changed and result.previous_state == "active"
    with runtime.session() as session:
        assert set(session.scalars(sa.select(Cadence.state))) == {"paused"}
        assert apply_cadence(session, parse(BASIC.replace('"3d"', '"4d"')), now=NOW).cadence.state == "paused"
        edited = apply_cadence(session, parse(BASIC.replace('"3d"', '"6d"')), now=NOW)
        assert edited.new_version and edited.cadence.state == "paused"


def test_export_applies_back_unchanged_with_variants_and_generated_keys(runtime, tmp_path: Path) -> None:
    text = BASIC.replace('name = "intro"', 'name = "intro"\ndescription = "A test"\n[schedule]\n'
                         'skip_dates = ["2026-12-24"]\nholidays = "none"\n[exit]\non = []\nscope = "account"\n'
                         '# steps follow') + '\n'
    text = text.replace('body = "Look the company up on LinkedIn."',
                        'body = """\nCall script:\n  1. say "hello" \\\\ wave\n\n  2. ask\n"""')
    with runtime.session() as session:
        original = apply_cadence(session, parse(text), now=NOW).cadence
        exported = export_cadence(original)
    assert 'key = "1-email"' in exported and 'key = "a"' in exported and "[[steps.variants]]" in exported
    reparsed = parse_cadence(exported, "exported.toml")
    assert reparsed.steps[1].body == '\nCall script:\n  1. say "hello" \\ wave\n\n  2. ask\n'.lstrip("\n")
    with runtime.session() as session:
        result = apply_cadence(session, reparsed, now=NOW)
        assert result.unchanged and not result.state_changed
        assert export_cadence(result.cadence) == exported
    for path in EXAMPLES:
        spec = parse_cadence(path.read_text(encoding="utf-8"), str(path))
        with runtime.session() as session:
            stored = apply_cadence(session, spec, now=NOW, renderer=runtime.renderer).cadence
            back = parse_cadence(export_cadence(stored), "back.toml")
            assert cadences.definition_hash(back) == stored.definition_hash == cadences.definition_hash(spec)


def test_preflight_lists_enrolled_leads_whose_remaining_steps_would_fail(runtime) -> None:
    text = BASIC

    def context_for(enrollment: Enrollment) -> dict:
        lead = enrollment.lead
        return build_context(lead={"first_name": lead.first_name, "company": lead.company},
                             owner={"name": "Rita"}, sender={"display_name": "Rita"})

    with runtime.session() as session:
        v1 = apply_cadence(session, parse(text), now=NOW).cadence
        _enroll(session, v1, "ok@example.com", company="Acme", first_name="Ok")
        _enroll(session, v1, "nocompany@example.com")
        late = _enroll(session, v1, "late@example.com")
        late.step_position = 2  # only the threaded follow-up remains, and it needs the company
        _enroll(session, v1, "gone@example.com", state="finished")
    with runtime.session() as session:
        result = apply_cadence(session, parse(text), now=NOW, renderer=Renderer(REPO / "templates"),
                               context_for=context_for)
        problems = [(p.lead_email, p.step_key, p.reason) for p in result.preflight]
    assert {(email, key) for email, key, _ in problems} == {
        ("nocompany@example.com", "1-email"), ("nocompany@example.com", "3-email"), ("late@example.com", "3-email")}
    reason = next(r for e, k, r in problems if (e, k) == ("late@example.com", "3-email"))
    assert reason.startswith("variant b: ") and "lead.company" in reason


def test_set_state_pauses_resumes_and_archive_ends_live_enrollments(runtime) -> None:
    with runtime.session() as session:
        v1 = apply_cadence(session, parse(BASIC), now=NOW).cadence
        live = _enroll(session, v1, "live@example.com")
        done = _enroll(session, v1, "done@example.com", state="finished")
        v2 = apply_cadence(session, parse(BASIC.replace('"3d"', '"4d"')), now=NOW).cadence
        newer = _enroll(session, v2, "new@example.com")
        newer.state = "waiting_task"
        session.add(Task(lead_id=newer.lead_id, enrollment_id=newer.id, kind="task", title="Research", due_at=NOW,
                         created_at=NOW))
        ids = live.id, done.id, newer.id
    with runtime.session() as session:
        assert cadences.set_state(session, "intro", "paused", now=NOW) == 0
        assert set(session.scalars(sa.select(Cadence.state))) == {"paused"}
        assert cadences.set_state(session, "intro", "active", now=NOW) == 0
        assert set(session.scalars(sa.select(Cadence.state))) == {"active"}
    later = NOW + dt.timedelta(hours=1)
    with runtime.session() as session:
        assert cadences.set_state(session, "intro", "archived", now=later) == 2
    with runtime.session() as session:
        rows = {e.id: e for e in session.scalars(sa.select(Enrollment))}
        for enrollment_id in (ids[0], ids[2]):
            e = rows[enrollment_id]
            assert (e.state, e.exit_reason, e.exited_at, e.next_due_at) == ("removed", "cadence archived", later, None)
        assert rows[ids[1]].state == "finished" and rows[ids[1]].exit_reason is None
        assert session.scalar(sa.select(Task.state)) == "skipped"
        with pytest.raises(LookupError, match="no cadence named 'nope'; the cadences are intro"):
            cadences.set_state(session, "nope", "paused", now=NOW)


def test_latest_names_the_existing_cadences(runtime) -> None:
    with runtime.session() as session:
        with pytest.raises(LookupError, match="there are no cadences yet"):
            cadences.latest(session, "intro")


# ---------------------------------------------------------------- CLI


def _write(tmp_path: Path, text: str, name: str = "intro.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_cli_apply_reports_created_new_version_and_unchanged_with_audit(cli, runtime, tmp_path: Path) -> None:
    path = _write(tmp_path, BASIC)
    assert cli("cadence", "apply", path).output == "created intro v1\n"
    assert cli("cadence", "apply", path).output == "intro unchanged\n"
    path = _write(tmp_path, BASIC.replace('"3d"', '"4d"'))
    assert cli("cadence", "apply", path).output == "intro: new version 2\n"
    path = _write(tmp_path, BASIC.replace('"3d"', '"4d"').replace('name = "intro"', 'name = "intro"\nstate = "paused"'))
    assert cli("cadence", "apply", path).output == "intro unchanged\nintro: state active -> paused\n"
    with runtime.session() as session:
        entries = session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(e.action, e.object_id, e.detail["version"]) for e in entries] == [
            ("cadence.apply", "intro", 1), ("cadence.apply", "intro", 2), ("cadence.apply", "intro", 2)]


def test_cli_apply_refuses_a_broken_file_and_a_missing_template(cli, tmp_path: Path) -> None:
    path = _write(tmp_path, steps_toml(EMAIL + '\nwait = "3 dias"'))
    result = cli("cadence", "apply", path, expect=1)
    assert f"{path} step 1: wait '3 dias' is not a wait; write 3d, 2 business days or 4h" in result.output
    path = _write(tmp_path, steps_toml('channel = "email"\nsubject = "Hi"\ntemplate = "email/nope"'))
    result = cli("cadence", "apply", path, expect=1)
    assert f"{path} step 1 (1-email): template 'email/nope' not found" in result.output
    assert "no cadence named" in cli("cadence", "export", "intro", expect=1).output


def test_cli_apply_prints_the_preflight(cli, runtime, tmp_path: Path) -> None:
    path = _write(tmp_path, BASIC)
    cli("cadence", "apply", path)
    with runtime.session() as session:
        _enroll(session, cadences.latest(session, "intro"), "nocompany@example.com")
    result = cli("cadence", "apply", path)
    assert "intro unchanged" in result.output
    assert "lead nocompany@example.com step 1-email: the subject uses lead.company" in result.output


def test_cli_export_round_trips_through_apply(cli, tmp_path: Path) -> None:
    cli("cadence", "apply", _write(tmp_path, BASIC))
    out = tmp_path / "exported.toml"
    assert cli("cadence", "export", "intro", "--output", str(out)).output == f"wrote intro to {out}\n"
    assert 'key = "2-task"' in out.read_text(encoding="utf-8")
    assert cli("cadence", "export", "intro").output == out.read_text(encoding="utf-8")
    assert cli("cadence", "apply", str(out)).output == "intro unchanged\n"


def test_cli_list_json_counts_enrollments_across_versions(cli, runtime, tmp_path: Path) -> None:
    assert json.loads(cli("cadence", "list", "--format", "json").output) == []
    cli("cadence", "apply", _write(tmp_path, BASIC))
    for path in EXAMPLES[:1]:
        cli("cadence", "apply", str(path))
    with runtime.session() as session:
        v1 = cadences.latest(session, "intro")
        _enroll(session, v1, "a@example.com")
        _enroll(session, v1, "b@example.com", state="replied")
    cli("cadence", "apply", _write(tmp_path, BASIC.replace('"3d"', '"4d"')))
    with runtime.session() as session:
        _enroll(session, cadences.latest(session, "intro"), "c@example.com")
    rows = json.loads(cli("cadence", "list", "--format", "json").output)
    intro = next(r for r in rows if r["name"] == "intro")
    assert intro.pop("updated_at").endswith("Z")
    assert intro == {"name": "intro", "version": 2, "state": "active", "steps": 3,
                     "enrollments": {"active": 2, "replied": 1}}
    assert [r["name"] for r in rows] == ["intro", EXAMPLES[0].stem]
    table = cli("cadence", "list").output
    assert "active=2 replied=1" in table and table.startswith("NAME")


def test_cli_pause_resume_archive(cli, runtime, tmp_path: Path) -> None:
    cli("cadence", "apply", _write(tmp_path, BASIC))
    with runtime.session() as session:
        enrollment_id = _enroll(session, cadences.latest(session, "intro"), "a@example.com").id
    assert cli("cadence", "pause", "intro").output == "cadence intro paused\n"
    assert cli("cadence", "resume", "intro").output == "cadence intro active\n"
    assert cli("cadence", "archive", "intro").output == "cadence intro archived; 1 live enrollment(s) ended\n"
    assert "no cadence named 'other'" in cli("cadence", "pause", "other", expect=1).output
    with runtime.session() as session:
        assert session.get(Enrollment, enrollment_id).state == "removed"
        actions = session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["cadence.apply", "cadence.pause", "cadence.resume", "cadence.archive"]


def test_cli_simulate_prints_local_and_utc_times(cli, tmp_path: Path) -> None:
    cli("cadence", "apply", str(REPO / "cadences/outbound_intro.toml"))
    result = cli("cadence", "simulate", "outbound_intro", "--timezone", "America/New_York", "--country", "US",
                 "--start", "2026-07-02T20:00:00Z", "--format", "json")
    rows = json.loads(result.output)
    assert [(r["key"], r["utc"]) for r in rows] == [
        ("intro_email", "2026-07-02T20:00:00Z"), ("discovery_call", "2026-07-07T20:00:00Z"),
        ("sms_nudge", "2026-07-08T20:00:00Z"), ("follow_up_email", "2026-07-13T20:00:00Z")]
    assert rows[0]["local"] == "2026-07-02T16:00:00-04:00" and rows[0]["zone"] == "America/New_York"
    table = cli("cadence", "simulate", "outbound_intro", "--timezone", "America/New_York",
                now="2026-07-02T20:00:00Z").output
    assert "Thu 2026-07-02 16:00 America/New_York" in table and "2026-07-02T20:00:00Z" in table
    # Without --country the lead has no holidays, so 3 July is a working day and the call comes a day sooner.
    assert table.splitlines()[2].split() == ["discovery_call", "voice", "manual", "Mon", "2026-07-06", "16:00",
                                             "America/New_York", "2026-07-06T20:00:00Z"]
    path = _write(tmp_path, steps_toml(EMAIL), "draft.toml")
    assert "1-email" in cli("cadence", "simulate", path, "--timezone", "Europe/Berlin").output
    assert "each lead's own time zone" in cli("cadence", "simulate", "outbound_intro", expect=1).output
    assert "--start" in cli("cadence", "simulate", "outbound_intro", "--timezone", "UTC", "--start", "monday",
                            expect=1).output


# ---------------------------------------------------------------- call scripts

SCRIPTED = """
name = "scripted"

[[steps]]
key = "call"
channel = "voice"
template = "voice/discovery_call"

[[steps.variants]]
key = "classic"
template = "voice/discovery_call"

[[steps.variants]]
key = "short"
template = "voice/short_call"
"""


def _library(tmp_path: Path, short_call: str) -> Path:
    """A copy of the shipped library with voice/short_call.txt as given."""
    library = tmp_path / "templates"
    shutil.copytree(REPO / "templates", library)
    (library / "voice" / "short_call.txt").write_text(short_call, encoding="utf-8")
    return library


SHORT_CALL = "language: en\n\n[stage greeting] Hello\nHi {{ lead.first_name | default('there') }}!\n\n" \
             "[stage close] Ask\nDemo on Tuesday?\n"


def test_apply_checks_each_variants_call_script_and_names_its_line(tmp_path: Path) -> None:
    spec = parse(SCRIPTED)
    cadences.check_templates(spec, Renderer(_library(tmp_path / "good", SHORT_CALL)))
    broken = SHORT_CALL.replace("Demo on Tuesday?\n", "")
    with pytest.raises(CadenceError) as caught:
        cadences.check_templates(spec, Renderer(_library(tmp_path / "bad", broken)))
    assert str(caught.value) == (
        "cadences/intro.toml step 1 (call) variant short: call script voice/short_call.txt:6: stage 'close' is"
        " empty; write what the rep says or asks under it, or remove the stage; see docs/calls.md")
    # An automatic voice step (a voicemail drop) speaks its template: it is not read as a script.
    drop = parse(SCRIPTED.replace('channel = "voice"', 'channel = "voice"\naction = "auto"'))
    cadences.check_templates(drop, Renderer(_library(tmp_path / "drop", broken)))


def test_cli_apply_refuses_a_call_script_with_a_mistake(cli, runtime, config_path: Path, tmp_path: Path) -> None:
    library = _library(tmp_path, SHORT_CALL.replace("[stage close]", "[objection]"))
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text.replace(f'templates_dir = "{REPO / "templates"}"', f'templates_dir = "{library}"'),
                           encoding="utf-8")
    path = _write(tmp_path, SCRIPTED)
    result = cli("cadence", "apply", path, expect=1)
    assert (f"{path} step 1 (call) variant short: call script voice/short_call.txt:6: objection without a key;"
            " write [objection KEY]") in result.output
    with runtime.session() as session:
        assert _count(session, Cadence) == 0


def test_not_interested_is_an_exit_by_default_and_can_be_left_out() -> None:
    assert parse(steps_toml(EMAIL)).exit_rules["on"] == ["reply", "meeting", "not_interested"]
    listed = parse(steps_toml(EMAIL, head='name = "intro"\n[exit]\non = ["not_interested", "reply"]'))
    assert listed.exit_rules["on"] == ["reply", "not_interested"]
