"""`calls stats` on 200 seeded calls whose answers are known, its filters, and the [tasks] keys it reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.calls import call_task_script
from sequencer.config import ConfigError, load_settings
from sequencer.models import Call, CallObjection, Step, User
from sequencer.rendering import Renderer, build_context
from sequencer.scripts import script_version
from sequencer.testing.world import utc

RITA, OMAR = "rita@acme.example", "omar@acme.example"
EN, RU = "voice/discovery_call", "voice/discovery_call_ru"
EARLY, LATE = "2026-03-02T15:00:00Z", "2026-03-10T15:00:00Z"
# (script, version, outcome, objections, calls, rep, cadence, logged at)
SEEDED = [
    (EN, "aaaa1111", "meeting_booked", ("too_expensive",), 10, RITA, "calls_a", EARLY),
    (EN, "aaaa1111", "connected", ("too_expensive", "no_time"), 30, RITA, "calls_a", EARLY),
    (EN, "aaaa1111", "no_answer", (), 60, OMAR, "calls_a", EARLY),
    (EN, "bbbb2222", "meeting_booked", ("no_time",), 20, OMAR, "calls_b", LATE),
    (EN, "bbbb2222", "not_interested", ("too_expensive",), 20, RITA, "calls_b", LATE),
    (EN, "bbbb2222", "busy", (), 10, RITA, "calls_b", LATE),
    (RU, "cccc3333", "call_back_later", ("send_email",), 25, OMAR, "calls_b", LATE),
    (RU, "cccc3333", "left_voicemail", (), 25, OMAR, "calls_b", LATE),
]


def rate(n: int, of: int) -> dict:
    return {"n": n, "of": of, "rate": round(n / of, 4)}


@pytest.fixture
def seeded(cli, runtime) -> None:
    for email in (RITA, OMAR):
        cli("users", "add", email, "--role", "rep")
    with runtime.session() as s:
        reps = dict(s.execute(sa.select(User.email, User.id)).all())
        for script, version, outcome, objections, count, rep, cadence, at in SEEDED:
            for _ in range(count):
                call = Call(script_key=script, script_version=version, outcome=outcome, rep_id=reps[rep],
                            cadence_name=cadence, logged_at=utc(at))
                s.add(call)
                s.flush()
                s.add_all(CallObjection(call_id=call.id, key=key) for key in objections)
    assert sum(row[4] for row in SEEDED) == 200


def stats(cli, *args: str) -> dict:
    return json.loads(cli("calls", "stats", *args, "--format", "json").output)


def test_stats_per_script_version_and_per_objection(cli, seeded) -> None:
    found = stats(cli)
    # connected, not_interested, call_back_later and meeting_booked are connects by default.
    assert (found["calls"], found["connects"], found["meetings"]) == (200, rate(105, 200), rate(30, 200))
    assert found["scripts"] == [
        {"script": EN, "version": "aaaa1111", "calls": 100, "connects": rate(40, 100), "meetings": rate(10, 100)},
        {"script": EN, "version": "bbbb2222", "calls": 50, "connects": rate(40, 50), "meetings": rate(20, 50)},
        {"script": RU, "version": "cccc3333", "calls": 50, "connects": rate(25, 50), "meetings": rate(0, 50)},
    ]
    assert found["objections"] == [
        {"objection": "too_expensive", "raised": 60, "share_of_calls": rate(60, 200), "still_met": rate(10, 60)},
        {"objection": "no_time", "raised": 50, "share_of_calls": rate(50, 200), "still_met": rate(20, 50)},
        {"objection": "send_email", "raised": 25, "share_of_calls": rate(25, 200), "still_met": rate(0, 25)},
    ]
    assert found["objections"][0]["still_met"]["rate"] == 0.1667


def test_stats_filter_by_cadence_rep_and_day(cli, seeded) -> None:
    by_cadence = stats(cli, "--cadence", "calls_b")
    assert (by_cadence["calls"], by_cadence["meetings"]) == (100, rate(20, 100))
    assert [s["version"] for s in by_cadence["scripts"]] == ["bbbb2222", "cccc3333"]
    assert by_cadence["filters"] == {"cadence": "calls_b", "rep": None, "since": None}

    omar = stats(cli, "--rep", OMAR)
    assert (omar["calls"], omar["connects"], omar["meetings"]) == (130, rate(45, 130), rate(20, 130))
    assert [(o["objection"], o["raised"], o["still_met"]) for o in omar["objections"]] == [
        ("send_email", 25, rate(0, 25)), ("no_time", 20, rate(20, 20))]

    since = stats(cli, "--since", "2026-03-05")
    assert (since["calls"], since["filters"]["since"]) == (100, "2026-03-05T00:00:00Z")
    assert stats(cli, "--since", "2026-03-11")["scripts"] == []
    assert "--since 'last week' is not a date" in cli("calls", "stats", "--since", "last week", expect=1).output
    assert "no user nobody@acme.example" in cli("calls", "stats", "--rep", "nobody@acme.example", expect=1).output


def test_stats_text_puts_the_count_beside_every_percentage(cli, seeded) -> None:
    lines = cli("calls", "stats").output.splitlines()
    assert lines[0] == "200 calls: 105/200 (52.5%) connected, 30/200 (15.0%) meetings"
    assert lines[2].split() == ["SCRIPT", "VERSION", "CALLS", "CONNECTS", "MEETINGS"]
    assert lines[3].split() == [EN, "aaaa1111", "100", "40/100", "(40.0%)", "10/100", "(10.0%)"]
    assert lines[7].split() == ["OBJECTION", "RAISED", "STILL", "MET"]
    assert lines[8].split() == ["too_expensive", "60/200", "(30.0%)", "10/60", "(16.7%)"]


def test_what_counts_as_a_connect_is_the_configured_list(cli, seeded, config_path: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text + '\n[tasks]\nconnected_outcomes = ["connected", "meeting_booked"]\n',
                           encoding="utf-8")
    assert stats(cli)["connects"] == rate(60, 200)


def test_connected_outcomes_must_be_outcomes(config_path: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(text + '\n[tasks]\noutcomes = ["connected", "no_answer"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path)
    assert ("[tasks] connected_outcomes lists 'not_interested', 'call_back_later', 'meeting_booked', which [tasks]"
            " outcomes does not; add it to outcomes or remove it from connected_outcomes") in str(caught.value)


def test_the_default_outcomes_include_the_calls_that_did_not_reach_the_lead(settings) -> None:
    assert {"busy", "gatekeeper", "left_voicemail", "no_answer"} <= set(settings.tasks.outcomes)
    assert settings.tasks.connected_outcomes == ["connected", "not_interested", "call_back_later", "meeting_booked"]


def test_the_bench_runs_and_its_stats_count_every_seeded_call() -> None:
    """bench/calls_stats.py at its smoke size on SQLite: correctness only, the timing target is for 100,000."""
    bench = Path(__file__).resolve().parents[1] / "bench" / "calls_stats.py"
    proc = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.splitlines()[-1])
    assert (figures["calls"], figures["counted_calls"], figures["cli_counted_calls"]) == (2000, 2000, 2000)
    assert (figures["scripts"], figures["objections"]) == (6, 8)


def test_a_call_task_carries_its_script_as_text_with_its_key_and_version() -> None:
    library = Path(__file__).resolve().parents[1] / "templates"
    context = build_context(lead={"first_name": "Anna", "company": "Romashka"}, owner={"name": "Boris"}, sender=None)
    step = Step(key="call", channel="voice", action="manual", template=EN,
                variants=[{"key": "ru", "weight": 1, "template": RU}, {"key": "none", "weight": 1, "body": "Call."}])
    plain = call_task_script(Renderer(library), library, step, None, context)
    assert (plain.script_key, plain.script_version) == (EN, script_version(library, EN))
    assert plain.text.startswith("Discovery call with Anna, Romashka\n\nGoal: ")
    ru = call_task_script(Renderer(library), library, step, step.variants[0], context)
    assert (ru.script_key, ru.text.splitlines()[0]) == (RU, "Звонок-знакомство: Anna, Romashka")
    # Inline instructions and an automatic voice step (a voicemail drop) are not scripts.
    assert call_task_script(Renderer(library), library, step, step.variants[1], context) is None
    step.action = "auto"
    assert call_task_script(Renderer(library), library, step, None, context) is None
