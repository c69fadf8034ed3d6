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

With `--channel sms` the touches are auto-SMS steps to leads with SMS consent (contact hours
all day, numbers unthrottled) and the provider is the tests' fake Twilio in its own process
(bench/twilio_fake.py): the engine sends through the SMS plugin (sticky pool numbers and rate
slots taken per group, then the group's texts with the real twilio SDK's asyncio client,
`[plugins.sms] concurrent_requests` at once, default 4; `--concurrent-requests 1` sends them one
by one); the bare loop renders the same text with the same Renderer, calls
`client.messages.create` with the same SDK over one client, one text at a time, and inserts a
touches row. Both must leave N accepted messages to N distinct numbers at the fake.

    .venv/bin/python bench/dispatch.py                              # 20,000 touches, SQLite
    .venv/bin/python bench/dispatch.py --database postgresql         # throwaway PostgreSQL cluster
    .venv/bin/python bench/dispatch.py --smoke                       # 200 touches (CI)
    .venv/bin/python bench/dispatch.py --profile /tmp/dispatch    # cProfile: /tmp/dispatch.engine, .bare
    .venv/bin/python bench/dispatch.py --channel sms                 # 5,000 auto-SMS touches to the fake Twilio

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
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from burst_common import Lead as BenchLead  # noqa: E402
from burst_common import OWNER, SENDER, build_message  # noqa: E402
from common import (  # noqa: E402
    BASE_URL,
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
from sequencer.db import make_engine  # noqa: E402
from sequencer.models import Enrollment, Lead, Step, Touch  # noqa: E402
from sequencer.rendering import Renderer  # noqa: E402
from sequencer.runtime import Runtime  # noqa: E402

TARGET = 0.8
BARE_COMMIT_EVERY = 500


class SinkProcess:
    """bench/sink.py (or another counting provider, `script`) in a child process; ask it for counts over a pipe."""

    def __init__(self, script: str = "sink.py") -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name(script))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise SystemExit(f"{script} did not start (it said {line!r})")
        # PORT <n>, then what else the provider tells its clients (the fake Twilio: its SID and token).
        self.port, *self.words = line.split()[1:]
        self.port = int(self.port)

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
    return timed(lambda: _bare_loop(runtime, renderer, port, mailbox_id), profile)


def timed(work: Callable[[], int], profile: str | None) -> tuple[float, int]:
    """Run `work` (profiled into `profile` when given); return its seconds and its count."""
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    count = work()
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return time.perf_counter() - started, count


class TouchRows:
    """The touches rows a bare loop records: one executemany and commit per BARE_COMMIT_EVERY."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.pending: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if len(self.pending) >= BARE_COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.conn.execute(sa.insert(Touch), self.pending)
            self.conn.commit()
            self.pending = []


def _bare_loop(runtime: Runtime, renderer: Renderer, port: int, mailbox_id: int) -> int:
    now = utcnow()
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Enrollment.id, Lead.id, Lead.email, Lead.phone, Lead.external_id, Lead.first_name,
                      Lead.last_name, Lead.company, Lead.domain, Lead.title, Lead.country, Lead.timezone)
            .join(Lead, Lead.id == Enrollment.lead_id).order_by(Enrollment.id)).all()
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
        smtp.ehlo()
        inserts = TouchRows(conn)
        for enrollment_id, lead_id, email, phone, external_id, first, last, company, domain, title, country, zone in rows:
            lead = BenchLead(enrollment_id=enrollment_id, lead_id=lead_id, email=email, first_name=first,
                             last_name=last, company=company, domain=domain, title=title, country=country,
                             timezone=zone, external_id=external_id, phone=phone)
            message, row = build_message(renderer, lead, "bare")
            smtp.sendmail(MAILBOX, [email], message.as_bytes())
            inserts.add({**row, "mailbox_id": mailbox_id, "due_at": now, "sent_at": now, "created_at": now,
                         "updated_at": now})
        inserts.flush()
        smtp.quit()
    return len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--touches", type=int, help="due touches to drain (default 20,000 emails, 5,000 texts)")
    parser.add_argument("--channel", choices=("email", "sms"), default="email",
                        help="email to the SMTP sink, or sms to the fake Twilio (default email)")
    parser.add_argument("--batch-size", type=int, default=500, help="engine batch size (default 500)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--smoke", action="store_true", help="tiny size for CI: 200 touches")
    parser.add_argument("--concurrent-requests", type=int,
                        help="sms: [plugins.sms] concurrent_requests for the engine (default: the plugin's)")
    parser.add_argument("--profile", metavar="PATH", help="write cProfiles of both parts to PATH.engine and PATH.bare")
    args = parser.parse_args()
    if args.channel == "sms":
        return main_sms(args)
    n = 200 if args.smoke else args.touches or 20_000

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


# -- --channel sms ----------------------------------------------------------------------------------

SMS_BODY = "Hi {{ lead.first_name }}, this is Rita at {{ lead.company }}. Worth a quick call this week?"
POOL = tuple(f"+1415555{100 + i:04d}" for i in range(10))
STATUS_CALLBACK = "/hooks/sms/status"


def prepare_sms(url: str, now: Any) -> None:
    """Turn the loaded world into auto-SMS touches: the step texts, every lead has a number and SMS consent."""
    consent = {"sms": {"source": "bench", "given_at": now.isoformat(), "recorded_by": "bench",
                       "recorded_at": now.isoformat(), "revoked_by": None, "revoked_at": None}}
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(Step).values(channel="sms", subject=None, body=SMS_BODY))
        # +1 212 200 0001 and on: valid New York numbers, one per lead.
        conn.execute(sa.update(Lead).values(phone=sa.literal("+1") + sa.cast(Lead.id + 2122000000, sa.String),
                                            consents=consent))
    engine.dispose()


def sms_config(config: Path, fake: SinkProcess, concurrent_requests: int | None) -> None:
    """Add [plugins.sms] for the fake, unthrottled, and contact hours all day (the bench runs at any hour)."""
    sid, token = fake.words
    with config.open("a", encoding="utf-8") as out:
        out.write(f"""
[contact_hours]
start = "00:00"
end = "24:00"
allow_wider_than_tcpa = true

[plugins.sms]
account_sid = "{sid}"
auth_token = "{token}"
numbers = {json.dumps(list(POOL))}
api_base_url = "http://127.0.0.1:{fake.port}"
per_number_per_second = 1000000
per_number_daily_cap = 1000000000
help_text = "Bench: reply STOP to opt out."
""" + (f"concurrent_requests = {concurrent_requests}\n" if concurrent_requests else ""))


def _bare_sms_loop(runtime: Runtime, renderer: Renderer, fake: SinkProcess) -> int:
    from twilio.rest import Client

    from sequencer.rendering import build_context

    now = utcnow()
    sid, token = fake.words
    client = Client(sid, token, environment={})
    client.api.base_url = f"http://127.0.0.1:{fake.port}"
    callback = BASE_URL + STATUS_CALLBACK
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Enrollment.id, Lead.id, Lead.phone, Lead.first_name, Lead.last_name, Lead.company)
            .join(Lead, Lead.id == Enrollment.lead_id).order_by(Enrollment.id)).all()
        inserts = TouchRows(conn)
        for i, (enrollment_id, lead_id, phone, first, last, company) in enumerate(rows):
            context = build_context(lead={"first_name": first, "last_name": last, "company": company, "phone": phone},
                                    owner=OWNER, sender=SENDER, extra={})
            text = renderer.render_text(template=None, body=SMS_BODY, context=context)
            message = client.messages.create(to=phone, from_=POOL[i % len(POOL)], body=text, status_callback=callback)
            inserts.add({"enrollment_id": enrollment_id, "lead_id": lead_id, "step_key": "bare", "channel": "sms",
                         "action": "auto", "status": "sent", "provider_id": message.sid, "body_text": text,
                         "due_at": now, "sent_at": now, "created_at": now, "updated_at": now})
        inserts.flush()
    return len(rows)


def main_sms(args: argparse.Namespace) -> int:
    n = 200 if args.smoke else args.touches or 5_000
    print(f"dispatch: {n:,} due auto-SMS touches, {args.database}, engine batch size {args.batch_size}", flush=True)
    fake = SinkProcess("twilio_fake.py")
    try:
        with databases(args.database) as dbs:
            url = dbs.create("dispatch")
            world = load_world(url, leads=n, due=n)
            assert world.due == n, f"expected {n} due enrollments, loaded {world.due}"
            prepare_sms(url, utcnow())
            print(f"setup: {n:,} leads and enrollments loaded in {world.seconds:.1f} s", flush=True)
            config = write_config(dbs.dir / "config.toml", db_url=url, smtp_port=1, batch_size=args.batch_size)
            sms_config(config, fake, args.concurrent_requests)
            runtime = Runtime(load_settings(config), SystemClock())
            renderer = runtime.renderer  # built (and plugins loaded) before either timer starts
            try:
                engine_seconds, report = run_engine(runtime, args.batch_size, args.profile and args.profile + ".engine")
                engine_fake = fake.command("reset")
                with runtime.engine.connect() as conn:
                    engine_rows = conn.execute(sa.select(sa.func.count()).select_from(Touch).where(
                        Touch.status == "sent", Touch.step_key == "intro", Touch.provider_id.is_not(None))).scalar_one()
                bare_seconds, bare_count = timed(lambda: _bare_sms_loop(runtime, renderer, fake),
                                                 args.profile and args.profile + ".bare")
                bare_fake = fake.command("reset")
            finally:
                runtime.dispose()
    finally:
        fake.close()

    engine_rate, bare_rate = n / engine_seconds, bare_count / bare_seconds
    ratio = engine_rate / bare_rate
    engine_ok = report["sent"] == n and engine_rows == n and engine_fake == {"messages": n, "distinct_to": n}
    bare_ok = bare_count == n and bare_fake == {"messages": n, "distinct_to": n}
    print(f"engine: {n:,} texts in {engine_seconds:.2f} s = {engine_rate:,.0f} touches/s (report {report}; "
          f"the fake accepted {engine_fake['messages']:,} to {engine_fake['distinct_to']:,} numbers; "
          f"{engine_rows:,} touches sent with a SID in the database)")
    print(f"bare loop: {bare_count:,} texts in {bare_seconds:.2f} s = {bare_rate:,.0f} touches/s "
          f"(the fake accepted {bare_fake['messages']:,} to {bare_fake['distinct_to']:,} numbers)")
    print(f"all delivered: {'yes' if engine_ok and bare_ok else 'NO'}")
    print(f"ratio engine/bare: {ratio:.2f} (target >= {TARGET}): {verdict(ratio >= TARGET)}", flush=True)
    emit_json({
        "benchmark": "dispatch", "channel": "sms", "database": args.database, "touches": n,
        "batch_size": args.batch_size, "setup_seconds": round(world.seconds, 3),
        "engine": {"seconds": round(engine_seconds, 3), "rate": round(engine_rate, 1), "report": report,
                   "provider_messages": engine_fake["messages"], "provider_distinct_to": engine_fake["distinct_to"],
                   "sent_rows": engine_rows},
        "bare": {"seconds": round(bare_seconds, 3), "rate": round(bare_rate, 1), "touches": bare_count,
                 "provider_messages": bare_fake["messages"], "provider_distinct_to": bare_fake["distinct_to"]},
        "ratio": round(ratio, 3), "target": TARGET, "target_met": ratio >= TARGET,
        "all_delivered": engine_ok and bare_ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
