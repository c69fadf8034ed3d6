"""The worker: one APScheduler with a few fixed jobs and the plugins' jobs; the database rows are the schedule."""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.engine import make_url

from sequencer.db import is_sqlite
from sequencer.engine import Engine

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from sequencer.plugins import PluginJob
    from sequencer.runtime import Runtime

log = logging.getLogger(__name__)


class WorkerRefused(RuntimeError):
    """This worker must not start; the message says why and what to do instead."""


def hold_sqlite_worker_lock(runtime: Runtime) -> None:
    """On SQLite, make sure this is the only process running the engine against the file.

    SQLite serializes writers, so a second worker would only wait on locks; worse, the
    embedded `serve` scheduler and a separate worker would both think they own the
    schedule. An OS file lock beside the database says who does; it dies with the process.
    """
    if not is_sqlite(runtime.engine) or runtime.worker_lock is not None:
        return
    database = make_url(runtime.settings.database.url).database
    if not database or database == ":memory:":
        return
    lock_path = Path(f"{database}.worker.lock")
    handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise WorkerRefused(
            f"{holder} already runs the engine against {database}. SQLite allows one worker (the one inside "
            "`sequencer serve`, or one `sequencer worker`): stop the other one, run `serve --no-scheduler`, or "
            "move to PostgreSQL ([database] url) to run several workers (docs/deploy.md)."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    runtime.worker_lock = handle


def add_jobs(scheduler: BaseScheduler, runtime: Runtime, engines: list[Engine]) -> None:
    """Install the fixed jobs: never one job per touch or per enrollment."""
    for number, engine in enumerate(engines):
        scheduler.add_job(engine.run_until_idle, "interval", seconds=runtime.settings.engine.tick_seconds,
                          id=f"tick-{number}", max_instances=1, coalesce=True, next_run_time=runtime.now(),
                          misfire_grace_time=None)
    for job in runtime.plugins.jobs():
        # APScheduler keeps wall-clock time, whatever clock --now gives the runtime: first run now.
        scheduler.add_job(run_plugin_job, "interval", args=[runtime, job], seconds=job.interval_seconds, id=job.id,
                          max_instances=1, coalesce=True, next_run_time=datetime.now(timezone.utc),
                          misfire_grace_time=None)


def run_plugin_job(runtime: Runtime, job: PluginJob) -> None:
    """Run one plugin job with its plugin's Core, unless an admin disabled the plugin since start-up."""
    with runtime.session() as session:
        if job.plugin not in runtime.plugins.enabled_plugins(session):
            return
    try:
        job.function(runtime.plugins.core(job.plugin))
    except Exception:
        # The next run comes at the next interval; the log names whose job failed.
        log.exception("plugin %s: job %s failed", job.plugin, job.name)


def make_engines(runtime: Runtime, concurrency: int, batch_size: int | None = None) -> list[Engine]:
    if concurrency < 1:
        raise WorkerRefused("--concurrency must be at least 1")
    if concurrency > 1 and is_sqlite(runtime.engine):
        raise WorkerRefused("--concurrency above 1 needs PostgreSQL: SQLite runs one writer at a time, so extra "
                            "threads would only queue on its lock")
    # The engines share the worker's [engine] max_in_flight, so a kill -9 costs no more review.
    share = runtime.settings.engine.max_in_flight // concurrency
    if share < 1:
        raise WorkerRefused(f"--concurrency {concurrency} is above [engine] max_in_flight "
                            f"({runtime.settings.engine.max_in_flight}): lower it, or raise max_in_flight")
    return [Engine(runtime, batch_size=batch_size, max_in_flight=share) for _ in range(concurrency)]


def run_worker(runtime: Runtime, *, concurrency: int = 1, batch_size: int | None = None,
               shutdown_timeout: float = 60.0) -> None:
    """Run the scheduler in the foreground until SIGTERM or SIGINT, then stop cleanly.

    `concurrency` engines run side by side in threads; each claims its own batches
    (SKIP LOCKED keeps them apart), which helps channels whose provider calls wait on the network.
    """
    hold_sqlite_worker_lock(runtime)
    engines = make_engines(runtime, concurrency, batch_size)
    # One thread per engine, and one per plugin job so that (IMAP polling...) never waits behind a long drain.
    threads = concurrency + len(runtime.plugins.jobs())
    scheduler = BlockingScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(threads)})
    add_jobs(scheduler, runtime, engines)

    def stop(signum: int, _frame: Any) -> None:
        log.info("%s received: finishing the batch in hand, claiming no more", signal.Signals(signum).name)
        for engine in engines:
            engine.stopping.set()
        # shutdown() waits for running jobs; do it off the signal handler so a second signal still lands.
        threading.Thread(target=_shutdown, args=(scheduler, shutdown_timeout), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("worker started: %d engine(s) on %s", concurrency,
             "SQLite" if is_sqlite(runtime.engine) else "PostgreSQL")
    scheduler.start()
    log.info("worker stopped")


def _shutdown(scheduler: BlockingScheduler, timeout: float) -> None:
    # A provider call that hangs past its own timeout must not keep the process alive forever:
    # its claims expire with their lease and another worker takes them over.
    watchdog = threading.Timer(timeout, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    scheduler.shutdown(wait=True)
    watchdog.cancel()


def start_embedded_scheduler(app, runtime: Runtime) -> BackgroundScheduler:  # noqa: ANN001 - a Flask app
    """Start the scheduler inside the web process (the single-machine default)."""
    hold_sqlite_worker_lock(runtime)
    scheduler = BackgroundScheduler(timezone="UTC")
    add_jobs(scheduler, runtime, [Engine(runtime)])
    scheduler.start()
    app.extensions["sequencer_scheduler"] = scheduler
    return scheduler
