"""Tick scaling: does a tick cost the same with 10,000 or 1,000,000 active enrollments?

For each size N (small, large) it loads N active enrollments of which `due` are due (the rest are
due in ten years), then starts a fresh worker process that:

* swaps the email channel's send_batch for a no-op that accepts everything at once (so SMTP time
  does not hide the engine's own cost; the real EmailChannel.prepare still runs), by shadowing
  `runtime.plugins.channel` on the instance with a function that returns a `NullEmailChannel`
  (an EmailChannel subclass configured with the real channel's context) for "email";
* counts the SQL statements of one `Engine.run_batch()` (a `before_cursor_execute` listener on the
  runtime's engine) at batch sizes due/10 and due (100 and 1000), split into the batch's own
  (claim and plan) and each group's of `[engine] max_in_flight` touches (arm, send, settle; 50: 2
  and 20 groups): the batch's and every group's must be the same number whatever the batch size
  (set-based);
* times `Engine.run_batch()` with batch_size=due (claim + plan + send + settle of every due touch):
  the first such tick (cold: statement cache, calendars) and the median of `--repeat` warm ticks,
  resetting the same due enrollments (and deleting their touches) between ticks;
* times `Engine.housekeeping()`, which every scheduled tick (`run_until_idle`) runs before its batches;
* reports its peak RSS (`ru_maxrss`) at the end.

Targets: warm tick time large/small <= 1.5; statements per batch (claim and plan) and per group
equal for batches of 100 and 1000; peak memory growth small -> large < 50 MB.

    .venv/bin/python bench/tick_scale.py                           # 10,000 vs 1,000,000, SQLite
    .venv/bin/python bench/tick_scale.py --database postgresql      # throwaway PostgreSQL cluster
    .venv/bin/python bench/tick_scale.py --smoke                    # 2,000 vs 20,000, 100 due (CI)
    .venv/bin/python bench/tick_scale.py --small 10000 --large 100000 --due 1000 --repeat 5

The last line of output is a JSON object with every figure. Exits 0 even when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import databases, emit_json, load_world, utcnow, verdict, write_config  # noqa: E402

import sqlalchemy as sa  # noqa: E402

TIME_RATIO_TARGET = 1.5
MEMORY_GROWTH_TARGET_MB = 50.0


# -- the worker side (a fresh process per size) -------------------------------------------------


def install_null_channel(runtime: Any) -> None:
    """Make "email" accept every touch instantly; everything before send_batch stays real."""
    from sequencer.channels import OutboundTouch, SendResult
    from sequencer_email.channel import EmailChannel

    class NullEmailChannel(EmailChannel):
        def send_batch(self, touches: list[OutboundTouch]) -> list[SendResult]:
            return [SendResult(t.touch_id, accepted=True, provider_id=t.message_id, provider_status="250 no-op")
                    for t in touches]

    plugins = runtime.plugins
    real_channel = plugins.channel
    null = NullEmailChannel()
    null.configure(real_channel("email").context)
    plugins.channel = lambda name: null if name == "email" else real_channel(name)  # shadows the method


class StatementCounter:
    """Statements of a batch: its own (claim, plan) and each group's, told apart by wrapping Engine._run_group."""

    def __init__(self, engine: sa.Engine) -> None:
        from sequencer.engine import Engine

        self.active = False
        self.batch: list[str] = []
        self.groups: list[list[str]] = []
        self.current: list[str] | None = None
        sa.event.listen(engine, "before_cursor_execute", self._count)
        run_group = Engine._run_group

        def counted_group(engine: Engine, *args: Any) -> None:
            self.current = []
            self.groups.append(self.current)
            try:
                run_group(engine, *args)
            finally:
                self.current = None

        Engine._run_group = counted_group  # this process is the benchmark's own worker

    def start(self, active: bool) -> None:
        self.active, self.batch, self.groups = active, [], []

    def _count(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if self.active:
            (self.current if self.current is not None else self.batch).append(" ".join(statement.split())[:100])


def reset_due(runtime: Any, due_ids: list[int], due_at: Any) -> None:
    """Put the due enrollments back as they were before the tick, and forget their touches."""
    from sequencer.models import Enrollment, Touch, TouchAttempt

    with runtime.session() as session:
        touch_ids = sa.select(Touch.id).where(Touch.enrollment_id.in_(due_ids)).scalar_subquery()
        session.execute(sa.delete(TouchAttempt).where(TouchAttempt.touch_id.in_(touch_ids)))
        session.execute(sa.delete(Touch).where(Touch.enrollment_id.in_(due_ids)))
        session.execute(sa.update(Enrollment).where(Enrollment.id.in_(due_ids)).values(
            state="active", step_position=0, next_due_at=due_at, exit_reason=None, exited_at=None, lease_owner=None,
            lease_until=None, thread_message_id=None, thread_subject=None, thread_references=None,
            paused_reason=None))


def worker(config: str, due: int, repeat: int) -> dict[str, Any]:
    from sequencer.clock import SystemClock
    from sequencer.config import load_settings
    from sequencer.engine import Engine
    from sequencer.models import Enrollment
    from sequencer.runtime import Runtime

    runtime = Runtime(load_settings(config), SystemClock())
    install_null_channel(runtime)
    counter = StatementCounter(runtime.engine)
    now = utcnow()
    with runtime.session() as session:
        rows = session.execute(sa.select(Enrollment.id, Enrollment.next_due_at)
                               .where(Enrollment.state == "active", Enrollment.next_due_at <= now)).all()
    due_ids, due_at = [r.id for r in rows], rows[0].next_due_at
    if len(due_ids) != due:
        raise SystemExit(f"expected {due} due enrollments, found {len(due_ids)}")

    def tick(batch_size: int, count: bool = False) -> tuple[float, Any, dict[str, Any]]:
        engine = Engine(runtime, batch_size=batch_size)
        counter.start(count)
        started = time.perf_counter()
        report = engine.run_batch()
        seconds = time.perf_counter() - started
        counter.active = False
        reset_due(runtime, due_ids, due_at)
        return seconds, report, {"batch": counter.batch, "groups": counter.groups}

    # Batch sizes 100 and 1000 for 1,000 due (10 and 100 for the smoke size): the larger one is the tick.
    statements: dict[int, dict[str, Any]] = {}
    cold = 0.0
    for size in (max(1, due // 10), due):
        seconds, report, stmts = tick(size, count=True)
        statements[size] = stmts
        if report.sent != size:
            raise SystemExit(f"batch of {size}: sent {report.sent}, expected {size} ({report})")
        cold = seconds
    warm: list[float] = []
    for _ in range(repeat):
        seconds, report, _ = tick(due)
        if report.claimed != due or report.sent != due:
            raise SystemExit(f"tick sent {report.sent} of {due} ({report})")
        warm.append(seconds)
    housekeeping: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        Engine(runtime).housekeeping()
        housekeeping.append(time.perf_counter() - started)
    runtime.dispose()
    return {
        "tick_cold_seconds": cold,
        "tick_seconds": statistics.median(warm),
        "tick_all_seconds": warm,
        "housekeeping_seconds": statistics.median(housekeeping),
        "max_in_flight": runtime.settings.engine.max_in_flight,
        # Per batch size: statements of the batch (claim and plan), and of each group in turn.
        "statements": {str(k): {"batch": len(v["batch"]), "groups": [len(g) for g in v["groups"]]}
                       for k, v in statements.items()},
        "statement_texts": {str(k): {"batch": v["batch"], "first_group": v["groups"][0]}
                            for k, v in statements.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _statements(per_size: dict[str, dict[str, Any]]) -> str:
    """'100: batch 16, 2 groups of 9; 1000: batch 16, 20 groups of 9' (groups of unequal cost listed)."""
    parts = []
    for size, c in per_size.items():
        groups = c["groups"]
        shown = (f"{len(groups)} group{'s' * (len(groups) != 1)} of {groups[0]}" if len(set(groups)) == 1
                 else f"groups of {groups}")
        parts.append(f"{size}: batch {c['batch']}, {shown}")
    return "; ".join(parts)


# -- the driver -----------------------------------------------------------------------------------------


def measure(dbs: Any, n: int, due: int, repeat: int) -> dict[str, Any]:
    url = dbs.create(f"tick_{n}")
    try:
        world = load_world(url, leads=n, due=due)
        print(f"  {n:,} enrollments ({world.due:,} due) loaded in {world.seconds:.1f} s", flush=True)
        config = write_config(dbs.dir / f"config_{n}.toml", db_url=url, smtp_port=25, batch_size=1000)
        proc = subprocess.run([sys.executable, __file__, "--worker", str(config), "--due", str(world.due),
                               "--repeat", str(repeat)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the worker for N={n} failed:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["load_seconds"] = world.seconds
        return result
    finally:
        dbs.drop(url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="active enrollments, small case (default 10,000)")
    parser.add_argument("--large", type=int, default=1_000_000,
                        help="active enrollments, large case (default 1,000,000)")
    parser.add_argument("--due", type=int, default=1000, help="due enrollments among them (default 1,000)")
    parser.add_argument("--repeat", type=int, default=5, help="warm ticks timed per size (default 5; median kept)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI: 2,000 vs 20,000, 100 due")
    parser.add_argument("--show-statements", action="store_true", help="print the SQL of each counted batch")
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.due, args.repeat)))
        return 0
    if args.smoke:
        args.small, args.large, args.due, args.repeat = 2_000, 20_000, 100, 2

    print(f"tick_scale: {args.due:,} due among {args.small:,} and among {args.large:,} active enrollments, "
          f"{args.database}", flush=True)
    results: dict[int, dict[str, Any]] = {}
    with databases(args.database) as dbs:
        for n in (args.small, args.large):
            results[n] = measure(dbs, n, args.due, args.repeat)
    small, large = results[args.small], results[args.large]
    ratio = large["tick_seconds"] / small["tick_seconds"]
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    counts = {n: r["statements"] for n, r in results.items()}
    # Equal: one batch count and one group count, whatever the batch size (and so the number of groups).
    equal = all(len({c["batch"] for c in per_size.values()}) == 1
                and len({g for c in per_size.values() for g in c["groups"]}) == 1 for per_size in counts.values())
    for n, r in results.items():
        print(f"N={n:>9,}: tick {r['tick_seconds'] * 1000:7.1f} ms (cold {r['tick_cold_seconds'] * 1000:.1f} ms; "
              f"warm ticks {', '.join(f'{s * 1000:.0f}' for s in r['tick_all_seconds'])} ms), "
              f"housekeeping {r['housekeeping_seconds'] * 1000:.1f} ms, "
              f"statements per batch and group {_statements(r['statements'])}, "
              f"peak RSS {r['peak_rss_mb']:.1f} MB")
        if args.show_statements:
            for size, texts in r["statement_texts"].items():
                for part, lines in texts.items():
                    print(f"  batch of {size}, {part.replace('_', ' ')}:")
                    for text in lines:
                        print(f"    {text}")
    hk_ratio = large["housekeeping_seconds"] / max(small["housekeeping_seconds"], 1e-9)
    print(f"tick time ratio large/small: {ratio:.2f} (target <= {TIME_RATIO_TARGET}): "
          f"{verdict(ratio <= TIME_RATIO_TARGET)}")
    print(f"statements per batch and per group equal for batch sizes {' and '.join(counts[args.small])}: "
          f"{'yes' if equal else 'NO'} ({counts}): {verdict(equal)}")
    print(f"peak memory growth small->large: {growth:+.1f} MB (target < {MEMORY_GROWTH_TARGET_MB:.0f} MB): "
          f"{verdict(growth < MEMORY_GROWTH_TARGET_MB)}")
    print(f"(not a target) housekeeping ratio large/small: {hk_ratio:.1f}", flush=True)
    emit_json({
        "benchmark": "tick_scale", "database": args.database, "small": args.small, "large": args.large,
        "due": args.due,
        "sizes": {str(n): {k: v for k, v in r.items() if k != "statement_texts"} for n, r in results.items()},
        "tick_ratio": round(ratio, 3), "tick_ratio_target": TIME_RATIO_TARGET,
        "tick_ratio_met": ratio <= TIME_RATIO_TARGET,
        "statements": {str(n): c for n, c in counts.items()}, "statements_equal": equal,
        "memory_growth_mb": round(growth, 1), "memory_growth_target_mb": MEMORY_GROWTH_TARGET_MB,
        "memory_growth_met": growth < MEMORY_GROWTH_TARGET_MB,
        "housekeeping_ratio": round(hk_ratio, 2),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
