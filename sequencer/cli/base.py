"""What every CLI command shares: the runtime, output in table or JSON form, friendly errors."""
from __future__ import annotations

import json
import sys
import warnings
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import click

from sequencer.clock import FixedClock, OffsetClock, SystemClock, iso_z, parse_instant
from sequencer.config import ConfigError, ConfigWarning, load_settings
from sequencer.runtime import Runtime


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback."""


class CliState:
    def __init__(self, config_path: str | None, now_text: str | None) -> None:
        self.config_path = config_path
        self.now_text = now_text
        self._runtime: Runtime | None = None

    def runtime(self, *, advancing: bool = False) -> Runtime:
        """Build the runtime once; --now gives a fixed clock, or an advancing one for long-running commands."""
        if self._runtime is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", ConfigWarning)
                    warnings.showwarning = _show_config_warning
                    settings = load_settings(self.config_path)
            except ConfigError as exc:
                raise UserError(str(exc)) from None
            clock: Any = SystemClock()
            if self.now_text:
                try:
                    at = parse_instant(self.now_text)
                except ValueError as exc:
                    raise UserError(f"--now: {exc}") from None
                clock = OffsetClock(at) if advancing else FixedClock(at)
            self._runtime = Runtime(settings, clock)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.dispose()


def _show_config_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    click.echo(f"warning: {message}", err=True)


pass_state = click.make_pass_decorator(CliState)

format_option = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Output format.")


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Iterable[str] | None = None) -> None:
    """Print rows as JSON (a list of objects) or as an aligned table of the given columns."""
    if fmt == "json":
        click.echo(json.dumps([to_jsonable(r) for r in rows], ensure_ascii=False, indent=2))
        return
    columns = list(columns or (rows[0].keys() if rows else []))
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_z(value) or ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if value is None:
        return ""
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def run_guarded(command: Callable[..., Any]) -> None:
    """Run the click command; turn known user errors into a message and exit status 2."""
    from sequencer.plugins import PluginError

    try:
        command(standalone_mode=True)
    except (PluginError, ConfigError) as exc:  # ConfigError: a setting read only when used ([web] secret_key)
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
