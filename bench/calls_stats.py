"""Call stats at scale: how long does `calls stats` take over 100,000 logged calls?

Seeds N calls (3 scripts x 2 versions, 3 cadences, 5 reps, outcomes and 0-3 objections of 8 keys
drawn from a fixed random seed) straight into `calls` and `call_objections`, then times, in the
same process and database:

* the baseline: a plain `SELECT count(*) FROM calls` and the same over `call_objections`;
* `sequencer.calls.call_stats` (what `calls stats` runs): cold (first) and the median of `--repeat`;
* the same with `--cadence` and with `--since` filters;
* the whole `sequencer calls stats` command in a fresh process (Python start-up and imports included).

Target: call_stats (warm) under 1 s on SQLite at 100,000 calls.

    .venv/bin/python bench/calls_stats.py                          # 100,000 calls, SQLite
    .venv/bin/python bench/calls_stats.py --database postgresql     # throwaway PostgreSQL cluster
    .venv/bin/python bench/calls_stats.py --smoke                   # 2,000 calls (CI)

The last line of output is a JSON object with every figure. Exits 0 even when the target is missed.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from common import REPO, databases, utcnow, write_config

import sqlalchemy as sa  # noqa: E402
import sqlalchemy.orm as so  # noqa: E402

from sequencer.calls import call_stats  # noqa: E402
from sequencer.config import DEFAULT_CONNECTED_OUTCOMES, DEFAULT_OUTCOMES  # noqa: E402
from sequencer.db import make_engine  # noqa: E402
from sequencer.models import Call, CallObjection, User  # noqa: E402

SCRIPTS = [("voice/discovery_call", "v1a"), ("voice/discovery_call", "v2b"), ("voice/discovery_call_ru", "v1c"),
           ("voice/discovery_call_ru", "v2d"), ("voice/short_call", "v1e"), ("voice/short_call", "v2f")]
CADENCES = ["outbound_intro", "ru_intro", "reactivation"]
OBJECTIONS = ["too_expensive", "send_email", "have_supplier", "no_time", "think_about_it", "no_budget",
              "wrong_person", "uses_spreadsheets"]
REPS = 5
DAYS = 90
CHUNK = 20_000


def seed(url: str, calls: int) -> tuple[float, int]:
    """Insert `calls` calls and their objections; return the seconds it took and the objection rows."""
    started = time.perf_counter()
    rng = random.Random(10)
    now = utcnow()
    engine = make_engine(url)
    objection_rows = 0
    with engine.begin() as conn:
        rep_ids = [conn.execute(sa.insert(User).values(email=f"rep{i}@bench.example", name=f"Rep {i}", role="rep",
                                                       timezone="UTC", created_at=now).returning(User.id)).scalar_one()
                   for i in range(REPS)]
        for first in range(1, calls + 1, CHUNK):
            ids = range(first, min(first + CHUNK, calls + 1))
            rows, raised = [], []
            for call_id in ids:
                script, version = rng.choice(SCRIPTS)
                rows.append({"id": call_id, "script_key": script, "script_version": version,
                             "outcome": rng.choice(DEFAULT_OUTCOMES), "rep_id": rng.choice(rep_ids),
                             "cadence_name": rng.choice(CADENCES),
                             "logged_at": now - timedelta(minutes=rng.randrange(DAYS * 24 * 60))})
                raised += [{"call_id": call_id, "key": key} for key in rng.sample(OBJECTIONS, rng.randrange(4))]
            conn.execute(sa.insert(Call), rows)
            if raised:
                conn.execute(sa.insert(CallObjection), raised)
            objection_rows += len(raised)
    engine.dispose()
    return time.perf_counter() - started, objection_rows


def timed(run: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Return the first run's seconds and the median of `repeat` more."""
    started = time.perf_counter()
    run()
    cold = time.perf_counter() - started
    warm = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        warm.append(time.perf_counter() - started)
    return {"cold_s": round(cold, 4), "warm_median_s": round(statistics.median(warm), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="2,000 calls, 2 repeats: that it runs, not how fast")
    args = parser.parse_args()
    if args.smoke:
        args.calls, args.repeat = 2_000, 2

    with databases(args.database) as dbs:
        url = dbs.create("calls")
        seed_s, objection_rows = seed(url, args.calls)
        engine = make_engine(url)
        since = utcnow() - timedelta(days=30)
        with so.Session(engine) as session:
            stats = call_stats(session, connected=DEFAULT_CONNECTED_OUTCOMES)
            figures = {
                "count_calls": timed(lambda: session.scalar(sa.select(sa.func.count()).select_from(Call)),
                                     args.repeat),
                "count_objections": timed(
                    lambda: session.scalar(sa.select(sa.func.count()).select_from(CallObjection)), args.repeat),
                "stats": timed(lambda: call_stats(session, connected=DEFAULT_CONNECTED_OUTCOMES), args.repeat),
                "stats_cadence": timed(lambda: call_stats(session, connected=DEFAULT_CONNECTED_OUTCOMES,
                                                          cadence=CADENCES[0]), args.repeat),
                "stats_since": timed(lambda: call_stats(session, connected=DEFAULT_CONNECTED_OUTCOMES, since=since),
                                     args.repeat),
            }
        engine.dispose()
        config = write_config(dbs.dir / "config.toml", db_url=url, smtp_port=1)
        started = time.perf_counter()
        cli = subprocess.run([sys.executable, "-c", "from sequencer.cli import entry; entry()", "--config", str(config), "calls", "stats",
                              "--format", "json"], capture_output=True, text=True, cwd=REPO, check=True)
        cli_s = time.perf_counter() - started
        from_cli = json.loads(cli.stdout)

    for name, timing in figures.items():
        print(f"{name:18} cold {timing['cold_s']:.4f} s   warm median {timing['warm_median_s']:.4f} s")
    print(f"sequencer calls stats (new process, imports included): {cli_s:.2f} s")
    target_met = figures["stats"]["warm_median_s"] < 1.0
    print(f"{args.calls:,} calls, {objection_rows:,} objections on {args.database}; seeded in {seed_s:.1f} s;"
          f" target call_stats < 1 s: {'met' if target_met else 'MISSED'}")
    print(json.dumps({
        "database": args.database, "calls": args.calls, "objection_rows": objection_rows,
        "seed_s": round(seed_s, 2), **figures, "cli_s": round(cli_s, 3), "target_met": target_met,
        "counted_calls": stats["calls"], "cli_counted_calls": from_cli["calls"],
        "scripts": len(stats["scripts"]), "objections": len(stats["objections"]),
    }))


if __name__ == "__main__":
    main()
