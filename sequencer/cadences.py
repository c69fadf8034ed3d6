"""Cadences as code: parse a TOML file, store it as a version, export it back, simulate it.

A cadence file is validated completely before anything touches the database; every
error names the file, the step (by number and key) and the fix. Applying stores the
normalized definition and its hash, so an unchanged file changes nothing and an edited
one becomes a new version while running enrollments keep the version they started on.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import holidays
from jinja2 import ChainableUndefined
import sqlalchemy as sa
import sqlalchemy.orm as so
import tomli_w

from sequencer.calendar import WEEKDAYS, LocalCalendar, NoOpening, Wait, Window
from sequencer.channels import Channel, Cost
from sequencer.exits import end_enrollments
from sequencer.models import LIVE_STATES, Cadence, Enrollment, Lead, Step
from sequencer.rendering import Renderer, TemplateProblem
from sequencer.scripts import ScriptError, is_call_script, load_script, render_script

if TYPE_CHECKING:
    from sequencer.plugins import Plugins

__all__ = [
    "CHANNELS",
    "STATES",
    "ApplyResult",
    "CadenceError",
    "CadenceSpec",
    "CadenceSummary",
    "PreflightProblem",
    "SimulatedStep",
    "StepCost",
    "StepSpec",
    "VariantSpec",
    "apply_cadence",
    "calendar_for_lead",
    "definition_hash",
    "export_cadence",
    "latest",
    "list_cadences",
    "parse_cadence",
    "preflight",
    "set_state",
    "simulate",
    "spec_from_cadence",
    "step_contents",
    "step_costs",
]

STATES = ("draft", "active", "paused", "archived")
CHANNELS = ("email", "sms", "voice", "task")
ACTIONS = ("auto", "manual")
# A rep's not_interested outcome is an event like a reply: the cadences that list it end there.
EXIT_EVENTS = ("reply", "meeting", "not_interested")
EXIT_SCOPES = ("lead", "account")
DEFAULT_ACTION = {"email": "auto", "sms": "auto", "voice": "manual", "task": "manual"}
DEFAULT_SCHEDULE: dict[str, Any] = {
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "start": "09:00",
    "end": "17:00",
    "timezone": "lead",
    "holidays": "lead",
    "skip_dates": [],
}

_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_TOP_KEYS = ("name", "state", "description", "schedule", "exit", "steps")
_SCHEDULE_KEYS = tuple(DEFAULT_SCHEDULE)
_EXIT_KEYS = ("on", "scope")
_STEP_KEYS = ("key", "channel", "action", "wait", "subject", "template", "body", "thread", "variants")
_VARIANT_KEYS = ("key", "weight", "subject", "template", "body")
_WAIT_FIX = "write 3d, 2 business days or 4h"


class CadenceError(ValueError):
    """A cadence file or command that cannot be used; the message names the file, the step and the fix."""


@dataclass(frozen=True)
class VariantSpec:
    """One A/B alternative of a step: what it sets replaces the step's subject or content."""

    key: str
    weight: int = 1
    subject: str | None = None
    template: str | None = None
    body: str | None = None


@dataclass(frozen=True)
class StepSpec:
    key: str
    channel: str
    action: str
    wait: str = "0d"
    subject: str | None = None
    template: str | None = None
    body: str | None = None
    thread: bool = False
    variants: tuple[VariantSpec, ...] = ()


@dataclass(frozen=True)
class CadenceSpec:
    """A validated, normalized cadence definition.

    `state` is None when the file does not say: a new cadence then starts active and an
    existing one keeps its state, so re-applying a file does not undo `cadence pause`.
    """

    name: str
    steps: tuple[StepSpec, ...]
    state: str | None = None
    description: str = ""
    schedule: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    exit_rules: dict[str, Any] = field(default_factory=lambda: {"on": list(EXIT_EVENTS), "scope": "lead"})
    source: str = "<cadence>"


@dataclass
class PreflightProblem:
    lead_id: int
    lead_email: str | None
    step_key: str
    reason: str


@dataclass
class ApplyResult:
    cadence: Cadence
    created: bool
    new_version: bool
    unchanged: bool
    preflight: list[PreflightProblem] = field(default_factory=list)
    previous_state: str | None = None
    costs: list[StepCost] = field(default_factory=list)

    @property
    def state_changed(self) -> bool:
        return self.previous_state is not None and self.previous_state != self.cadence.state


@dataclass(frozen=True)
class StepCost:
    """A counted step's largest cost (SMS segments), and what it was rendered for."""

    step_key: str
    channel: str
    cost: Cost
    # "3 enrolled lead(s)", or "placeholders": each variable at its default or 10 characters.
    rendered_for: str
    # Why the channel refuses the largest text (ValueError of Channel.check_rendered), or None.
    refused: str | None


@dataclass
class CadenceSummary:
    name: str
    version: int
    state: str
    steps: int
    enrollments: dict[str, int]
    updated_at: dt.datetime


@dataclass(frozen=True)
class SimulatedStep:
    key: str
    channel: str
    action: str
    due_local: dt.datetime
    due_utc: dt.datetime


# ---------------------------------------------------------------- parsing


def parse_cadence(text: str, source: str) -> CadenceSpec:
    """Parse and validate a cadence file's text; `source` names the file in every error."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CadenceError(f"{source}: not valid TOML ({exc}); fix the syntax at that line") from None
    _reject_unknown(raw, _TOP_KEYS, source, "")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CadenceError(f'{source}: the cadence has no name; add name = "outbound_intro" at the top')
    name = name.strip()
    if len(name) > 200:
        raise CadenceError(f"{source}: name is {len(name)} characters long; keep it to 200")
    state = raw.get("state")
    if state is not None and state not in STATES:
        raise CadenceError(f"{source}: state {state!r} is unknown; write one of {', '.join(STATES)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise CadenceError(f'{source}: description must be text; write description = "..."')
    schedule = _parse_schedule(raw.get("schedule", {}), source)
    exit_rules = _parse_exit(raw.get("exit", {}), source)
    steps = _parse_steps(raw.get("steps"), source)
    return CadenceSpec(name=name, state=state, description=description.strip(), schedule=schedule,
                       exit_rules=exit_rules, steps=steps, source=source)


def _reject_unknown(table: Mapping[str, Any], allowed: tuple[str, ...], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            place = f" in {where}" if where else ""
            raise CadenceError(f"{source}: unknown key {key!r}{place}; the keys allowed there are {', '.join(allowed)}")


def _parse_schedule(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CadenceError(f"{source}: schedule must be a table; write it as [schedule]")
    _reject_unknown(raw, _SCHEDULE_KEYS, source, "[schedule]")
    merged = {**DEFAULT_SCHEDULE, **raw}

    days = merged["days"]
    if not isinstance(days, list) or not days or not all(isinstance(d, str) for d in days):
        raise CadenceError(f'{source}: schedule days must be a list of day names; write days = ["mon", "tue", "wed"]')
    names = {d.strip().lower() for d in days}
    for day in names:
        if day not in WEEKDAYS:
            raise CadenceError(f"{source}: schedule day {day!r} is not a day; use {', '.join(WEEKDAYS)}")
    for key in ("start", "end"):
        if not isinstance(merged[key], str):
            raise CadenceError(f'{source}: schedule {key} must be a quoted "HH:MM" time; write {key} = "09:00"')
    try:
        window = Window.parse(sorted(names, key=WEEKDAYS.index), merged["start"], merged["end"])
    except ValueError as exc:
        raise CadenceError(f"{source}: schedule: {exc}") from None
    end = "24:00" if window.end == dt.time(0) else f"{window.end:%H:%M}"

    zone = merged["timezone"]
    if not isinstance(zone, str) or not zone.strip():
        raise CadenceError(f'{source}: schedule timezone must be "lead" or an IANA name such as "Europe/Berlin"')
    zone = zone.strip()
    if zone != "lead":
        try:
            ZoneInfo(zone)
        except (ValueError, KeyError, OSError):
            raise CadenceError(
                f'{source}: schedule timezone {zone!r} is unknown; write "lead" (each lead\'s own zone)'
                ' or an IANA name such as "America/New_York"'
            ) from None

    country = merged["holidays"]
    if not isinstance(country, str) or not country.strip():
        raise CadenceError(f'{source}: schedule holidays must be "lead", "none" or a country code such as "US"')
    country = country.strip()
    if country.lower() in ("lead", "none"):
        country = country.lower()
    else:
        country = country.upper()
        if country not in _supported_countries():
            raise CadenceError(
                f'{source}: schedule holidays {country!r} is not a supported country; write "lead" (each lead\'s'
                ' country), "none", or an ISO 3166-1 code such as "US", "GB" or "RU"'
            )

    skip = merged["skip_dates"]
    if not isinstance(skip, list):
        raise CadenceError(f'{source}: schedule skip_dates must be a list of dates; write skip_dates = ["2026-12-24"]')
    dates = set()
    for value in skip:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            dates.add(value)
            continue
        try:
            dates.add(dt.date.fromisoformat(value))
        except (TypeError, ValueError):
            raise CadenceError(
                f"{source}: schedule skip date {value!r} is not a date; write it as \"2026-12-24\""
            ) from None
    return {
        "days": [WEEKDAYS[d] for d in sorted(window.days)],
        "start": f"{window.start:%H:%M}",
        "end": end,
        "timezone": zone,
        "holidays": country,
        "skip_dates": [d.isoformat() for d in sorted(dates)],
    }


def _parse_exit(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CadenceError(f"{source}: exit must be a table; write it as [exit]")
    _reject_unknown(raw, _EXIT_KEYS, source, "[exit]")
    on = raw.get("on", list(EXIT_EVENTS))
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list):
        raise CadenceError(f'{source}: exit on must be a list; write on = ["reply", "meeting", "not_interested"]')
    for event in on:
        if event not in EXIT_EVENTS:
            raise CadenceError(
                f"{source}: exit on {event!r} is unknown; use any of {', '.join(EXIT_EVENTS)}"
                " (opt-outs, complaints and invalid addresses always end an enrollment)"
            )
    scope = raw.get("scope", "lead")
    if scope not in EXIT_SCOPES:
        raise CadenceError(f'{source}: exit scope {scope!r} is unknown; write "lead" or "account"')
    return {"on": [e for e in EXIT_EVENTS if e in on], "scope": scope}


def _parse_steps(raw: Any, source: str) -> tuple[StepSpec, ...]:
    if not raw:
        raise CadenceError(
            f'{source}: the cadence has no steps; add at least one [[steps]] table with channel = "email"'
        )
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise CadenceError(f"{source}: steps must be tables; write each one as [[steps]]")
    explicit = {s["key"] for s in raw if isinstance(s.get("key"), str)}
    taken: set[str] = set()
    steps: list[StepSpec] = []
    seen_email = False
    for number, table in enumerate(raw, start=1):
        where = f"{source} step {number}" + (f" ({table['key']})" if isinstance(table.get("key"), str) else "")
        step = _parse_step(table, where, seen_email)
        key = step.key
        if key is None:
            key = _unique(f"{number}-{step.channel}", taken | explicit)
        elif key in taken:
            raise CadenceError(f"{where}: key {key!r} is used by an earlier step; give each step its own key")
        taken.add(key)
        steps.append(dataclasses.replace(step, key=key))
        seen_email = seen_email or step.channel == "email"
    return tuple(steps)


def _unique(base: str, taken: set[str]) -> str:
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    return key


def _parse_step(table: dict[str, Any], where: str, after_email: bool) -> StepSpec:
    for key in table:
        if key not in _STEP_KEYS:
            raise CadenceError(f"{where}: unknown key {key!r}; the keys a step takes are {', '.join(_STEP_KEYS)}")
    key = _parse_key(table.get("key"), where, "step")
    channel = table.get("channel")
    if channel not in CHANNELS:
        shown = "no channel" if channel is None else f"channel {channel!r} is unknown"
        raise CadenceError(f"{where}: {shown}; write channel = one of {', '.join(CHANNELS)}")
    action = table.get("action", DEFAULT_ACTION[channel])
    if action not in ACTIONS:
        raise CadenceError(f'{where}: action {action!r} is unknown; write "auto" or "manual"')
    if channel == "task" and action == "auto":
        raise CadenceError(f'{where}: a task step is always done by a person; write action = "manual" or drop it')
    wait = table.get("wait", "0d")
    try:
        wait = str(Wait.parse(wait))
    except (ValueError, TypeError):
        raise CadenceError(f"{where}: wait {wait!r} is not a wait; {_WAIT_FIX}") from None
    thread = table.get("thread", False)
    if not isinstance(thread, bool):
        raise CadenceError(f"{where}: thread must be true or false")
    if thread and channel != "email":
        raise CadenceError(f"{where}: only email steps can reply in a thread; remove thread = true")
    if thread and not after_email:
        raise CadenceError(
            f"{where}: thread = true replies to an earlier email of the cadence, and there is none before this step;"
            " remove thread or move the step after an email step"
        )
    subject, template, body = (_text(table.get(k), where, k) for k in ("subject", "template", "body"))
    variants = _parse_variants(table.get("variants"), where)
    step = StepSpec(key=key, channel=channel, action=action, wait=wait, subject=subject, template=template,
                    body=body, thread=thread, variants=variants)
    if variants:
        for variant in variants:
            _check_content(step, _merged(step, variant), f"{where} variant {variant.key}")
    else:
        _check_content(step, (subject, template, body), where)
    return step


def _parse_key(value: Any, where: str, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY_RE.fullmatch(value):
        raise CadenceError(
            f"{where}: key {value!r} is not a valid {what} key; use lowercase letters, digits, - and _"
            ' (up to 100 characters), such as "intro_email"'
        )
    return value


def _text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CadenceError(f'{where}: {name} must be text; write {name} = "..."')
    if not value.strip():
        raise CadenceError(f"{where}: {name} is empty; write it or remove the key")
    return value


def _parse_variants(raw: Any, where: str) -> tuple[VariantSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise CadenceError(f"{where}: variants must be tables; write each one as [[steps.variants]] under the step")
    if len(raw) < 2:
        raise CadenceError(f"{where}: an A/B test needs at least two [[steps.variants]]; add one or remove the variant")
    variants: list[VariantSpec] = []
    taken: set[str] = set()
    explicit = {v["key"] for v in raw if isinstance(v.get("key"), str)}
    for number, table in enumerate(raw, start=1):
        vwhere = f"{where} variant {number}"
        for key in table:
            if key not in _VARIANT_KEYS:
                raise CadenceError(f"{vwhere}: unknown key {key!r}; a variant takes {', '.join(_VARIANT_KEYS)}")
        key = _parse_key(table.get("key"), vwhere, "variant")
        if key is None:
            key = _unique(chr(ord("a") + number - 1) if number <= 26 else f"v{number}", taken | explicit)
        elif key in taken:
            raise CadenceError(
                f"{vwhere}: variant key {key!r} is used twice in this step; give each variant its own key"
            )
        taken.add(key)
        weight = table.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise CadenceError(f"{vwhere}: weight {weight!r} must be a whole number of at least 1, such as weight = 50")
        subject, template, body = (_text(table.get(k), vwhere, k) for k in ("subject", "template", "body"))
        if (subject, template, body) == (None, None, None):
            raise CadenceError(f"{vwhere}: the variant changes nothing; give it a subject, a template or a body")
        variants.append(VariantSpec(key=key, weight=weight, subject=subject, template=template, body=body))
    return tuple(variants)


def _merged(step: StepSpec | Step, variant: VariantSpec | Mapping[str, Any] | None) -> tuple[str | None, ...]:
    """Return the (subject, template, body) one variant sends: what it sets replaces the step's."""
    if variant is None:
        return step.subject, step.template, step.body
    get = variant.get if isinstance(variant, Mapping) else lambda k: getattr(variant, k)
    subject = get("subject") if get("subject") is not None else step.subject
    if get("template") is not None or get("body") is not None:
        return subject, get("template"), get("body")
    return subject, step.template, step.body


def _check_content(step: StepSpec, content: tuple[str | None, ...], where: str) -> None:
    subject, template, body = content
    if template is not None and body is not None:
        raise CadenceError(
            f"{where}: has both template and body; keep one (template names a file, body is inline text)"
        )
    has_content = template is not None or body is not None
    if step.channel == "email":
        if not has_content:
            raise CadenceError(f'{where}: an email step needs its text; add template = "email/intro" or body = "..."')
        if not step.thread and subject is None:
            raise CadenceError(f'{where}: an email that starts a thread needs a subject; add subject = "..."'
                               " or thread = true to reply to the earlier email")
    elif step.channel == "sms":
        if not has_content:
            raise CadenceError(f'{where}: an SMS step needs its text; add body = "..." or template = "sms/NAME"')
        if subject is not None:
            raise CadenceError(f"{where}: an SMS has no subject; remove it")
    elif not has_content and subject is None:
        raise CadenceError(
            f'{where}: a {step.channel} step needs a title or instructions; add subject = "..." (the task title),'
            ' body = "..." or template = "voice/discovery_call"'
        )


# ---------------------------------------------------------------- stored form


def _step_dict(step: StepSpec, position: int) -> dict[str, Any]:
    return {
        "key": step.key,
        "position": position,
        "channel": step.channel,
        "action": step.action,
        "wait": step.wait,
        "subject": step.subject,
        "template": step.template,
        "body": step.body,
        "thread": step.thread,
        "variants": [
            {"key": v.key, "weight": v.weight, "subject": v.subject, "template": v.template, "body": v.body}
            for v in step.variants
        ],
    }


def _definition(spec: CadenceSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "schedule": spec.schedule,
        "exit_rules": spec.exit_rules,
        "steps": [_step_dict(step, i) for i, step in enumerate(spec.steps)],
    }


def definition_hash(spec: CadenceSpec) -> str:
    """Return the sha256 of the normalized definition, state excluded."""
    canonical = json.dumps(_definition(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def spec_from_cadence(cadence: Cadence) -> CadenceSpec:
    """Rebuild the spec of a stored cadence version."""
    steps = tuple(
        StepSpec(
            key=s.key, channel=s.channel, action=s.action, wait=s.wait, subject=s.subject, template=s.template,
            body=s.body, thread=s.thread,
            variants=tuple(VariantSpec(**{k: v.get(k) for k in _VARIANT_KEYS}) for v in s.variants or ()),
        )
        for s in sorted(cadence.steps, key=lambda s: s.position)
    )
    return CadenceSpec(name=cadence.name, state=cadence.state, description=cadence.description or "",
                       schedule=dict(cadence.schedule), exit_rules=dict(cadence.exit_rules), steps=steps,
                       source=f"{cadence.name} v{cadence.version}")


# ---------------------------------------------------------------- database


def _newest(session: so.Session, name: str) -> Cadence | None:
    return session.scalars(
        sa.select(Cadence).where(Cadence.name == name).order_by(Cadence.version.desc()).limit(1)
    ).first()


def latest(session: so.Session, name: str) -> Cadence:
    """Return the latest version of the cadence called `name`."""
    cadence = _newest(session, name)
    if cadence is None:
        names = session.scalars(sa.select(Cadence.name).distinct().order_by(Cadence.name)).all()
        known = f"the cadences are {', '.join(names)}" if names else "there are no cadences yet"
        raise LookupError(f"no cadence named {name!r}; {known} (create one with sequencer cadence apply FILE)")
    return cadence


def apply_cadence(
    session: so.Session,
    spec: CadenceSpec,
    *,
    now: dt.datetime,
    renderer: Renderer | None = None,
    context_for: Callable[[Enrollment], dict[str, Any]] | None = None,
    plugins: Plugins | None = None,
) -> ApplyResult:
    """Create the cadence, or a new version of it when its definition changed.

    With a renderer every step's templates are compiled first (a problem raises
    CadenceError naming the step); with `context_for` too, live enrollments are
    preflighted and their problems returned. With a renderer and `plugins`, each step of a
    channel that counts its texts gets its cost (step_costs) and a text its channel refuses
    raises CadenceError.
    """
    if renderer is not None:
        check_templates(spec, renderer)
    digest = definition_hash(spec)
    current = _newest(session, spec.name)
    if current is not None and current.definition_hash == digest:
        result = ApplyResult(current, created=False, new_version=False, unchanged=True, previous_state=current.state)
        if spec.state is not None and spec.state != current.state:
            set_state(session, spec.name, spec.state, now=now)
    else:
        version = 1 if current is None else current.version + 1
        state = spec.state or (current.state if current is not None else "active")
        cadence = Cadence(
            name=spec.name, version=version, state=state, description=spec.description,
            schedule=spec.schedule, exit_rules=spec.exit_rules, definition_hash=digest, created_at=now,
            steps=[Step(**_step_dict(step, i)) for i, step in enumerate(spec.steps)],
        )
        session.add(cadence)
        session.flush()
        result = ApplyResult(cadence, created=current is None, new_version=current is not None, unchanged=False,
                             previous_state=None if current is None else current.state)
        if current is not None and current.state != state:
            set_state(session, spec.name, state, now=now)
    if renderer is not None and context_for is not None:
        result.preflight = preflight(session, result.cadence, renderer, now=now, context_for=context_for)
    if renderer is not None and plugins is not None:
        result.costs = step_costs(session, result.cadence.name, result.cadence.steps, renderer, plugins, context_for)
        for counted in result.costs:
            if counted.refused:
                # Raised inside the caller's transaction: the new version is not kept.
                raise CadenceError(f"{spec.source} step {counted.step_key}: {counted.refused} "
                                   f"(rendered for {counted.rendered_for})")
    return result


def check_templates(spec: CadenceSpec, renderer: Renderer) -> None:
    """Compile every step's and variant's subject and text, raising CadenceError naming the step."""
    for number, step in enumerate(spec.steps, start=1):
        for variant_key, subject, template, body in step_contents(step):
            if template is None and body is None:
                continue  # a task with a title only: the title is plain text
            if step.channel != "email":
                subject = None  # the title of a call or task is plain text, not a template
            where = f"{spec.source} step {number} ({step.key})" + (f" variant {variant_key}" if variant_key else "")
            try:
                renderer.check(subject=subject, template=template, body=body)
                if is_call_script(step.channel, step.action, template):
                    load_script(renderer.template_dir, template)
            except TemplateProblem as exc:
                raise CadenceError(f"{where}: {exc.reason}") from None
            except ScriptError as exc:
                raise CadenceError(f"{where}: call script {exc}; see docs/calls.md") from None


def step_contents(step: StepSpec | Step) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """Return (variant_key, subject, template, body) for each thing the step can send: its variants, or itself."""
    if not step.variants:
        return [(None, step.subject, step.template, step.body)]
    return [
        ((v["key"] if isinstance(v, Mapping) else v.key), *_merged(step, v))
        for v in step.variants
    ]


def preflight(
    session: so.Session,
    cadence: Cadence,
    renderer: Renderer,
    *,
    now: dt.datetime,
    context_for: Callable[[Enrollment], dict[str, Any]],
) -> list[PreflightProblem]:
    """Render the remaining steps of every live enrollment of the cadence; list those that would fail."""
    enrollments = session.scalars(
        sa.select(Enrollment)
        .where(Enrollment.cadence_name == cadence.name, Enrollment.state.in_(LIVE_STATES))
        .options(so.selectinload(Enrollment.lead), so.selectinload(Enrollment.cadence))
        .order_by(Enrollment.id)
    ).all()
    problems: list[PreflightProblem] = []
    for enrollment in enrollments:
        context = context_for(enrollment)
        remaining = [s for s in enrollment.cadence.steps if s.position >= enrollment.step_position]
        for step in remaining:
            reasons: list[str] = []
            for variant_key, subject, template, body in step_contents(step):
                try:
                    if step.channel == "email":
                        renderer.render_email(subject=subject, template=template, body=body, context=context)
                    elif is_call_script(step.channel, step.action, template):
                        render_script(load_script(renderer.template_dir, template), renderer, context)
                    elif template is not None or body is not None:
                        renderer.render_text(template=template, body=body, context=context)
                except (TemplateProblem, ScriptError) as exc:
                    reason = getattr(exc, "reason", str(exc))
                    reason = f"variant {variant_key}: {reason}" if variant_key else reason
                    if reason not in reasons:
                        reasons.append(reason)
            lead = enrollment.lead
            problems.extend(PreflightProblem(lead.id, lead.email or lead.phone, step.key, r) for r in reasons)
    return problems


class _Placeholder(ChainableUndefined):
    """A variable with no lead to read it from: its `default(...)` where the template gives one, else 10 characters."""

    __slots__ = ()

    def __str__(self) -> str:
        return "x" * 10


def step_costs(session: so.Session, name: str, steps: Sequence[StepSpec | Step], renderer: Renderer,
               plugins: Plugins, context_for: Callable[[Enrollment], dict[str, Any]] | None = None,
               ) -> list[StepCost]:
    """Return each step's largest cost on a channel that counts its texts (Channel.describe_cost).

    The largest over the cadence's live enrollments (each variant rendered with `context_for`),
    or, with none, over the step's variants rendered with placeholders. A text that cannot
    render for a lead is preflight's to report, not counted here.
    """
    enrollments: list[Enrollment] | None = None
    costs: list[StepCost] = []
    for step in steps:
        channel = plugins.channel(step.channel)
        if channel is None or type(channel).describe_cost is Channel.describe_cost:
            continue  # the channel counts nothing: its texts need not be rendered
        contents = [(template, body) for _, _, template, body in step_contents(step) if template or body]
        if not contents:
            continue
        if enrollments is None:
            enrollments = [] if context_for is None else list(session.scalars(
                sa.select(Enrollment).where(Enrollment.cadence_name == name, Enrollment.state.in_(LIVE_STATES))
                .options(so.selectinload(Enrollment.lead)).order_by(Enrollment.id)))
        texts: list[str] = []
        for enrollment in enrollments:
            assert context_for is not None
            context = context_for(enrollment)
            for template, body in contents:
                try:
                    texts.append(renderer.render_text(template=template, body=body, context=context))
                except TemplateProblem:
                    continue
        rendered_for = f"{len(enrollments)} enrolled lead(s)"
        if not enrollments:
            rendered_for = "each variable at its default or 10 characters"
            for template, body in contents:
                names = renderer.variables(subject=None, template=template, body=body)
                try:
                    texts.append(renderer.render_text(template=template, body=body,
                                                      context={n: _Placeholder(name=n) for n in names}))
                except TemplateProblem:
                    continue
        counted = [(cost, text) for text in texts if (cost := channel.describe_cost(text)) is not None]
        if not counted:
            continue
        cost, text = max(counted, key=lambda pair: pair[0].amount)
        try:
            channel.check_rendered(text)
            refused = None
        except ValueError as exc:
            refused = str(exc)
        costs.append(StepCost(step.key, step.channel, cost, rendered_for, refused))
    return costs


def list_cadences(session: so.Session) -> list[CadenceSummary]:
    """Summarize each cadence: its latest version, state, step count and enrollments by state."""
    newest = (
        sa.select(Cadence.name, sa.func.max(Cadence.version).label("version")).group_by(Cadence.name).subquery()
    )
    cadences = session.scalars(
        sa.select(Cadence)
        .join(newest, sa.and_(Cadence.name == newest.c.name, Cadence.version == newest.c.version))
        .order_by(Cadence.name)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for name, state, count in session.execute(
        sa.select(Enrollment.cadence_name, Enrollment.state, sa.func.count())
        .group_by(Enrollment.cadence_name, Enrollment.state)
    ):
        counts.setdefault(name, {})[getattr(state, "value", state)] = count
    return [
        CadenceSummary(name=c.name, version=c.version, state=c.state, steps=len(c.steps),
                       enrollments=dict(sorted(counts.get(c.name, {}).items())), updated_at=c.created_at)
        for c in cadences
    ]


def set_state(session: so.Session, name: str, state: str, *, now: dt.datetime, plugins: Plugins | None = None) -> int:
    """Set the state of every version of a cadence; archiving ends its live enrollments.

    Return the number of enrollments ended.
    """
    if state not in STATES:
        raise CadenceError(f"state {state!r} is unknown; use one of {', '.join(STATES)}")
    latest(session, name)
    session.execute(sa.update(Cadence).where(Cadence.name == name).values(state=state))
    if state != "archived":
        return 0
    live = session.scalars(sa.select(Enrollment.id).where(Enrollment.cadence_name == name,
                                                          Enrollment.state.in_(LIVE_STATES))).all()
    # end_enrollments also skips their open tasks: reps must not work calls of a cadence that no longer runs.
    return len(end_enrollments(session, live, state="removed", reason="cadence archived", now=now, plugins=plugins))


# ---------------------------------------------------------------- calendars and simulation


@functools.cache
def _supported_countries() -> frozenset[str]:
    return frozenset(holidays.list_supported_countries())


def calendar_for_lead(schedule: Mapping[str, Any], lead: Lead) -> LocalCalendar:
    """Return the sending calendar of a cadence's schedule for one lead."""
    zones = (schedule["timezone"],) if schedule.get("timezone", "lead") != "lead" else (lead.zones() or ("UTC",))
    return _cached_calendar(_freeze(schedule), tuple(zones), lead.country)


@functools.lru_cache(maxsize=4096)
def _cached_calendar(schedule: tuple, zones: tuple[str, ...], country: str | None) -> LocalCalendar:
    # The engine asks once per lead per batch; leads of a cadence share a handful of (zones, country) pairs.
    return _calendar(dict(schedule), zones, country)


def _freeze(schedule: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in schedule.items()))


def _calendar(schedule: Mapping[str, Any], zones: tuple[str, ...], country: str | None) -> LocalCalendar:
    merged = {**DEFAULT_SCHEDULE, **schedule}
    window = Window.parse(list(merged["days"]), merged["start"], merged["end"])
    setting = merged["holidays"]
    if setting == "none":
        holiday_country = None
    elif setting == "lead":
        code = (country or "").strip().upper()
        # A lead from a country the holidays library does not know simply has no holidays.
        holiday_country = code if code in _supported_countries() else None
    else:
        holiday_country = setting
    skip = frozenset(dt.date.fromisoformat(d) for d in merged["skip_dates"])
    return LocalCalendar(window, tuple(zones), holiday_country, skip)


def simulate(
    spec_or_cadence: CadenceSpec | Cadence,
    *,
    zone: str | None,
    country: str | None = None,
    start: dt.datetime,
) -> list[SimulatedStep]:
    """Return when each step would run for a lead in `zone` and `country` enrolled at `start`.

    Each step is assumed to run at its due moment, so the next wait counts from there.
    `zone` is required when the cadence sends in each lead's zone; a fixed zone wins.
    """
    spec = spec_or_cadence if isinstance(spec_or_cadence, CadenceSpec) else spec_from_cadence(spec_or_cadence)
    fixed = spec.schedule.get("timezone", "lead")
    if fixed != "lead":
        zone = fixed
    if not zone:
        raise CadenceError(
            f"{spec.name} sends in each lead's own time zone; give the lead's zone, such as America/New_York"
        )
    try:
        local_zone = ZoneInfo(zone)
    except (ValueError, KeyError, OSError):
        raise CadenceError(f"time zone {zone!r} is unknown; use an IANA name such as America/New_York") from None
    try:
        calendar = _calendar(spec.schedule, (zone,), country)
    except ValueError as exc:
        raise CadenceError(str(exc)) from None
    result: list[SimulatedStep] = []
    moment = start
    for step in spec.steps:
        try:
            moment = calendar.due_at(moment, Wait.parse(step.wait))
        except NoOpening as exc:
            raise CadenceError(f"{spec.name} step {step.key}: {exc}") from None
        result.append(SimulatedStep(step.key, step.channel, step.action, moment.astimezone(local_zone), moment))
    return result


# ---------------------------------------------------------------- export


def export_cadence(cadence: Cadence) -> str:
    """Return TOML for a stored cadence version that applies back unchanged."""
    spec = spec_from_cadence(cadence)
    lines = [
        f"# {cadence.name} v{cadence.version}, exported by `sequencer cadence export`.",
        "# Apply it back with `sequencer cadence apply FILE`; keep the step keys as they are.",
        "",
        _toml_table({"name": spec.name, "state": spec.state, "description": spec.description or None}),
        # PostgreSQL's JSONB does not keep key order; write the documented one.
        "[schedule]",
        _toml_table({key: spec.schedule[key] for key in _SCHEDULE_KEYS}),
        "[exit]",
        _toml_table({key: spec.exit_rules[key] for key in _EXIT_KEYS}),
    ]
    for step in spec.steps:
        lines.append("[[steps]]")
        lines.append(_toml_table({
            "key": step.key, "channel": step.channel, "action": step.action, "wait": step.wait,
            "thread": step.thread or None, "subject": step.subject, "template": step.template, "body": step.body,
        }))
        for variant in step.variants:
            lines.append("[[steps.variants]]")
            lines.append(_toml_table({
                "key": variant.key, "weight": variant.weight, "subject": variant.subject,
                "template": variant.template, "body": variant.body,
            }))
    return "\n".join(lines).rstrip("\n") + "\n"


def _toml_table(values: Mapping[str, Any]) -> str:
    """Return `key = value` lines, skipping None; lists stay on one line."""
    lines = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list):
            rendered = "[" + ", ".join(_toml_value(v) for v in value) + "]"
        else:
            rendered = _toml_value(value)
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    return tomli_w.dumps({"v": value}, multiline_strings=True).split(" = ", 1)[1].rstrip("\n")
