"""`sequencer plugins ...`: list, enable and disable channel plugins."""
from __future__ import annotations

import dataclasses

import click

from sequencer import audit
from sequencer.cli.base import CliState, UserError, emit, format_option, pass_state
from sequencer.plugins import PluginError


def register(main: click.Group) -> None:
    main.add_command(plugins)


@click.group()
def plugins() -> None:
    """Installed channel plugins."""


@plugins.command("list")
@format_option
@pass_state
def list_(state: CliState, fmt: str) -> None:
    """List installed plugins: name, version, channels, enabled, health."""
    rt = state.runtime()
    with rt.session() as session:
        rows = [dataclasses.asdict(info) for info in rt.plugins.info(session)]
    emit(rows, fmt, ["name", "version", "channels", "enabled", "health"])


@plugins.command()
@click.argument("name")
@pass_state
def enable(state: CliState, name: str) -> None:
    """Enable a plugin; its paused enrollments resume on the next tick."""
    _set(state, name, True)


@plugins.command()
@click.argument("name")
@pass_state
def disable(state: CliState, name: str) -> None:
    """Disable a plugin; steps on its channels wait (paused, channel_unavailable) until it is enabled."""
    _set(state, name, False)


def _set(state: CliState, name: str, enabled: bool) -> None:
    rt = state.runtime()
    try:
        with rt.session() as session:
            rt.plugins.set_enabled(session, name, enabled, rt.now())
            audit.record(session, actor=audit.cli_actor(), action="plugin.enable" if enabled else "plugin.disable",
                         object_type="plugin", object_id=name, at=rt.now())
    except PluginError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"plugin {name} {'enabled' if enabled else 'disabled'}")
