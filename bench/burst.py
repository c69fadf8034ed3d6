"""Burst: N touches due at the same instant, drained by 1, 2, 4 `sequencer worker` processes.

For each configuration (PostgreSQL with each worker count, SQLite with one worker; a fresh
database each time) it:

1. loads N leads, one enrollment each in a one-step auto-email cadence that is always open
   (bench/common.load_world), then sets every next_due_at to the same instant T0 = now;
2. starts the worker processes at once: real `sequencer worker --batch-size B` subprocesses
   (continuous mode: the APScheduler tick job, tick_seconds 0.2), sending over SMTP to the
   counting sink (bench/sink.py, its own process);
3. waits until the sink holds N messages, samples the CPU seconds of every process from /proc
   (each worker; the PostgreSQL cluster: postmaster + backends, exited ones included; the sink),
   then stops the workers with SIGTERM and checks their exit codes;
4. reads the outcome from the database: touches sent exactly once (N rows, N distinct
   Message-IDs at the sink), every enrollment finished, and lateness = touches.sent_at -
   touches.due_at (p50, p99, max).

In the same run, on a fresh database of each kind, it times bench/dispatch.py's bare loop (the
irreducible work: render, build the message, one SMTP connection, insert touches rows) with the
same sink, and reports its CPU the same way.

Targets: on PostgreSQL 2 workers >= 1.6x one worker (meaningful only where neither the sink nor
the database is the bottleneck: look at the CPU columns); one worker >= 0.8x the bare loop.
The machine is shared: the load average before and after each configuration is printed with it.

    .venv/bin/python bench/burst.py                                    # 100,000; PG 1,2,4 workers; SQLite 1
    .venv/bin/python bench/burst.py --touches 20000 --workers 1,2 --databases postgresql
    .venv/bin/python bench/burst.py --smoke                            # 600 touches, workers 1,2 (CI)

The last line of output is a JSON object with every figure. Exits 0 even when a target is missed,
1 if any configuration did not deliver every touch exactly once.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst_common import ClusterCpu, load_average, process_cpu, write_worker_config  # noqa: E402
from common import databases, emit_json, load_world, utcnow, verdict  # noqa: E402
from dispatch import SinkProcess, run_bare  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from sequencer.clock import SystemClock  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.db import make_engine  # noqa: E402
from sequencer.models import Enrollment, Touch  # noqa: E402
from sequencer.runtime import Runtime  # noqa: E402

SCALE_TARGET = 1.6
BARE_TARGET = 0.8
SEQUENCER = str(Path(sys.executable).with_name("sequencer"))
CORES = os.cpu_count() or 1


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def worker_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env["SEQUENCER_CONFIG"] = str(config)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def outcome(url: str, n: int) -> dict[str, Any]:
    """What the database says: touch states, enrollment states, lateness."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            touch_states = dict(conn.execute(sa.select(Touch.status, sa.func.count()).group_by(Touch.status)).all())
            states = dict(conn.execute(sa.select(Enrollment.state, sa.func.count()).group_by(Enrollment.state)).all())
            distinct = conn.execute(sa.select(sa.func.count(sa.distinct(Touch.enrollment_id)))
                                    .where(Touch.step_key == "intro")).scalar_one()
            rows = conn.execute(sa.select(Touch.sent_at, Touch.due_at).where(Touch.status == "sent")).all()
    finally:
        engine.dispose()
    lateness = sorted((sent - due).total_seconds() for sent, due in rows if sent and due)
    last_sent = max((sent for sent, _ in rows if sent), default=None)
    return {"touch_states": touch_states, "enrollment_states": states, "distinct_enrollments": distinct,
            "lateness_p50": percentile(lateness, 50), "lateness_p99": percentile(lateness, 99),
            "lateness_max": lateness[-1] if lateness else float("nan"), "last_sent_at": last_sent}


def run_workers(dbs: Any, sink: SinkProcess, kind: str, workers: int, n: int, batch_size: int, tick: float,
                timeout: float, logs: Path) -> dict[str, Any]:
    load_before = load_average()
    url = dbs.create(f"burst_{kind[:2]}_{workers}w")
    try:
        world = load_world(url, leads=n, due=n)
        assert world.due == n, f"expected {n} due enrollments, loaded {world.due}"
        config = write_worker_config(dbs.dir / f"config_{kind}_{workers}.toml", db_url=url, smtp_port=sink.port,
                                     batch_size=batch_size, tick_seconds=tick)
        cluster = ClusterCpu(dbs.cluster.data if dbs.cluster else None)
        sink.command("reset")
        engine = make_engine(url)
        with engine.begin() as conn:
            t0 = utcnow()
            conn.execute(sa.update(Enrollment).values(next_due_at=t0))
        engine.dispose()
        # The burst: every touch is due at t0 and the workers start now.
        started = time.monotonic()
        pg0, sink0, (busy0, total0) = cluster.sample(), process_cpu(sink.proc.pid), machine_cpu()
        procs = []
        for number in range(workers):
            log = open(logs / f"{kind}-{workers}w-{number}.log", "w", encoding="utf-8")  # noqa: SIM115
            procs.append((subprocess.Popen([SEQUENCER, "--config", str(config), "worker", "--batch-size",
                                            str(batch_size)], env=worker_env(config), stdout=log,
                                           stderr=subprocess.STDOUT), log))
        first = last = None
        messages = 0
        deadline = started + timeout
        while time.monotonic() < deadline:
            messages = sink.command("stats")["messages"]
            now = time.monotonic()
            if messages and first is None:
                first = now - started
            if messages >= n:
                last = now - started
                break
            if all(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.05)
        # CPU just before stopping: the workers' own, the cluster's (all backends), the sink's.
        worker_cpu = [process_cpu(p.pid) for p, _ in procs]
        pg_cpu, sink_cpu = cluster.sample() - pg0, process_cpu(sink.proc.pid) - sink0
        busy1, total1 = machine_cpu()
        elapsed = time.monotonic() - started
        stop_started = time.monotonic()
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p, log in procs:
            try:
                codes.append(p.wait(timeout=90))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(f"killed ({p.wait()})")
            log.close()
        stop_seconds = time.monotonic() - stop_started
        stats = sink.command("stats")
        db = outcome(url, n)
    finally:
        dbs.drop(url)
    load_after = load_average()
    seconds = last if last is not None else float("nan")
    delivered = (last is not None and stats["messages"] == n and stats["distinct_message_ids"] == n
                 and db["touch_states"] == {"sent": n} and db["distinct_enrollments"] == n
                 and db["enrollment_states"] == {"finished": n})
    result = {
        "database": kind, "workers": workers, "touches": n, "batch_size": batch_size, "tick_seconds": tick,
        "seconds": round(seconds, 3), "rate": round(n / seconds, 1) if last else 0.0,
        "first_message_seconds": round(first, 3) if first is not None else None,
        "steady_rate": round((n - 1) / (last - first), 1) if last and first and last > first else None,
        "lateness_p50": round(db["lateness_p50"], 3), "lateness_p99": round(db["lateness_p99"], 3),
        "lateness_max": round(db["lateness_max"], 3),
        "cpu": {"workers": [round(c, 2) for c in worker_cpu], "workers_total": round(sum(worker_cpu), 2),
                "postgresql": round(pg_cpu, 2) if dbs.cluster else None, "sink": round(sink_cpu, 2)},
        # CPU per touch does not depend on how much of the machine other work leaves us.
        "cpu_ms_per_touch": {"workers": round(1000 * sum(worker_cpu) / n, 3),
                             "postgresql": round(1000 * pg_cpu / n, 3) if dbs.cluster else None,
                             "sink": round(1000 * sink_cpu / n, 3)},
        "machine_cpu_busy": round((busy1 - busy0) / max(total1 - total0, 1e-9), 3),
        "measured_seconds": round(elapsed, 3),
        "stop_seconds": round(stop_seconds, 2), "exit_codes": codes,
        "sink_messages": stats["messages"], "sink_distinct_message_ids": stats["distinct_message_ids"],
        "touch_states": db["touch_states"], "enrollment_states": db["enrollment_states"],
        "delivered_exactly_once": delivered, "loadavg_before": load_before, "loadavg_after": load_after,
    }
    return result


def run_bare_loop(dbs: Any, sink: SinkProcess, kind: str, n: int) -> dict[str, Any]:
    """bench/dispatch.py's bare loop, in this process, on a fresh database of the same kind, same sink."""
    load_before = load_average()
    url = dbs.create(f"burst_{kind[:2]}_bare")
    try:
        world = load_world(url, leads=n, due=n)
        config = write_worker_config(dbs.dir / f"config_{kind}_bare.toml", db_url=url, smtp_port=sink.port,
                                     batch_size=500, tick_seconds=0.2)
        runtime = Runtime(load_settings(config), SystemClock())
        try:
            renderer = runtime.renderer
            cluster = ClusterCpu(dbs.cluster.data if dbs.cluster else None)
            sink.command("reset")
            pg0, sink0 = cluster.sample(), process_cpu(sink.proc.pid)
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            busy0, total0 = machine_cpu()
            seconds, count = run_bare(runtime, renderer, sink.port, world.mailbox_id, None)
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            busy1, total1 = machine_cpu()
            pg_cpu, sink_cpu = cluster.sample() - pg0, process_cpu(sink.proc.pid) - sink0
            stats = sink.command("reset")
        finally:
            runtime.dispose()
    finally:
        dbs.drop(url)
    loop_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return {"database": kind, "touches": count, "seconds": round(seconds, 3), "rate": round(count / seconds, 1),
            "cpu": {"loop": round(loop_cpu, 2), "postgresql": round(pg_cpu, 2) if dbs.cluster else None,
                    "sink": round(sink_cpu, 2)},
            "cpu_ms_per_touch": {"loop": round(1000 * loop_cpu / max(count, 1), 3),
                                 "postgresql": round(1000 * pg_cpu / max(count, 1), 3) if dbs.cluster else None,
                                 "sink": round(1000 * sink_cpu / max(count, 1), 3)},
            "machine_cpu_busy": round((busy1 - busy0) / max(total1 - total0, 1e-9), 3),
            "sink_messages": stats["messages"], "sink_distinct_message_ids": stats["distinct_message_ids"],
            "delivered_exactly_once": count == n and stats["messages"] == n and stats["distinct_message_ids"] == n,
            "loadavg_before": load_before, "loadavg_after": load_average()}


def print_row(r: dict[str, Any]) -> None:
    cpu = r["cpu"]
    secs = r["seconds"]
    share = (lambda c: f"{c:6.1f}s {100 * c / secs:4.0f}%") if secs and secs == secs else (lambda c: f"{c:6.1f}s")
    workers = "+".join(f"{c:.1f}" for c in cpu["workers"])
    pg = share(cpu["postgresql"]) if cpu["postgresql"] is not None else "     -      "
    print(f"{r['database']:<10} {r['workers']:>2} worker{'s' if r['workers'] > 1 else ' '} "
          f"{r['seconds']:8.2f} s {r['rate']:8,.0f}/s  first msg {r['first_message_seconds'] or 0:5.2f} s  "
          f"late p50 {r['lateness_p50']:7.2f} s p99 {r['lateness_p99']:7.2f} s  "
          f"cpu workers {workers} s ({100 * cpu['workers_total'] / secs:.0f}% of wall)  pg {pg}  sink {share(cpu['sink'])}  "
          f"cpu ms/touch workers {r['cpu_ms_per_touch']['workers']:.2f}  "
          f"machine busy {100 * r['machine_cpu_busy']:.0f}%  exactly once {'yes' if r['delivered_exactly_once'] else 'NO'}"
          f"  load {r['loadavg_before']} -> {r['loadavg_after']}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--touches", type=int, default=100_000, help="touches due at once (default 100,000)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts on PostgreSQL (default 1,2,4)")
    parser.add_argument("--databases", default="postgresql,sqlite", help="postgresql and/or sqlite (SQLite: 1 worker)")
    parser.add_argument("--batch-size", type=int, default=500, help="worker --batch-size (default 500)")
    parser.add_argument("--tick", type=float, default=0.2, help="[engine] tick_seconds of the workers (default 0.2)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up on a configuration after this (s)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare loop")
    parser.add_argument("--smoke", action="store_true", help="tiny size for CI: 600 touches, workers 1,2, batch 100")
    args = parser.parse_args()
    if args.smoke:
        args.touches, args.workers, args.batch_size = 600, "1,2", 100
    n = args.touches
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("postgresql", "sqlite"):
            raise SystemExit(f"--databases: unknown database {kind!r}")

    print(f"burst: {n:,} touches due at one instant; workers {counts} on PostgreSQL, 1 on SQLite; "
          f"batch {args.batch_size}, tick {args.tick}s; {CORES} cores, load average {load_average()}", flush=True)
    # Worker logs (kept only when a configuration did not deliver every touch exactly once).
    logs = Path(os.environ.get("BURST_LOGS", "/tmp")) / f"burst-logs-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    bare: dict[str, dict[str, Any]] = {}
    sink = SinkProcess()
    try:
        for kind in kinds:
            with databases(kind) as dbs:
                for workers in (counts if kind == "postgresql" else [1]):
                    result = run_workers(dbs, sink, kind, workers, n, args.batch_size, args.tick, args.timeout, logs)
                    print_row(result)
                    runs.append(result)
                if not args.no_bare:
                    b = run_bare_loop(dbs, sink, kind, n)
                    bare[kind] = b
                    pg = f"  pg {b['cpu']['postgresql']:.1f} s" if b["cpu"]["postgresql"] is not None else ""
                    print(f"{kind:<10} bare loop  {b['seconds']:8.2f} s {b['rate']:8,.0f}/s  cpu loop "
                          f"{b['cpu']['loop']:.1f} s{pg}  sink {b['cpu']['sink']:.1f} s  cpu ms/touch loop "
                          f"{b['cpu_ms_per_touch']['loop']:.2f}  machine busy "
                          f"{100 * b['machine_cpu_busy']:.0f}%  exactly once "
                          f"{'yes' if b['delivered_exactly_once'] else 'NO'}  load {b['loadavg_before']} -> "
                          f"{b['loadavg_after']}", flush=True)
    finally:
        sink.close()

    by = {(r["database"], r["workers"]): r for r in runs}
    ratios: dict[str, Any] = {}
    one_pg = by.get(("postgresql", 1))
    for workers in counts:
        r = by.get(("postgresql", workers))
        if one_pg and r and workers != 1 and one_pg["rate"]:
            ratios[f"postgresql_{workers}w_over_1w"] = round(r["rate"] / one_pg["rate"], 3)
    for kind in kinds:
        r = by.get((kind, 1))
        if r and kind in bare and bare[kind]["rate"]:
            ratios[f"{kind}_1w_over_bare"] = round(r["rate"] / bare[kind]["rate"], 3)
    print()
    if "postgresql_2w_over_1w" in ratios:
        ok = ratios["postgresql_2w_over_1w"] >= SCALE_TARGET
        print(f"PostgreSQL 2 workers / 1 worker: {ratios['postgresql_2w_over_1w']:.2f}x (target >= {SCALE_TARGET} "
              f"where the sink and the database are not the bottleneck; {CORES} cores): {verdict(ok)}")
    if "postgresql_4w_over_1w" in ratios:
        print(f"PostgreSQL 4 workers / 1 worker: {ratios['postgresql_4w_over_1w']:.2f}x")
    for kind in kinds:
        key = f"{kind}_1w_over_bare"
        if key in ratios:
            print(f"{kind} 1 worker / bare loop: {ratios[key]:.2f} (target >= {BARE_TARGET}): "
                  f"{verdict(ratios[key] >= BARE_TARGET)}")
    all_once = all(r["delivered_exactly_once"] for r in runs) and all(b["delivered_exactly_once"] for b in bare.values())
    if all_once:
        shutil.rmtree(logs, ignore_errors=True)
    print(f"every touch delivered exactly once in every configuration: {'yes' if all_once else 'NO'}; "
          f"load average now {load_average()}" + ("" if all_once else f"; worker logs kept in {logs}"), flush=True)
    emit_json({"benchmark": "burst", "touches": n, "workers": counts, "databases": kinds, "cores": CORES,
               "batch_size": args.batch_size, "tick_seconds": args.tick, "runs": runs, "bare": bare,
               "ratios": ratios, "scale_target": SCALE_TARGET, "bare_target": BARE_TARGET,
               "all_delivered_exactly_once": all_once})
    return 0 if all_once else 1


if __name__ == "__main__":
    sys.exit(main())
