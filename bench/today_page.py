"""Server time of a rep's Today page and of a lead page, with 1,000,000 enrollments and 100,000 open tasks.

The database holds N leads with one enrollment each (bench/common.load_world) and T open tasks
spread over R reps (T / R each, half overdue, half due in three days), the measured rep's leads
with a few touches each. Each page is requested 200 times through the Flask test client with a
signed-in session (warm: one request first); the server time is the wall time of each request.
Target: p95 under 50 ms for both pages.

    python bench/today_page.py [--database sqlite|postgresql] [--enrollments N] [--tasks T] [--reps R]
    python bench/today_page.py --smoke     # 2,000 enrollments, 200 tasks, 20 requests (CI)
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from common import _ts, databases, emit_json, load_world, utcnow, verdict, write_config

from sequencer.config import load_settings
from sequencer.models import User
from sequencer.runtime import Runtime
from sequencer.users import hash_password, session_token
from sequencer.web import create_app

TARGET_P95_MS = 50.0
TOUCHES_PER_LEAD = 4


def load_tasks(url: str, *, tasks: int, reps: int, leads: int) -> tuple[int, int]:
    """Add `reps` reps and `tasks` open tasks over evenly spaced leads; return (measured rep id, one of its leads)."""
    now = utcnow()
    runtime_engine = sa.create_engine(url)
    dialect = runtime_engine.dialect.name
    cast = (lambda p: p) if dialect == "sqlite" else (lambda p: f"CAST({p} AS timestamptz)")
    stride = max(1, leads // tasks)
    with runtime_engine.begin() as conn:
        first = conn.execute(sa.insert(User).values([
            {"email": f"rep{i}@bench.example", "name": f"Rep {i}", "role": "rep", "timezone": "UTC",
             "locale": "en", "active": True, "created_at": now} for i in range(reps)]).returning(User.id)
        ).scalars().all()
        base = min(first)
        # The task's lead belongs to the task's rep, as the engine opens them for the lead's owner.
        conn.execute(sa.text(
            "UPDATE leads SET owner_id = :base + ((id / :stride) % :reps) WHERE id % :stride = 0 AND id <= :last"),
            {"base": base, "stride": stride, "reps": reps, "last": stride * tasks})
        conn.execute(sa.text(
            "INSERT INTO tasks (owner_id, lead_id, kind, title, instructions, due_at, state, priority, created_at) "
            "SELECT owner_id, id, CASE (id / :stride) % 3 WHEN 0 THEN 'call' WHEN 1 THEN 'email' ELSE 'task' END, "
            "'Call ' || first_name || ' ' || last_name, 'Follow up.', "
            f"CASE WHEN (id / :stride) % 2 = 0 THEN {cast(':overdue')} ELSE {cast(':later')} END, 'open', 10, "
            f"{cast(':now')} FROM leads WHERE id % :stride = 0 AND id <= :last"),
            {"stride": stride, "last": stride * tasks, "overdue": _ts(dialect, now - timedelta(hours=3)),
             "later": _ts(dialect, now + timedelta(days=3)), "now": _ts(dialect, now)})
        lead_id = conn.execute(sa.text("SELECT min(lead_id) FROM tasks WHERE owner_id = :rep"),
                               {"rep": base}).scalar_one()
        # The measured rep's leads have a history: sent touches on their enrollment.
        conn.execute(sa.text(
            "INSERT INTO touches (enrollment_id, lead_id, step_key, channel, action, status, subject, body_text, "
            "sent_at, created_at, updated_at) SELECT e.id, e.lead_id, 'step' || k.n, 'email', 'auto', 'sent', "
            "'Quick question', 'Hi', "
            f"{cast(':now')}, {cast(':now')}, {cast(':now')} FROM enrollments e JOIN leads l ON l.id = e.lead_id "
            "JOIN (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) k ON 1 = 1 "
            "WHERE l.owner_id = :rep"), {"rep": base, "now": _ts(dialect, now)})
    if dialect == "postgresql":
        with runtime_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    runtime_engine.dispose()
    return base, lead_id


def timed(client, path: str, n: int) -> dict[str, float]:
    """Request `path` n times (after one warm-up); return median and p95 in ms."""
    assert client.get(path).status_code == 200, path
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, path
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2), "requests": n}


def measure(url: str, config: Path, rep_id: int, lead_id: int, requests: int) -> dict[str, dict[str, float]]:
    runtime = Runtime(load_settings(config))
    try:
        with runtime.session() as session:
            # The measured rep signs in with a password (the others never do): a session token needs one.
            session.get(User, rep_id).password_hash = hash_password("bench password")
            token = session_token(session.get(User, rep_id))
        app = create_app(runtime, test_config={"TESTING": True})
        client = app.test_client()
        with client.session_transaction() as flask_session:
            flask_session["_user_id"], flask_session["_fresh"] = token, True
        return {"today": timed(client, "/", requests), "lead": timed(client, f"/leads/{lead_id}", requests)}
    finally:
        runtime.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--enrollments", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=1_000, help="reps the tasks are spread over (default 1,000)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
    args = parser.parse_args()
    if args.smoke:
        args.enrollments, args.tasks, args.reps, args.requests = 2_000, 200, 10, 20
    print(f"today_page: {args.enrollments:,} enrollments, {args.tasks:,} open tasks over {args.reps:,} reps, "
          f"{args.database}", flush=True)
    with databases(args.database) as dbs:
        url = dbs.create("today")
        world = load_world(url, leads=args.enrollments, due=0)
        started = time.perf_counter()
        rep_id, lead_id = load_tasks(url, tasks=args.tasks, reps=args.reps, leads=args.enrollments)
        print(f"  loaded in {world.seconds + time.perf_counter() - started:.1f} s", flush=True)
        config = write_config(dbs.dir / "config.toml", db_url=url, smtp_port=25)
        pages = measure(url, config, rep_id, lead_id, args.requests)
    met = all(p["p95_ms"] < TARGET_P95_MS for p in pages.values())
    for name, figures in pages.items():
        print(f"{name:>5}: median {figures['median_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms over "
              f"{figures['requests']} requests (target p95 < {TARGET_P95_MS:.0f} ms): "
              f"{verdict(figures['p95_ms'] < TARGET_P95_MS)}")
    emit_json({"benchmark": "today_page", "database": args.database, "enrollments": args.enrollments,
               "tasks": args.tasks, "reps": args.reps, "pages": pages, "target_met": met})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
