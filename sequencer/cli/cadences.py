"""`sequencer cadence ...`: apply, export, list, pause, resume, archive and simulate cadences."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from sequencer import audit
from sequencer import cadences as core
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state, to_jsonable
from sequencer.clock import iso_z, parse_instant
from sequencer.messages import context_for_enrollment


def register(main: click.Group) -> None:
    main.add_command(cadence)


@click.group()
def cadence() -> None:
    """Cadences as code: TOML files applied to the database (docs/cadences.md)."""


def _read_spec(path: str) -> core.CadenceSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        return core.parse_cadence(text, path)
    except core.CadenceError as exc:
        raise UserError(str(exc)) from None


@cadence.command()
@click.argument("file", type=click.Path(dir_okay=False))
@pass_state
def apply(state: CliState, file: str) -> None:
    """Create the cadence in FILE, or a new version if it changed; list enrolled leads that would fail."""
    spec = _read_spec(file)
    rt = state.runtime()
    try:
        with rt.session() as session:

            def context_for(enrollment):  # noqa: ANN001, ANN202
                return context_for_enrollment(session, enrollment, rt)

            result = core.apply_cadence(session, spec, now=rt.now(), renderer=rt.renderer, context_for=context_for,
                                        plugins=rt.plugins)
            name, version = result.cadence.name, result.cadence.version
            if result.created or result.new_version or result.state_changed:
                audit.record(session, actor=audit.cli_actor(), action="cadence.apply", object_type="cadence",
                             object_id=name, at=rt.now(), version=version, source=file,
                             created=result.created, new_version=result.new_version, state=result.cadence.state)
    except core.CadenceError as exc:
        raise UserError(str(exc)) from None
    if result.created:
        click.echo(f"created {name} v{version}")
    elif result.new_version:
        click.echo(f"{name}: new version {version}")
    else:
        click.echo(f"{name} unchanged")
    if result.state_changed:
        click.echo(f"{name}: state {result.previous_state} -> {result.cadence.state}")
    for counted in result.costs:
        click.echo(f"step {counted.step_key} ({counted.channel}): {counted.cost.label} at most, "
                   f"rendered for {counted.rendered_for}")
    for problem in result.preflight:
        click.echo(f"lead {problem.lead_email or problem.lead_id} step {problem.step_key}: {problem.reason}")
    if result.preflight:
        leads = len({p.lead_id for p in result.preflight})
        click.echo(f"preflight: {leads} enrolled lead(s) would fail; fix their fields or the templates", err=True)


@cadence.command()
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@pass_state
def export(state: CliState, name: str, output: str | None) -> None:
    """Print the latest version of NAME as TOML that applies back unchanged."""
    rt = state.runtime()
    with rt.session() as session:
        text = core.export_cadence(_latest(session, name))
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {name} to {output}")
    else:
        click.echo(text, nl=False)


@cadence.command("list")
@format_option
@pass_state
def list_(state: CliState, fmt: str) -> None:
    """List cadences: latest version, state, steps and enrollments by state."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [dataclasses.asdict(s) for s in core.list_cadences(session)]
    if fmt == "table":
        for row in rows:
            row["enrollments"] = " ".join(f"{k}={v}" for k, v in row["enrollments"].items())
    emit(rows, fmt, ["name", "version", "state", "steps", "enrollments", "updated_at"])


def _latest(session, name: str):  # noqa: ANN001, ANN202
    try:
        return core.latest(session, name)
    except LookupError as exc:
        raise UserError(str(exc)) from None


def _set_state(state: CliState, name: str, new_state: str, verb: str) -> None:
    rt = state.runtime()
    with rt.session() as session:
        previous = _latest(session, name).state
        ended = core.set_state(session, name, new_state, now=rt.now(), plugins=rt.plugins)
        audit.record(session, actor=audit.cli_actor(), action=f"cadence.{verb}", object_type="cadence",
                     object_id=name, at=rt.now(), previous_state=previous, enrollments_ended=ended)
    tail = f"; {ended} live enrollment(s) ended" if new_state == "archived" else ""
    click.echo(f"cadence {name} {new_state}{tail}")


@cadence.command()
@click.argument("name")
@pass_state
def pause(state: CliState, name: str) -> None:
    """Pause NAME: its enrollments wait where they are until it is resumed."""
    _set_state(state, name, "paused", "pause")


@cadence.command()
@click.argument("name")
@pass_state
def resume(state: CliState, name: str) -> None:
    """Make NAME active again (also activates a draft)."""
    _set_state(state, name, "active", "resume")


@cadence.command()
@click.argument("name")
@pass_state
def archive(state: CliState, name: str) -> None:
    """Archive NAME and end every live enrollment in it (state removed)."""
    _set_state(state, name, "archived", "archive")


@cadence.command()
@click.argument("name")
@click.option("--timezone", "zone", metavar="TZ",
              help="The lead's IANA time zone (needed when the cadence sends in each lead's zone).")
@click.option("--country", metavar="CC", help="The lead's country code, for holidays = \"lead\".")
@click.option("--start", metavar="ISO8601", help="Enrollment instant (Z or an offset); default: now.")
@format_option
@pass_state
def simulate(state: CliState, name: str, zone: str | None, country: str | None, start: str | None, fmt: str) -> None:
    """Print when each step of NAME (or of a .toml file) would run for such a lead."""
    rt = state.runtime()
    try:
        at = parse_instant(start) if start else rt.now()
    except ValueError as exc:
        raise UserError(f"--start: {exc}") from None
    try:
        with rt.session() as session:
            spec = (_read_spec(name) if name.endswith(".toml") and Path(name).is_file()
                    else core.spec_from_cadence(_latest(session, name)))
            steps = core.simulate(spec, zone=zone, country=country, start=at)
            costs = {c.step_key: c.cost.label for c in core.step_costs(
                session, spec.name, spec.steps, rt.renderer, rt.plugins,
                lambda enrollment: context_for_enrollment(session, enrollment, rt))}
    except core.CadenceError as exc:
        raise UserError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps([to_jsonable({
            "key": s.key, "channel": s.channel, "action": s.action,
            "local": s.due_local.isoformat(), "zone": str(s.due_local.tzinfo), "utc": s.due_utc,
            "cost": costs.get(s.key),
        }) for s in steps], ensure_ascii=False, indent=2))
        return
    emit([{
        "key": s.key, "channel": s.channel, "action": s.action,
        "local": f"{s.due_local:%a %Y-%m-%d %H:%M} {s.due_local.tzinfo}", "utc": iso_z(s.due_utc),
        "cost": costs.get(s.key, ""),
    } for s in steps], fmt, ["key", "channel", "action", "local", "utc"] + (["cost"] if costs else []))
