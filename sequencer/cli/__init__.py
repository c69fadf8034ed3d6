"""The `sequencer` command: global options, then one module of subcommands per area."""
from __future__ import annotations

import sys

import click

from sequencer.cli.base import CliState, run_guarded
from sequencer.config import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="SEQUENCER_CONFIG", type=click.Path(dir_okay=False),
              help="config.toml to use (default ./config.toml; env SEQUENCER_CONFIG).")
@click.option("--now", envvar="SEQUENCER_NOW", metavar="ISO8601",
              help="Run as if at this instant (must carry Z or an offset). Fixed for one-shot commands; "
                   "an advancing clock for worker and serve.")
@click.version_option(package_name="sequencer")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, now: str | None) -> None:
    """Sequencer: cadences of email, SMS, calls and tasks for a sales team."""
    ctx.obj = CliState(config_path=config_path, now_text=now)
    ctx.call_on_close(ctx.obj.close)


def _register_commands() -> None:
    from sequencer.cli import (cadences, calls, consent, db, doctor, leads, numbers, people, plugins, tasks,
                               touches, worker)

    for module in (db, plugins, cadences, leads, consent, people, numbers, worker, tasks, calls, touches, doctor):
        module.register(main)


_register_commands()


def entry() -> None:
    """Console-script entry: load plugin commands, then run with friendly errors."""
    add_plugin_commands(_config_from_argv())
    run_guarded(main)


def add_plugin_commands(config_path: str | None) -> None:
    """Add the installed plugins' commands (register_commands) to `main`, as the console script does."""
    try:
        from sequencer.config import load_settings
        from sequencer.plugins import Plugins

        # Plugin commands need the plugin manager, which needs settings; a broken config
        # must still let `--help` and `db upgrade` print their own errors, so this is best effort.
        Plugins(load_settings(config_path)).hook.register_commands(cli=main)
    except (ConfigError, FileNotFoundError):
        pass


def _config_from_argv() -> str | None:
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
