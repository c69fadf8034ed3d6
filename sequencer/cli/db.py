"""`sequencer db ...`: schema migrations."""
from __future__ import annotations

import click

from sequencer.cli.base import CliState, pass_state


def register(main: click.Group) -> None:
    main.add_command(db)


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command()
@click.option("--revision", default="head", show_default=True)
@pass_state
def upgrade(state: CliState, revision: str) -> None:
    """Create or migrate the database to the latest schema."""
    from sequencer.db import upgrade as run_upgrade

    url = state.runtime().settings.database.url
    run_upgrade(url, revision)
    click.echo(f"database at {_safe(url)} is at revision {revision}")


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
