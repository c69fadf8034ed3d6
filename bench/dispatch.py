"""Dispatch throughput: the engine against a bare loop doing the same irreducible work.

Loads N due auto-email touches (one enrollment per lead, a one-step cadence whose window is
always open, nothing throttled), starts a counting SMTP sink in its own process (bench/sink.py),
then, in the same run:

1. engine: `Engine(runtime, batch_size=500).run_until_idle()` drains every touch into the sink
   (claim -> plan -> send -> settle, the real email channel over SMTP);
2. bare loop: the simplest code doing the work no sequencer can avoid: for each lead render the
   same subject and body with the same Renderer, build the same multipart text+HTML message with
   the same headers, send it over one smtplib connection, and insert a touches row (Core insert,
   one executemany and commit per 500).

It checks that the sink received exactly N messages with N distinct Message-IDs each time, and
prints both rates (touches/s) and ratio = engine / bare. Target: ratio >= 0.8.

    .venv/bin/python bench/dispatch.py                              # 20,000 touches, SQLite
    .venv/bin/python bench/dispatch.py --database postgresql         # throwaway PostgreSQL cluster
    .venv/bin/python bench/dispatch.py --smoke                       # 200 touches (CI)
    .venv/bin/python bench/dispatch.py --profile /tmp/dispatch    # cProfile: /tmp/dispatch.engine, .bare

The last line of output is a JSON object with every figure. Exits 0 even when the target is missed.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst_common import Lead as BenchLead  # noqa: E402
from burst_common import build_message  # noqa: E402
from common import (  # noqa: E402
    MAILBOX,
    databases,
    emit_json,
    load_world,
    utcnow,
    verdict,
    write_config,
)

import sqlalchemy as sa  # noqa: E402

from sequencer.clock import SystemClock  # noqa: E402
from sequencer.config import load_settings  # noqa: E402
from sequencer.engine import Engine  # noqa: E402
from sequencer.models import Enrollment, Lead, Touch  # noqa: E402
from sequencer.rendering import Renderer  # noqa: E402
from sequencer.runtime import Runtime  # noqa: E402

TARGET = 0.8
BARE_COMMIT_EVERY = 500


class SinkProcess:
    """bench/sink.py in a child process; ask it for counts over a pipe."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sink.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise SystemExit(f"the SMTP sink did not start (it said {line!r})")
        self.port = int(line.split()[1])

    def command(self, name: str) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_engine(runtime: Runtime, batch_size: int, profile: str | None) -> tuple[float, dict[str, Any]]:
    engine = Engine(runtime, batch_size=batch_size)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    report = engine.run_until_idle()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return time.perf_counter() - started, {"claimed": report.claimed, "sent": report.sent, "failed": report.failed,
                                           "deferred": report.deferred, "paused": report.paused}


def run_bare(runtime: Runtime, renderer: Renderer, port: int, mailbox_id: int, profile: str | None) -> tuple[float, int]:
    """The irreducible work, as plainly as it can be written. Returns (seconds, touches)."""
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    count = _bare_loop(runtime, renderer, port, mailbox_id)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return time.perf_counter() - started, count


def _bare_loop(runtime: Runtime, renderer: Renderer, port: int, mailbox_id: int) -> int:
    now = utcnow()
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Enrollment.id, Lead.id, Lead.email, Lead.phone, Lead.external_id, Lead.first_name,
                      Lead.last_name, Lead.company, Lead.domain, Lead.title, Lead.country, Lead.timezone)
            .join(Lead, Lead.id == Enrollment.lead_id).order_by(Enrollment.id)).all()
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        smtp.ehlo()
        pending: list[dict[str, Any]] = []
        for enrollment_id, lead_id, email, phone, external_id, first, last, company, domain, title, country, zone in rows:
            lead = BenchLead(enrollment_id=enrollment_id, lead_id=lead_id, email=email, first_name=first,
                             last_name=last, company=company, domain=domain, title=title, country=country,
                             timezone=zone, external_id=external_id, phone=phone)
            message, row = build_message(renderer, lead, "bare")
            smtp.sendmail(MAILBOX, [email], message.as_bytes())
            pending.append({**row, "mailbox_id": mailbox_id, "due_at": now, "sent_at": now, "created_at": now,
                            "updated_at": now})
            if len(pending) >= BARE_COMMIT_EVERY:
                conn.execute(sa.insert(Touch), pending)
                conn.commit()
                pending = []
        if pending:
            conn.execute(sa.insert(Touch), pending)
            conn.commit()
        smtp.quit()
    return len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--touches", type=int, default=20_000, help="due touches to drain (default 20,000)")
    parser.add_argument("--batch-size", type=int, default=500, help="engine batch size (default 500)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--smoke", action="store_true", help="tiny size for CI: 200 touches")
    parser.add_argument("--profile", metavar="PATH", help="write cProfiles of both parts to PATH.engine and PATH.bare")
    args = parser.parse_args()
    n = 200 if args.smoke else args.touches

    print(f"dispatch: {n:,} due auto-email touches, {args.database}, engine batch size {args.batch_size}", flush=True)
    sink = SinkProcess()
    try:
        with databases(args.database) as dbs:
            url = dbs.create("dispatch")
            world = load_world(url, leads=n, due=n)
            assert world.due == n, f"expected {n} due enrollments, loaded {world.due}"
            print(f"setup: {n:,} leads and enrollments loaded in {world.seconds:.1f} s", flush=True)
            config = write_config(dbs.dir / "config.toml", db_url=url, smtp_port=sink.port,
                                  batch_size=args.batch_size)
            runtime = Runtime(load_settings(config), SystemClock())
            renderer = runtime.renderer  # built (and plugins loaded) before either timer starts
            try:
                engine_seconds, report = run_engine(runtime, args.batch_size, args.profile and args.profile + ".engine")
                engine_sink = sink.command("reset")
                with runtime.engine.connect() as conn:
                    engine_rows = conn.execute(sa.select(sa.func.count()).select_from(Touch)
                                               .where(Touch.status == "sent", Touch.step_key == "intro")).scalar_one()
                bare_seconds, bare_count = run_bare(runtime, renderer, sink.port, world.mailbox_id,
                                                   args.profile and args.profile + ".bare")
                bare_sink = sink.command("reset")
            finally:
                runtime.dispose()
    finally:
        sink.close()

    engine_rate = n / engine_seconds
    bare_rate = bare_count / bare_seconds
    ratio = engine_rate / bare_rate
    engine_ok = (report["sent"] == n and engine_rows == n and engine_sink["messages"] == n
                 and engine_sink["distinct_message_ids"] == n)
    bare_ok = bare_count == n and bare_sink["messages"] == n and bare_sink["distinct_message_ids"] == n
    print(f"engine: {n:,} touches in {engine_seconds:.2f} s = {engine_rate:,.0f} touches/s "
          f"(report {report}; sink got {engine_sink['messages']:,} messages, "
          f"{engine_sink['distinct_message_ids']:,} distinct Message-IDs; {engine_rows:,} touches sent in the database)")
    print(f"bare loop: {bare_count:,} touches in {bare_seconds:.2f} s = {bare_rate:,.0f} touches/s "
          f"(sink got {bare_sink['messages']:,} messages, {bare_sink['distinct_message_ids']:,} distinct Message-IDs)")
    print(f"all delivered: {'yes' if engine_ok and bare_ok else 'NO'}")
    print(f"ratio engine/bare: {ratio:.2f} (target >= {TARGET}): {verdict(ratio >= TARGET)}", flush=True)
    emit_json({
        "benchmark": "dispatch", "database": args.database, "touches": n, "batch_size": args.batch_size,
        "setup_seconds": round(world.seconds, 3),
        "engine": {"seconds": round(engine_seconds, 3), "rate": round(engine_rate, 1), "report": report,
                   "sink_messages": engine_sink["messages"],
                   "sink_distinct_message_ids": engine_sink["distinct_message_ids"], "sent_rows": engine_rows},
        "bare": {"seconds": round(bare_seconds, 3), "rate": round(bare_rate, 1), "touches": bare_count,
                 "sink_messages": bare_sink["messages"], "sink_distinct_message_ids": bare_sink["distinct_message_ids"]},
        "ratio": round(ratio, 3), "target": TARGET, "target_met": ratio >= TARGET,
        "all_delivered": engine_ok and bare_ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
