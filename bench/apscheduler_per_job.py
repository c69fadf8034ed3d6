"""One APScheduler job per touch (the design users build by hand) against Sequencer's engine.

For each size N, each side runs in a fresh subprocess (so ru_maxrss is its own peak memory) on a
fresh database with N leads, sending to the same counting SMTP sink (bench/sink.py):

* APScheduler 3 side: a BackgroundScheduler with a SQLAlchemyJobStore in the same database
  (the SQLAlchemy engine Sequencer uses, so SQLite gets WAL and a busy timeout), a
  ThreadPoolExecutor (10 threads, APScheduler's default size), job_defaults misfire_grace_time=None
  and coalesce=False so no job is dropped or merged. "Schedule" = the add_job loop: N `date` jobs
  whose run_date are spread evenly over [t+5 s, t+10 s] (--window 5), added with the scheduler started but
  paused (so scheduling is not slowed by jobs already running); if the loop ends before the last
  run_date it waits for it, then resumes the scheduler. "Drain" = resume -> N jobs executed. Each
  job (a top-level function, bench/burst_common.per_job_touch) does one touch's irreducible work:
  read its lead, render the same template, build the same MIME message as the email channel, send
  it over its own SMTP connection (one job = one connection: that is the design) and insert a
  touches row.
* Sequencer side: "schedule" = bench/common.load_world, the bulk load of N leads and N enrollments
  all due at the same moment (it inserts the leads too, which the APScheduler side gets for free,
  so this is the conservative way round); "drain" = Engine(runtime, batch_size=500).run_until_idle().

Both sides must deliver N messages with N distinct Message-IDs and write N touches rows. Prints
schedule time, drain time and peak memory of each side and the ratios APScheduler / Sequencer.
With --timeout, an APScheduler drain still running after T seconds is reported as "did not finish in
T" with the number drained by then.

    .venv/bin/python bench/apscheduler_per_job.py                          # 10,000 and 100,000, SQLite
    .venv/bin/python bench/apscheduler_per_job.py --database postgresql --sizes 10000
    .venv/bin/python bench/apscheduler_per_job.py --sizes 100000 --timeout 1800
    .venv/bin/python bench/apscheduler_per_job.py --smoke                  # 200 (CI)

The last line of output is a JSON object with every figure. Exits 1 if a side that finished did not
deliver every touch exactly once, else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst_common import load_average, write_worker_config  # noqa: E402
from common import databases, emit_json, load_world, utcnow  # noqa: E402
from dispatch import SinkProcess  # noqa: E402

import sqlalchemy as sa  # noqa: E402

JOB_THREADS = 10


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the two sides, each in its own process ---------------------------------------------------------


def side_sequencer(config: str, url: str, n: int) -> dict[str, Any]:
    from sequencer.clock import SystemClock
    from sequencer.config import load_settings
    from sequencer.engine import Engine
    from sequencer.runtime import Runtime

    started = time.perf_counter()
    world = load_world(url, leads=n, due=n)
    schedule = time.perf_counter() - started
    runtime = Runtime(load_settings(config), SystemClock())
    runtime.renderer  # noqa: B018 - plugins loaded and templates ready before the clock starts, as in dispatch.py
    started = time.perf_counter()
    report = Engine(runtime, batch_size=500).run_until_idle()
    drain = time.perf_counter() - started
    runtime.dispose()
    return {"schedule_seconds": schedule, "drain_seconds": drain, "finished": report.sent == n and world.due == n,
            "executed": report.sent, "errors": report.failed, "peak_rss_mb": peak_rss_mb()}


def side_apscheduler(config: str, url: str, n: int, timeout: float, window: float) -> dict[str, Any]:
    from apscheduler.events import EVENT_JOB_ERROR
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    import burst_common
    from sequencer.clock import SystemClock
    from sequencer.config import load_settings
    from sequencer.models import Enrollment
    from sequencer.runtime import Runtime

    world = load_world(url, leads=n, due=n)  # the leads exist already: not part of this side's scheduling
    runtime = Runtime(load_settings(config), SystemClock())
    engine = runtime.engine
    burst_common.configure_jobs(engine, runtime.renderer, runtime.settings.plugin("email")["port"], world.mailbox_id)
    with engine.connect() as conn:
        pairs = conn.execute(sa.select(Enrollment.id, Enrollment.lead_id).order_by(Enrollment.id)).all()
    errors: list[str] = []
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        executors={"default": ThreadPoolExecutor(JOB_THREADS)},
        job_defaults={"misfire_grace_time": None, "coalesce": False},
        timezone=timezone.utc,
    )
    scheduler.add_listener(lambda event: errors.append(repr(event.exception)), EVENT_JOB_ERROR)
    scheduler.start(paused=True)

    started = time.perf_counter()
    base = utcnow() + timedelta(seconds=window)
    for i, (enrollment_id, lead_id) in enumerate(pairs):
        run_date = base + timedelta(seconds=window * i / max(n, 1))
        scheduler.add_job(burst_common.per_job_touch, "date", run_date=run_date, args=(enrollment_id, lead_id, run_date),
                          id=f"touch-{enrollment_id}")
    schedule = time.perf_counter() - started
    waited = max(0.0, (base + timedelta(seconds=window) - utcnow()).total_seconds())
    time.sleep(waited)  # every job is due now, as every Sequencer enrollment is

    started = time.perf_counter()
    scheduler.resume()
    deadline = started + timeout
    while burst_common.JOB.done + len(errors) < n and time.perf_counter() < deadline:
        time.sleep(0.05)
    drain = time.perf_counter() - started
    executed = burst_common.JOB.done
    finished = executed + len(errors) >= n
    result = {"schedule_seconds": schedule, "drain_seconds": drain, "finished": finished and not errors,
              "executed": executed, "errors": len(errors), "first_errors": errors[:3],
              "waited_for_run_dates_seconds": waited, "peak_rss_mb": peak_rss_mb()}
    if not finished:
        # Jobs still queue in the executor: report and leave without waiting for them.
        print(json.dumps(result), flush=True)
        os._exit(0)
    scheduler.shutdown(wait=True)
    with engine.connect() as conn:
        result["jobs_left"] = conn.execute(sa.text("SELECT count(*) FROM apscheduler_jobs")).scalar_one()
    result["peak_rss_mb"] = peak_rss_mb()
    runtime.dispose()
    return result


# -- the driver ---------------------------------------------------------------------------------------


def run_side(side: str, dbs: Any, sink: SinkProcess, n: int, timeout: float, window: float) -> dict[str, Any]:
    from sequencer.db import make_engine

    url = dbs.create(f"perjob_{side[:3]}_{n}")
    try:
        config = write_worker_config(dbs.dir / f"config_{side}_{n}.toml", db_url=url, smtp_port=sink.port,
                                     batch_size=500, tick_seconds=0.2)
        sink.command("reset")
        load_before = load_average()
        proc = subprocess.run([sys.executable, __file__, "--side", side, "--config", str(config), "--url", url,
                               "--n", str(n), "--timeout", str(timeout), "--window", str(window)],
                              capture_output=True, text=True, timeout=timeout * 3 + 3600)
        if proc.returncode != 0:
            raise SystemExit(f"the {side} side for N={n} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["loadavg_before"], result["loadavg_after"] = load_before, load_average()
        if not result["finished"]:
            time.sleep(1)  # messages in flight when the side gave up
        stats = sink.command("stats")
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT enrollment_id) FROM touches "
                                            "WHERE status = 'sent'")).one()
        except sa.exc.OperationalError:
            rows = (None, None)
        finally:
            engine.dispose()
    finally:
        dbs.drop(url)
    result.update(sink_messages=stats["messages"], sink_distinct_message_ids=stats["distinct_message_ids"],
                  sent_rows=rows[0], distinct_enrollments=rows[1])
    result["delivered_exactly_once"] = (result["finished"] and stats["messages"] == n
                                        and stats["distinct_message_ids"] == n and rows[0] == n and rows[1] == n)
    return result


def describe(side: str, r: dict[str, Any], n: int) -> str:
    drain = (f"drain {r['drain_seconds']:9.2f} s ({n / r['drain_seconds']:7,.0f}/s)" if r["finished"] else
             f"drain DID NOT FINISH in {r['drain_seconds']:.0f} s: {r['executed']:,} of {n:,} sent "
             f"({r['executed'] / r['drain_seconds']:,.0f}/s)")
    return (f"  {side:<11} schedule {r['schedule_seconds']:8.2f} s ({n / max(r['schedule_seconds'], 1e-9):8,.0f}/s)  "
            f"{drain}  peak RSS {r['peak_rss_mb']:7.1f} MB  sink {r['sink_messages']:,} msgs / "
            f"{r['sink_distinct_message_ids']:,} ids  exactly once {'yes' if r['delivered_exactly_once'] else 'NO'}  "
            f"load {r['loadavg_before']} -> {r['loadavg_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="scheduled touches, comma-separated")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="stop waiting for the APScheduler drain after this many seconds (default 3600)")
    parser.add_argument("--window", type=float, default=5.0,
                        help="run dates spread over [t+W, t+2W] after scheduling starts (default 5 s)")
    parser.add_argument("--smoke", action="store_true", help="tiny size for CI: 200, window 1 s")
    parser.add_argument("--side", choices=("sequencer", "apscheduler"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "sequencer":
        print(json.dumps(side_sequencer(args.config, args.url, args.n)), flush=True)
        return 0
    if args.side == "apscheduler":
        print(json.dumps(side_apscheduler(args.config, args.url, args.n, args.timeout, args.window)), flush=True)
        return 0
    if args.smoke:
        args.window = 1.0
    sizes = [200] if args.smoke else [int(s) for s in args.sizes.split(",") if s.strip()]

    print(f"apscheduler_per_job: sizes {sizes}, {args.database}; {os.cpu_count()} cores, "
          f"load average {load_average()}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    sink = SinkProcess()
    try:
        with databases(args.database) as dbs:
            for n in sizes:
                print(f"N = {n:,}", flush=True)
                seq = run_side("sequencer", dbs, sink, n, args.timeout, args.window)
                print(describe("sequencer", seq, n), flush=True)
                aps = run_side("apscheduler", dbs, sink, n, args.timeout, args.window)
                print(describe("apscheduler", aps, n), flush=True)
                ratios = {"schedule": aps["schedule_seconds"] / seq["schedule_seconds"],
                          "drain": aps["drain_seconds"] / seq["drain_seconds"],
                          "peak_rss": aps["peak_rss_mb"] / seq["peak_rss_mb"]}
                note = "" if aps["finished"] else " (drain: at least; APScheduler did not finish)"
                print(f"  ratios APScheduler / Sequencer: schedule {ratios['schedule']:.1f}x, drain "
                      f"{ratios['drain']:.1f}x{note}, peak memory {ratios['peak_rss']:.2f}x", flush=True)
                results[str(n)] = {"sequencer": seq, "apscheduler": aps,
                                   "ratios": {k: round(v, 3) for k, v in ratios.items()},
                                   "apscheduler_finished": aps["finished"]}
    finally:
        sink.close()
    ok = all(side["delivered_exactly_once"] for r in results.values() for side in (r["sequencer"], r["apscheduler"])
             if side["finished"])
    all_once = all(r["sequencer"]["delivered_exactly_once"] and r["apscheduler"]["delivered_exactly_once"]
                   for r in results.values())
    print(f"every finished side delivered every touch exactly once: {'yes' if ok else 'NO'}; "
          f"load average now {load_average()}", flush=True)
    emit_json({"benchmark": "apscheduler_per_job", "database": args.database, "sizes": results,
               "job_threads": JOB_THREADS, "window_seconds": args.window, "timeout": args.timeout, "cores": os.cpu_count(),
               "all_delivered_exactly_once": all_once})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
