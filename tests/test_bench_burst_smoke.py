"""bench/burst.py and bench/apscheduler_per_job.py still run, at their --smoke size.

Only correctness is asserted (every touch delivered exactly once, figures present); the
performance targets are for the full-size runs, never for CI timing. The burst runs on
PostgreSQL (its point is several worker processes); the per-job comparison on both databases.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sequencer.testing.postgres import PG_BIN

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT = 240


def need_postgresql() -> None:
    if not (PG_BIN / "initdb").exists():
        reason = f"no PostgreSQL binaries in {PG_BIN}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


def run_bench(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{args[0]} printed nothing:\n{proc.stderr}"
    return json.loads(lines[-1])


@pytest.mark.postgresql
def test_burst_smoke_drains_every_touch_exactly_once_with_one_and_two_workers() -> None:
    need_postgresql()
    result = run_bench("bench/burst.py", "--smoke", "--databases", "postgresql")
    assert result["benchmark"] == "burst" and result["all_delivered_exactly_once"] is True
    n = result["touches"]
    assert n == 600
    runs = {(r["database"], r["workers"]): r for r in result["runs"]}
    assert set(runs) == {("postgresql", 1), ("postgresql", 2)}
    for (_, workers), run in runs.items():
        assert run["delivered_exactly_once"] is True
        assert run["sink_messages"] == run["sink_distinct_message_ids"] == n
        assert run["touch_states"] == {"sent": n}
        assert run["enrollment_states"] == {"finished": n}
        assert run["exit_codes"] == [0] * workers, "workers must stop cleanly on SIGTERM"
        assert run["rate"] > 0 and run["lateness_p99"] >= run["lateness_p50"] >= 0
        assert len(run["cpu"]["workers"]) == workers and run["cpu"]["postgresql"] is not None
    bare = result["bare"]["postgresql"]
    assert bare["delivered_exactly_once"] is True and bare["rate"] > 0
    assert {"postgresql_2w_over_1w", "postgresql_1w_over_bare"} <= set(result["ratios"])


@pytest.mark.parametrize("database", [pytest.param("sqlite", id="sqlite"),
                                      pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql)])
def test_apscheduler_per_job_smoke_delivers_every_touch_exactly_once(database: str) -> None:
    if database == "postgresql":
        need_postgresql()
    result = run_bench("bench/apscheduler_per_job.py", "--smoke", "--database", database)
    assert result["benchmark"] == "apscheduler_per_job" and result["database"] == database
    assert result["all_delivered_exactly_once"] is True
    assert set(result["sizes"]) == {"200"}
    size = result["sizes"]["200"]
    for side in ("sequencer", "apscheduler"):
        r = size[side]
        assert r["finished"] is True and r["delivered_exactly_once"] is True
        assert r["sink_messages"] == r["sink_distinct_message_ids"] == r["sent_rows"] == 200
        assert r["schedule_seconds"] > 0 and r["drain_seconds"] > 0 and r["peak_rss_mb"] > 0
    assert size["apscheduler"]["jobs_left"] == 0
    assert all(v > 0 for v in size["ratios"].values())
