"""The per-number rate holds across two worker processes on PostgreSQL, and a backlog waits, never drops."""
from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from sequencer import numbers
from sequencer.clock import SystemClock
from sequencer.models import Enrollment, Touch
from sequencer.receiving import PluginCore
from sequencer.runtime import Runtime
from sequencer.testing.world import ALWAYS_OPEN, apply, team
from sms_support import POOL

REP = "rita@acme.example"
LEADS = [f"+1212555{n:04d}" for n in range(110, 118)]  # 8 leads: 4 per pool number
PER_SECOND = 1.0
# How much earlier than its slot a message may reach Twilio: the slot is taken from each worker's
# clock and the request then crosses loopback, so a few scheduler ticks, never a whole interval.
JITTER = 0.25


@pytest.fixture
def config_path(config_path: Path) -> Path:
    """The SMS test config at one text per second per number, and contact hours all day (the test runs now)."""
    text = config_path.read_text(encoding="utf-8").replace("per_number_per_second = 1000",
                                                          f"per_number_per_second = {PER_SECOND}")
    config_path.write_text(text + '\n[contact_hours]\nstart = "00:00"\nend = "24:00"\n'
                           "allow_wider_than_tcpa = true\n", encoding="utf-8")
    return config_path


def worker(config_path: Path) -> subprocess.Popen:
    """A `sequencer worker --once` process on the real clock, claiming two enrollments per batch."""
    return subprocess.Popen([str(Path(sys.executable).parent / "sequencer"), "--config", str(config_path), "worker", "--once",
                             "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_keep_each_numbers_rate_and_defer_the_backlog(
        cli, runtime, settings, tmp_path: Path, config_path: Path, fake_twilio, monkeypatch) -> None:
    arrivals: list[tuple[float, str, str]] = []
    answer = fake_twilio._answer

    def timed(path: str, authorization: str, body: str):
        form = {k: v[-1] for k, v in parse_qs(body).items()}
        arrivals.append((time.monotonic(), form.get("From", ""), form.get("To", "")))
        return answer(path, authorization, body)

    monkeypatch.setattr(fake_twilio, "_answer", timed)
    team(cli, REP, name="Rita Rep", timezone="America/New_York")
    csv = tmp_path / "leads.csv"
    csv.write_text("phone,first_name,owner\n" + "".join(f"{p},Lead,{REP}\n" for p in LEADS), encoding="utf-8")
    cli("leads", "import", str(csv))
    for phone in LEADS:
        cli("consent", "add", phone, "--channel", "sms", "--source", "web form")
    apply(cli, tmp_path, 'name = "texts"\n' + ALWAYS_OPEN + '\n[[steps]]\nkey = "text"\nchannel = "sms"\n'
                         'body = "Hi {{ lead.first_name }}"\n')
    cli("enroll", "--cadence", "texts", *LEADS)
    # A backlog on the first pool number: its next 8 seconds of slots are taken (as by another
    # worker's burst), so its texts must wait for theirs, deferred rather than sent early or failed.
    real = Runtime(settings, SystemClock())  # the workers' clock
    with real.session() as session:
        numbers.ensure(session, list(POOL), real.now())  # as the first send would
    core = PluginCore(real, "sms")
    for _ in range(8):
        assert core.number_slot(POOL[0], PER_SECOND, None).reserved
    real.dispose()

    passes, deferred_seen = 0, False
    deadline = time.monotonic() + 60
    while True:
        procs = [worker(config_path), worker(config_path)]
        for proc in procs:
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, output
        passes += 1
        with runtime.session() as session:
            left = session.execute(sa.select(Enrollment.next_due_at).where(Enrollment.state == "active")).scalars().all()
            statuses = session.scalars(sa.select(Touch.status)).all()
        if not left:
            break
        # A number's backlog waits for its next slot: deferred, never failed.
        deferred_seen = True
        assert "failed" not in statuses
        assert time.monotonic() < deadline, f"still waiting after {passes} passes: {left}"
        wake = max(due.replace(tzinfo=timezone.utc) for due in left)
        time.sleep(max(0.0, (wake - datetime.now(timezone.utc)).total_seconds()) + 0.05)

    assert deferred_seen, f"{POOL[0]}'s backlog did not defer its texts"
    # None lost, none twice.
    assert sorted(to for _, _, to in arrivals) == sorted(LEADS)
    with runtime.session() as session:
        assert session.scalars(sa.select(Touch.status)).all() == ["sent"] * len(LEADS)
    by_number: dict[str, list[float]] = defaultdict(list)
    for at, sender, _ in arrivals:
        by_number[sender].append(at)
    assert set(by_number) == set(POOL)
    for sender, times in by_number.items():
        gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:])]
        assert min(gaps) >= 1 / PER_SECOND - JITTER, f"{sender}: texts {gaps} seconds apart"
