"""Call scripts: a voice template read as ordered stages and keyed objection branches.

The structure (headers and section lines) is plain text read line by line, so every
mistake is reported with its file and line before anything is rendered; the text of each
section is a Jinja fragment rendered for one lead in the same sandbox as every other
template. docs/calls.md describes the format.
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from jinja2 import Environment, TemplateSyntaxError

from sequencer.rendering import Renderer, TemplateProblem

HEADER_KEYS = ("language", "title", "goal")
SECTION_KINDS = ("stage", "objection")
# Objection keys are what reps type after --objection and what stats group by: short and stable.
KEY_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,49}")
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Z]{2})?")
_SECTION_RE = re.compile(r"\[(?P<inside>[^\]]*)\](?P<label>.*)")
_HEADER_RE = re.compile(r"(?P<key>[A-Za-z_]+)\s*:\s*(?P<value>.*)")
_COMMENT_LINE = re.compile(r"\s*\{#.*#\}\s*")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n\s*")
# Only for syntax: the renderer's sandbox compiles the whole file (filters, limits) at apply.
_SYNTAX = Environment()


class ScriptError(ValueError):
    """A call script that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Fragment:
    """Jinja source of one piece of a script and the file line it starts on."""

    source: str
    line: int


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    text: Fragment


@dataclass(frozen=True)
class Objection:
    key: str
    label: Fragment
    answers: Fragment


@dataclass(frozen=True)
class Script:
    """A parsed call script: stages in the order the call goes, objections in file order."""

    source: str
    language: str
    stages: tuple[Stage, ...]
    objections: tuple[Objection, ...]
    title: Fragment | None = None
    goal: Fragment | None = None

    @property
    def objection_keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in self.objections)


def parse_script(text: str, source: str) -> Script:
    """Parse a script's text; `source` names the file in every error (`voice/discovery_call.txt:12: ...`)."""
    headers: dict[str, Fragment] = {}
    sections: list[tuple[str, str, str, int, list[str]]] = []  # kind, key, label, line, body lines
    for number, line in enumerate(text.splitlines(), start=1):
        section = _SECTION_RE.fullmatch(line.rstrip())
        if section and not line.startswith(" "):
            kind, key = _section_head(section["inside"], source, number)
            sections.append((kind, key, section["label"].strip(), number, []))
        elif sections:
            sections[-1][4].append(line)
        elif line.strip() and not _COMMENT_LINE.fullmatch(line):
            key, value = _header(line, source, number, headers)
            headers[key] = Fragment(value, number)
    if not sections:
        raise ScriptError(f"{source}:1: the script has no stage; add a line such as"
                          " [stage greeting] Greeting and introduction, with what to say under it")
    language = headers.get("language")
    if language is None:
        raise ScriptError(f"{source}:1: the script has no language; add language: en (or ru, ...) at the top")
    if not _LANGUAGE_RE.fullmatch(language.source.strip()):
        raise ScriptError(f"{source}:{language.line}: language {language.source.strip()!r} is not a language code;"
                          " write a two-letter code such as en or ru")
    stages: list[Stage] = []
    objections: list[Objection] = []
    taken: dict[tuple[str, str], int] = {}
    for kind, key, label, number, lines in sections:
        if (kind, key) in taken:
            raise ScriptError(f"{source}:{number}: {kind} key {key!r} is already used on line {taken[kind, key]};"
                              f" give each {kind} its own key")
        taken[kind, key] = number
        body = _fragment(lines, number + 1, source)
        if kind == "stage":
            if body is None:
                raise ScriptError(f"{source}:{number}: stage {key!r} is empty; write what the rep says or asks"
                                  " under it, or remove the stage")
            stages.append(Stage(key, label or key.replace("_", " ").capitalize(), body))
            continue
        if not label:
            raise ScriptError(f"{source}:{number}: objection {key!r} has no label; write what the lead says after"
                              f' the brackets: [objection {key}] "It is too expensive."')
        if body is None:
            raise ScriptError(f"{source}:{number}: objection {key!r} has no suggested answer; write one or more"
                              " paragraphs under it")
        objections.append(Objection(key, _checked(label, number, source), body))
    if not stages:
        raise ScriptError(f"{source}:{sections[0][3]}: the script has objections but no stage; add a"
                          " [stage KEY] section for each part of the call")
    return Script(source=source, language=language.source.strip(), stages=tuple(stages),
                  objections=tuple(objections), title=_header_fragment(headers.get("title"), source),
                  goal=_header_fragment(headers.get("goal"), source))


def _section_head(inside: str, source: str, number: int) -> tuple[str, str]:
    kind, _, key = inside.strip().partition(" ")
    key = key.strip()
    if kind not in SECTION_KINDS:
        raise ScriptError(f"{source}:{number}: unknown section [{inside}]; a section line is [stage KEY] or"
                          " [objection KEY] followed by its label (a line of text cannot start with '[')")
    if not key:
        raise ScriptError(f"{source}:{number}: {kind} without a key; write [{kind} KEY], such as"
                          f" [{kind} {'too_expensive' if kind == 'objection' else 'greeting'}]")
    if not KEY_RE.fullmatch(key):
        raise ScriptError(f"{source}:{number}: {kind} key {key!r} is not a key; use lowercase letters, digits and _"
                          " (up to 50 characters), such as too_expensive")
    return kind, key


def _header(line: str, source: str, number: int, seen: Mapping[str, Fragment]) -> tuple[str, str]:
    match = _HEADER_RE.fullmatch(line.strip())
    if match is None:
        raise ScriptError(f"{source}:{number}: text before the first section; put it under a [stage KEY] line or"
                          f" write it as a header ({', '.join(f'{k}: ...' for k in HEADER_KEYS)})")
    key = match["key"].lower()
    if key not in HEADER_KEYS:
        raise ScriptError(f"{source}:{number}: unknown header {match['key']!r}; the headers are"
                          f" {', '.join(HEADER_KEYS)}")
    if key in seen:
        raise ScriptError(f"{source}:{number}: header {key!r} is already set on line {seen[key].line}; keep one")
    if not match["value"].strip():
        raise ScriptError(f"{source}:{number}: header {key!r} is empty; write its value or remove the line")
    return key, match["value"].strip()


def _header_fragment(fragment: Fragment | None, source: str) -> Fragment | None:
    return None if fragment is None else _checked(fragment.source, fragment.line, source)


def _fragment(lines: list[str], first_line: int, source: str) -> Fragment | None:
    """Return a section's body without its surrounding blank lines, or None when it says nothing."""
    start = next((i for i, line in enumerate(lines) if line.strip()), None)
    if start is None or all(_COMMENT_LINE.fullmatch(line) or not line.strip() for line in lines):
        return None
    end = max(i for i, line in enumerate(lines) if line.strip()) + 1
    return _checked("\n".join(lines[start:end]), first_line + start, source)


def _checked(text: str, line: int, source: str) -> Fragment:
    try:
        _SYNTAX.parse(text)
    except TemplateSyntaxError as exc:
        where = line + (exc.lineno or 1) - 1
        raise ScriptError(f"{source}:{where}: {exc.message}; each section's text must be complete on its own"
                          " (an {% if %} or {% for %} ends inside the section it starts in)") from None
    return Fragment(text, line)


# ---------------------------------------------------------------- files and versions


def is_call_script(channel: str, action: str, template: str | None) -> bool:
    """Tell whether a step's template is a call script: a rep's call from the library.

    An automatic voice step's template is the message a voicemail drop speaks, not a script.
    """
    return channel == "voice" and action == "manual" and template is not None


def script_path(template_dir: Path, template: str) -> Path:
    """Return the file of a step's `template = "voice/NAME"` (the .txt is implied, as for other templates)."""
    return Path(template_dir) / (template if template.endswith(".txt") else f"{template}.txt")


def load_script(template_dir: Path, template: str) -> Script:
    """Read and parse the script a step names; ScriptError when it is missing or does not parse."""
    path = script_path(template_dir, template)
    name = path.relative_to(template_dir).as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(f"{name}: call script not found; add it under {template_dir}") from None
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    return parse_script(text, name)


def script_version(template_dir: Path, template: str) -> str | None:
    """Return the script's version: the first 8 hex digits of the sha256 of its file, None when there is none.

    A version follows the text itself, so stats tell an edited script from its earlier wording
    whichever cadence uses it.
    """
    path = script_path(template_dir, template)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _digest(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _digest(path: str, _mtime_ns: int, _size: int) -> str:
    # Keyed by mtime and size: the engine asks for every call task it opens, the file rarely changes.
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


def script_key(template: str) -> str:
    """Return the name stats know a script by: the step's template without .txt (`voice/discovery_call`)."""
    return template[:-4] if template.endswith(".txt") else template


# ---------------------------------------------------------------- rendering


def render_script(script: Script, renderer: Renderer, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render every piece of a script for one lead; TemplateProblem names the file and line of the piece."""
    def render(fragment: Fragment | None) -> str | None:
        if fragment is None:
            return None
        try:
            return renderer.render_text(template=None, body=fragment.source, context=context)
        except TemplateProblem as exc:
            reason = exc.reason.replace("the inline body", f"{script.source}:{fragment.line}", 1)
            raise TemplateProblem(reason, variable=exc.variable) from exc

    return {
        "language": script.language,
        "title": render(script.title),
        "goal": render(script.goal),
        "stages": [{"key": s.key, "label": s.label, "text": render(s.text)} for s in script.stages],
        "objections": [
            {"key": o.key, "label": render(o.label),
             "answers": [p.strip() for p in _PARAGRAPHS.split(render(o.answers) or "") if p.strip()]}
            for o in script.objections
        ],
    }


# The few words a printed script adds around the author's text, in the script's language.
_WORDS = {"en": ("Goal", "OBJECTIONS"), "ru": ("Цель", "ВОЗРАЖЕНИЯ")}


def script_as_text(rendered: Mapping[str, Any]) -> str:
    """Return a rendered script as the plain text a task shows: title, goal, stages, then objections."""
    goal_word, objections_word = _WORDS.get(rendered["language"].split("-")[0], _WORDS["en"])
    lines: list[str] = []
    if rendered.get("title"):
        lines += [rendered["title"], ""]
    if rendered.get("goal"):
        lines += [f"{goal_word}: {rendered['goal']}", ""]
    for number, stage in enumerate(rendered["stages"], start=1):
        lines += [f"{number}. {stage['label'].upper()} [{stage['key']}]", stage["text"], ""]
    if rendered["objections"]:
        lines += [objections_word, ""]
    for objection in rendered["objections"]:
        lines.append(f"[{objection['key']}] {objection['label']}")
        lines += [f"  - {answer}" for answer in objection["answers"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
