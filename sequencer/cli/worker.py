"""`sequencer worker`, `serve` and `mailsink`: the long-running processes."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sequencer.cli.base import CliState, UserError, pass_state

if TYPE_CHECKING:
    from sequencer.runtime import Runtime


def register(main: click.Group) -> None:
    main.add_command(worker)
    main.add_command(serve)
    main.add_command(mailsink)
    main.add_command(demo)


@click.command()
@click.option("--once", is_flag=True, help="Do all the work due at this instant (every batch), then exit.")
@click.option("--batch-size", type=int, help="Enrollments claimed per batch (default [engine] batch_size).")
@click.option("--concurrency", type=int, default=1, show_default=True,
              help="Engines in threads inside this worker (PostgreSQL); helps when providers are slow to answer.")
@pass_state
def worker(state: CliState, once: bool, batch_size: int | None, concurrency: int) -> None:
    """Advance every enrolled lead through its cadence (stops cleanly on SIGTERM or SIGINT)."""
    from sequencer.engine import Engine
    from sequencer.worker import WorkerRefused, hold_sqlite_worker_lock, run_worker

    _logging()
    rt = state.runtime(advancing=not once)
    _refuse_unsafe_secret(rt)
    try:
        if once:
            hold_sqlite_worker_lock(rt)
            report = Engine(rt, batch_size=batch_size).run_until_idle()
            click.echo(json.dumps(dataclasses.asdict(report)))
            return
        run_worker(rt, concurrency=concurrency, batch_size=batch_size)
    except WorkerRefused as exc:
        raise UserError(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--no-scheduler", is_flag=True, help="Serve only; run `sequencer worker` separately.")
@pass_state
def serve(state: CliState, host: str, port: int, no_scheduler: bool) -> None:
    """Run the web app, with the scheduler inside unless --no-scheduler."""
    from sequencer.web import create_app

    from sequencer.worker import WorkerRefused

    _logging()
    rt = state.runtime(advancing=True)
    _refuse_unsafe_secret(rt)
    try:
        app = create_app(rt, start_scheduler=not no_scheduler)
    except WorkerRefused as exc:
        raise UserError(str(exc)) from None
    app.run(host=host, port=port, use_reloader=False, threaded=True)


def _refuse_unsafe_secret(rt: Runtime) -> None:
    """Stop before serving or sending with no secret key, the demo one or a short one (unless on localhost)."""
    from sequencer.config import ConfigError, check_secret_for_serving

    try:
        check_secret_for_serving(rt.settings)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every tick at INFO, and at WARNING each tick skipped because a long drain
    # is still running (by design: max_instances=1). Job failures are logged at ERROR.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=int)
@click.option("--outbox", default="var/outbox", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def mailsink(host: str, port: int, outbox: Path) -> None:
    """Run a local SMTP server that saves every message it receives as a .eml file."""
    from sequencer.mailsink import MailSink

    with MailSink(host, port, outbox=outbox):
        click.echo(f"mail sink listening on {host}:{port}, saving to {outbox}/")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@click.group()
def demo() -> None:
    """Demo data for a first look."""


@demo.command("load")
@click.option("--dir", "demo_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with cadences/ and leads_*.csv (default: beside the config file).")
@pass_state
def demo_load(state: CliState, demo_dir: Path | None) -> None:
    """Load users, mailboxes, two cadences and enrolled leads (safe to run again)."""
    from sequencer.demo import DEMO_PASSWORD, load_demo

    rt = state.runtime()
    report = load_demo(rt, demo_dir or rt.settings.path.parent)
    click.echo(f"demo: {report.users} users, {report.cadences} cadences applied, {report.leads} new leads, "
               f"{report.enrolled} enrollments")
    click.echo(f"sign in at {rt.settings.web.base_url}/login with password {DEMO_PASSWORD} as:")
    for email, role in report.logins:
        click.echo(f"  {email} ({role})")
