"""The benchmarks still run: bench/dispatch.py and bench/tick_scale.py at their --smoke size, on both databases.

Only correctness is asserted here (every touch delivered, set-based statement counts); the
performance targets are for the full-size runs (`make bench`), never for CI timing.
"""
from __future__ import annotations

import functools
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
TIMEOUT = 120

DATABASES = [pytest.param("sqlite", id="sqlite"),
             pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql)]


def run_bench(script: str, database: str) -> dict[str, Any]:
    if database == "postgresql" and not (PG_BIN / "initdb").exists():
        reason = f"no PostgreSQL binaries in {PG_BIN}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    return _run(script, database)


@functools.lru_cache(maxsize=None)
def _run(script: str, database: str) -> dict[str, Any]:
    """Run a benchmark once per (script, database) in this test process, return its final JSON line."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--smoke", "--database", database],
                          cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing:\n{proc.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("database", DATABASES)
def test_dispatch_smoke_delivers_every_touch(database: str) -> None:
    result = run_bench("dispatch.py", database)
    assert result["benchmark"] == "dispatch" and result["database"] == database
    n = result["touches"]
    assert n == 200
    assert result["all_delivered"] is True
    for side in ("engine", "bare"):
        assert result[side]["sink_messages"] == n
        assert result[side]["sink_distinct_message_ids"] == n
        assert result[side]["rate"] > 0
    assert result["engine"]["report"]["sent"] == n
    assert result["engine"]["sent_rows"] == n
    assert result["ratio"] > 0 and isinstance(result["target_met"], bool)


@pytest.mark.parametrize("database", DATABASES)
def test_tick_scale_smoke_reports_statements_per_batch(database: str) -> None:
    result = run_bench("tick_scale.py", database)
    assert result["benchmark"] == "tick_scale" and result["database"] == database
    assert (result["small"], result["large"], result["due"]) == (2000, 20000, 100)
    for n in ("2000", "20000"):
        counts = result["statements"][n]
        assert set(counts) == {"10", "100"}
        # Batches of 10 and 100 go out in groups of [engine] max_in_flight (50).
        assert [len(counts[size]["groups"]) for size in ("10", "100")] == [1, 2]
        assert all(c["batch"] > 0 and min(c["groups"]) > 0 for c in counts.values())
        size = result["sizes"][n]
        assert size["tick_seconds"] > 0 and size["peak_rss_mb"] > 0
    assert result["tick_ratio"] > 0


@pytest.mark.parametrize("database", DATABASES)
def test_tick_scale_statements_do_not_grow_with_batch_size(database: str) -> None:
    result = run_bench("tick_scale.py", database)
    # Set-based work (DESIGN.md, The engine): the SQL statements of a claim and of each group do not grow.
    assert result["statements_equal"], f"statements per group grow with the batch size: {result['statements']}"


@pytest.mark.parametrize("database", DATABASES)
def test_today_page_smoke_times_both_pages(database: str) -> None:
    result = run_bench("today_page.py", database)
    assert result["benchmark"] == "today_page" and result["database"] == database
    assert (result["enrollments"], result["tasks"], result["reps"]) == (2000, 200, 10)
    for page in ("today", "lead"):
        figures = result["pages"][page]
        assert figures["requests"] == 20 and 0 < figures["median_ms"] <= figures["p95_ms"]
    assert isinstance(result["target_met"], bool)
