"""Segment counts per SMS step in `cadence apply` and `cadence simulate`, and the max_segments refusal."""
from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from sequencer.models import Cadence
from sequencer.testing.world import ALWAYS_OPEN, apply

REP = "rita@acme.example"


def texts(body: str, name: str = "texts") -> str:
    return f'name = "{name}"\n' + ALWAYS_OPEN + f"""
[[steps]]
key = "hello"
channel = "email"
subject = "Hello"
body = "Hi"

[[steps]]
key = "nudge"
channel = "sms"
wait = "1d"
body = "{body}"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "texts.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_without_leads_each_variable_is_its_default_or_ten_characters(cli, tmp_path: Path) -> None:
    # 151 GSM-7 characters besides the variable: its default ("there", 5) keeps the text in one
    # segment (156 <= 160); a variable without one counts 10 and takes it to two (161).
    filler = "a" * 146
    one = cli("cadence", "apply", write(tmp_path, texts(f"Hi {{{{ lead.first_name | default('there') }}}}! {filler}"))
              ).output
    assert "step nudge (sms): 1 segment (GSM-7) at most, rendered for each variable at its default or 10 characters" \
        in one
    two = cli("cadence", "apply", write(tmp_path, texts(f"Hi {{{{ lead.first_name }}}}! {filler}"))).output
    assert "step nudge (sms): 2 segments (GSM-7) at most" in two
    # Cyrillic makes the whole text UCS-2: 70 units in one segment, 67 per segment after that.
    cyrillic = cli("cadence", "apply", write(tmp_path, texts("Привет! " + "ж" * 63))).output
    assert "step nudge (sms): 2 segments (UCS-2) at most" in cyrillic
    # An emoji is two UTF-16 units.
    emoji = cli("cadence", "apply", write(tmp_path, texts("Hi " + "🙂" * 33 + "!"))).output
    assert "step nudge (sms): 1 segment (UCS-2) at most" in emoji
    emoji = cli("cadence", "apply", write(tmp_path, texts("Hi " + "🙂" * 34))).output
    assert "step nudge (sms): 2 segments (UCS-2) at most" in emoji
    # The email step is not counted.
    assert "step hello" not in one


def test_the_largest_count_over_enrolled_leads_is_shown(cli, tmp_path: Path) -> None:
    cli("cadence", "apply", write(tmp_path, texts("Hi {{ lead.company }}")))
    leads = tmp_path / "leads.csv"
    leads.write_text("phone,first_name,company\n+14155552671,Ann,Acme\n"
                     f"+14155552672,Bo,{'Z' * 160}\n", encoding="utf-8")
    cli("leads", "import", str(leads))
    cli("enroll", "--cadence", "texts", "+14155552671", "+14155552672")
    result = cli("cadence", "apply", write(tmp_path, texts("Hi {{ lead.company }}!"))).output
    assert "step nudge (sms): 1 segment (GSM-7) at most, rendered for 2 enrolled lead(s)" not in result
    assert "step nudge (sms): 1 segment (GSM-7) at most" not in result
    assert "step nudge (sms): 2 segments (GSM-7) at most, rendered for 2 enrolled lead(s)" in result

    rows = json.loads(cli("cadence", "simulate", "texts", "--timezone", "UTC", "--format", "json").output)
    assert [(r["key"], r["cost"]) for r in rows] == [("hello", None), ("nudge", "2 segments (GSM-7)")]
    table = cli("cadence", "simulate", "texts", "--timezone", "UTC").output
    assert table.splitlines()[0].split()[-1] == "COST" and table.splitlines()[-1].endswith("2 segments (GSM-7)")


def test_a_template_over_max_segments_is_refused_and_not_stored(cli, runtime, tmp_path: Path) -> None:
    # Five GSM-7 segments: 4 * 153 < 700; max_segments defaults to 4.
    result = cli("cadence", "apply", write(tmp_path, texts("x" * 700)), expect=1).output
    assert "step nudge: the rendered text takes 5 segments (700 septets, GSM-7); [plugins.sms] max_segments is 4" \
        in result
    assert "rendered for each variable at its default or 10 characters" in result
    with runtime.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Cadence)) == 0
