"""Call scripts: the format's structure and its mistakes by line, rendering per lead in English and Russian."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sequencer.rendering import Renderer, TemplateProblem, build_context
from sequencer.scripts import (ScriptError, is_call_script, load_script, parse_script, render_script, script_as_text,
                               script_key, script_version)

LIBRARY = Path(__file__).resolve().parents[1] / "templates"

SCRIPT_EN = """\
{# a comment line is fine anywhere #}
language: en
title: Call {{ lead.first_name | default('the lead') }} at {{ lead.company }}
goal: Book a demo.

[stage greeting] Greeting and introduction
Hi {{ lead.first_name | default('there') }}, this is {{ owner.name }}. Is this a good time?

[stage discovery]
{% if lead.title is defined %}
As {{ lead.title }}, how do you follow up today?
{% else %}
How do you follow up today?
{% endif %}

[stage close] Call to action
Would Tuesday work?

[objection too_expensive] "It costs too much for {{ lead.company }}."
Compared with what a lost lead costs?

Start with a pilot.
"""

SCRIPT_RU = """\
language: ru
title: Звонок: {{ lead.company }}

[stage greeting] Приветствие
Здравствуйте{% if lead.first_name is defined %}, {{ lead.first_name }}{% endif %}! Это {{ owner.name }}.

[stage close] Договорённость
Удобно во вторник?

[objection send_email] «Пришлите на почту»
С удовольствием. Что для вас важнее?
"""


def context(**lead: object) -> dict:
    return build_context(lead={"first_name": "Anna", "company": "Romashka", **lead},
                         owner={"name": "Boris Petrov"}, sender=None)


def test_a_script_has_ordered_stages_and_keyed_objections_with_their_lines() -> None:
    script = parse_script(SCRIPT_EN, "voice/call.txt")
    assert script.language == "en"
    assert [(s.key, s.label, s.text.line) for s in script.stages] == [
        ("greeting", "Greeting and introduction", 7), ("discovery", "Discovery", 10), ("close", "Call to action", 17)]
    assert script.objection_keys == ("too_expensive",)
    assert (script.objections[0].label.line, script.objections[0].answers.line) == (19, 20)


def test_a_script_renders_for_the_lead_in_english() -> None:
    rendered = render_script(parse_script(SCRIPT_EN, "voice/call.txt"), Renderer(LIBRARY),
                             context(title="Head of Sales"))
    assert rendered["title"] == "Call Anna at Romashka"
    assert [s["text"] for s in rendered["stages"]] == [
        "Hi Anna, this is Boris Petrov. Is this a good time?", "As Head of Sales, how do you follow up today?",
        "Would Tuesday work?"]
    assert rendered["objections"] == [{"key": "too_expensive", "label": '"It costs too much for Romashka."',
                                       "answers": ["Compared with what a lost lead costs?", "Start with a pilot."]}]
    # `|default` and `is defined` work as in any template: no name, no title.
    bare = render_script(parse_script(SCRIPT_EN, "voice/call.txt"), Renderer(LIBRARY), context(first_name=""))
    assert bare["stages"][0]["text"].startswith("Hi there,")
    assert bare["stages"][1]["text"] == "How do you follow up today?"


def test_a_script_renders_for_the_lead_in_russian() -> None:
    script = parse_script(SCRIPT_RU, "voice/call_ru.txt")
    rendered = render_script(script, Renderer(LIBRARY), context())
    assert rendered["language"] == "ru"
    assert [s["text"] for s in rendered["stages"]] == ["Здравствуйте, Anna! Это Boris Petrov.", "Удобно во вторник?"]
    text = script_as_text(rendered)
    assert text.splitlines()[:3] == ["Звонок: Romashka", "", "1. ПРИВЕТСТВИЕ [greeting]"]
    assert "ВОЗРАЖЕНИЯ\n\n[send_email] «Пришлите на почту»\n  - С удовольствием. Что для вас важнее?" in text


def test_a_missing_field_names_the_file_and_line_of_the_piece() -> None:
    script = parse_script(SCRIPT_EN.replace("Would Tuesday work?", "Would {{ lead.weekday }} work?"), "voice/call.txt")
    with pytest.raises(TemplateProblem) as caught:
        render_script(script, Renderer(LIBRARY), context())
    assert caught.value.reason.startswith("voice/call.txt:17 uses lead.weekday, which is empty or missing")


@pytest.mark.parametrize(("change", "expected"), [
    (("[stage close] Call to action", "[step close] Call to action"),
     "voice/call.txt:16: unknown section [step close]; a section line is [stage KEY] or [objection KEY]"),
    (("[objection too_expensive]", "[objection]"), "voice/call.txt:19: objection without a key; write [objection KEY]"),
    (("[stage close]", "[stage greeting]"),
     "voice/call.txt:16: stage key 'greeting' is already used on line 6; give each stage its own key"),
    (("Would Tuesday work?\n", "{# nothing yet #}\n"),
     "voice/call.txt:16: stage 'close' is empty; write what the rep says"),
    ((' "It costs too much for {{ lead.company }}."', ""), "voice/call.txt:19: objection 'too_expensive' has no label"),
    (("Compared with what a lost lead costs?\n\nStart with a pilot.\n", ""),
     "voice/call.txt:19: objection 'too_expensive' has no suggested answer"),
    (("language: en\n", ""), "voice/call.txt:1: the script has no language; add language: en"),
    (("language: en", "language: English"), "voice/call.txt:2: language 'English' is not a language code"),
    (("goal: Book a demo.", "Book a demo."), "voice/call.txt:4: text before the first section"),
    (("goal: Book a demo.", "audience: VPs"), "voice/call.txt:4: unknown header 'audience'; the headers are"),
    (("[stage close]", "[stage Close-It]"), "voice/call.txt:16: stage key 'Close-It' is not a key"),
    # A block may not run from one section into the next: each section renders on its own.
    (("{% else %}", "[stage other]"), "voice/call.txt:11: Unexpected end of template"),
    (("Hi {{ lead.first_name", "Hi {{ lead.first_name }"), "voice/call.txt:7: unexpected '}'"),
])
def test_each_mistake_names_the_file_and_line(change: tuple[str, str], expected: str) -> None:
    text = SCRIPT_EN.replace(*change)
    assert text != SCRIPT_EN
    with pytest.raises(ScriptError) as caught:
        parse_script(text, "voice/call.txt")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_script_needs_a_stage() -> None:
    with pytest.raises(ScriptError, match=r"^voice/x.txt:1: the script has no stage"):
        parse_script("language: en\n", "voice/x.txt")
    # A flat script of before: its first line of text is where the format starts to differ.
    with pytest.raises(ScriptError, match=r"^voice/x.txt:2: text before the first section; put it under a \[stage"):
        parse_script("language: en\nJust call them.\n", "voice/x.txt")
    with pytest.raises(ScriptError, match=r"^voice/x.txt:2: the script has objections but no stage"):
        parse_script("language: en\n[objection no_time] Busy\nWhen is better?\n", "voice/x.txt")


@pytest.mark.parametrize(("name", "language", "greeting", "objection"), [
    ("voice/discovery_call", "en", '"Hi Anna, this is Boris Petrov.', '"How much does it cost?"'),
    ("voice/discovery_call_ru", "ru", "«Здравствуйте, Anna! Это Boris Petrov.", "«Сколько это стоит?»"),
])
def test_the_shipped_scripts_parse_and_render(name: str, language: str, greeting: str, objection: str) -> None:
    renderer = Renderer(LIBRARY)
    renderer.check(subject=None, template=name, body=None)  # the whole file compiles as any template does
    script = load_script(LIBRARY, name)
    assert script.language == language
    assert [s.key for s in script.stages] == ["greeting", "discovery", "presentation", "objections", "close"]
    assert set(script.objection_keys) >= {"too_expensive", "send_email", "have_supplier", "no_time", "think_about_it"}
    rendered = render_script(script, renderer, context(last_name="Ivanova", title="Head of Sales"))
    assert rendered["title"].endswith("Anna Ivanova, Romashka (Head of Sales)")
    assert rendered["stages"][0]["text"].startswith(greeting)
    expensive = next(o for o in rendered["objections"] if o["key"] == "too_expensive")
    assert expensive["label"] == objection and len(expensive["answers"]) == 2
    assert all(o["answers"] and "{" not in " ".join(o["answers"]) for o in rendered["objections"])
    untitled = render_script(script, renderer, context())
    assert "(" not in untitled["title"] and "Head of Sales" not in script_as_text(untitled)


def test_the_version_follows_the_file_and_the_key_is_the_template(tmp_path: Path) -> None:
    (tmp_path / "voice").mkdir()
    path = tmp_path / "voice" / "call.txt"
    path.write_text(SCRIPT_EN, encoding="utf-8")
    first = script_version(tmp_path, "voice/call")
    assert first is not None and len(first) == 8 and first == script_version(tmp_path, "voice/call.txt")
    path.write_text(SCRIPT_EN.replace("Tuesday", "Thursday"), encoding="utf-8")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert script_version(tmp_path, "voice/call") not in (None, first)
    assert script_version(tmp_path, "voice/none") is None
    assert (script_key("voice/call.txt"), script_key("voice/call")) == ("voice/call", "voice/call")
    with pytest.raises(ScriptError, match=r"^voice/none.txt: call script not found"):
        load_script(tmp_path, "voice/none")


def test_only_a_manual_voice_step_with_a_template_is_a_script() -> None:
    assert is_call_script("voice", "manual", "voice/discovery_call")
    # An automatic voice step is a voicemail drop: its template is the message, not a script.
    assert not is_call_script("voice", "auto", "voice/drop")
    assert not is_call_script("voice", "manual", None)
    assert not is_call_script("task", "manual", "voice/discovery_call")
