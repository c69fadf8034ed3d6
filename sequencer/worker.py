"""The worker: one APScheduler with a few fixed jobs; the database rows are the schedule."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from sequencer.db import is_sqlite
from sequencer.engine import Engine

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from sequencer.runtime import Runtime

log = logging.getLogger(__name__)


def add_jobs(scheduler: BaseScheduler, runtime: Runtime, engine: Engine) -> None:
    """Install the fixed jobs: never one job per touch or per enrollment."""
    scheduler.add_job(engine.run_until_idle, "interval", seconds=runtime.settings.engine.tick_seconds, id="tick",
                      max_instances=1, coalesce=True, next_run_time=runtime.now())


def run_worker(runtime: Runtime) -> None:
    """Run the scheduler in the foreground until interrupted."""
    scheduler = BlockingScheduler(timezone="UTC")
    add_jobs(scheduler, runtime, Engine(runtime))
    log.info("worker started (%s)", "SQLite" if is_sqlite(runtime.engine) else "PostgreSQL")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


def start_embedded_scheduler(app, runtime: Runtime) -> BackgroundScheduler:  # noqa: ANN001 - a Flask app
    """Start the scheduler inside the web process (the single-machine default)."""
    scheduler = BackgroundScheduler(timezone="UTC")
    add_jobs(scheduler, runtime, Engine(runtime))
    scheduler.start()
    app.extensions["sequencer_scheduler"] = scheduler
    return scheduler
