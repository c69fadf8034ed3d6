"""The SMS benchmarks still run at their --smoke size: bench/dispatch.py --channel sms and bench/sms_webhooks.py.

Only correctness is asserted (every text accepted by the fake Twilio once, every webhook on a
timeline); the performance targets are for the full-size runs, never for CI timing.
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

REPO = Path(__file__).resolve().parents[3]
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT = 180

DATABASES = [pytest.param("sqlite", id="sqlite"),
             pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql)]


def run_bench(database: str, *args: str) -> dict[str, Any]:
    """Run a benchmark at --smoke size and return its last line, the JSON of every figure."""
    if database == "postgresql" and not (PG_BIN / "initdb").exists():
        reason = f"no PostgreSQL binaries in {PG_BIN}"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, *args, "--smoke", "--database", database], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("database", DATABASES)
def test_dispatch_sms_smoke_sends_every_text_once(database: str) -> None:
    result = run_bench(database, "bench/dispatch.py", "--channel", "sms")
    assert (result["benchmark"], result["channel"], result["database"]) == ("dispatch", "sms", database)
    n = result["touches"]
    assert n == 200 and result["all_delivered"] is True, result
    for side in ("engine", "bare"):
        assert (result[side]["provider_messages"], result[side]["provider_distinct_to"]) == (n, n)
        assert result[side]["rate"] > 0
    assert result["engine"]["report"]["sent"] == result["engine"]["sent_rows"] == n
    assert result["ratio"] > 0 and isinstance(result["target_met"], bool)


@pytest.mark.parametrize("database", DATABASES)
def test_sms_webhooks_smoke_puts_every_text_on_a_timeline(database: str) -> None:
    result = run_bench(database, "bench/sms_webhooks.py")
    assert result["benchmark"] == "sms_webhooks" and result["none_lost"] is True
    run = result["runs"][database]
    assert (run["requests"], run["accepted"], run["on_timeline"], run["lost"], run["duplicates"]) == (200, 200, 200, 0, 0)
    assert run["statuses"] == {"200": 200} and run["rate"] > 0 and run["cpu_ms_per_request"] > 0
