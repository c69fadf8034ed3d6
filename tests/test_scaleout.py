"""Scale-out on PostgreSQL and crash safety, proven with real worker processes, a real SMTP sink and kill -9."""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from sequencer.clock import iso_z
from sequencer.mailsink import MailSink
from sequencer.testing import Cli
from tests.support.fleet import (
    Db,
    FaultyHandler,
    SlowHandler,
    create_database,
    drop_database,
    fleet,
    one_step_cadence,
    restart_postgres,
    run,
    setup_world,
    sink_message_ids,
    two_step_cadence,
    wait_for,
    write_scale_config,
)
from sequencer.testing.postgres import free_port
from sequencer.testing.world import enroll_emails


@pytest.fixture
def pg_url(postgres):
    """A fresh database of its own on the session's PostgreSQL cluster."""
    name = create_database(postgres.admin)
    yield postgres.url(name)
    drop_database(postgres.admin, name)


@pytest.fixture
def db(pg_url):
    handle = Db(pg_url)
    yield handle
    handle.dispose()


def reports(procs) -> list[dict]:
    """The JSON batch report each `worker --once` printed last."""
    out = []
    for proc in procs:
        lines = [line for line in proc.output().splitlines() if line.startswith("{")]
        assert lines, f"{proc.name} printed no report:\n{proc.output()[-3000:]}"
        out.append(json.loads(lines[-1]))
    return out


# -- 1. the race ---------------------------------------------------------------------------------

RACE_LEADS = 20_000


def test_four_workers_drain_20000_due_enrollments_exactly_once(pg_url, db, tmp_path) -> None:
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, batch_size=200)
        started = time.monotonic()
        emails = [f"lead{i:05d}@d{i % 97}.example" for i in range(RACE_LEADS)]
        setup_world(Cli(config), tmp_path, emails, cadence=one_step_cadence())
        assert db.enrollment_states() == {"active": RACE_LEADS}
        set_up = time.monotonic() - started

        with fleet(config, tmp_path / "logs") as workers:
            procs = [workers.start("worker", "--once", "--batch-size", "200", name=f"w{n}") for n in range(4)]
            codes = workers.wait_all(timeout=300)
        drained = time.monotonic() - started - set_up
        assert codes == [0, 0, 0, 0], "\n\n".join(p.output()[-3000:] for p in procs)

        ids = sink_message_ids(sink)
        assert None not in ids
        assert len(ids) == RACE_LEADS and sum(ids.values()) == RACE_LEADS, ids.most_common(3)
        print(f"set up {set_up:.1f}s, drained in {drained:.1f}s")
        states = db.enrollment_states()
        assert states == {"finished": RACE_LEADS}
        assert db.scalar("SELECT count(*) FROM touches") == RACE_LEADS
        assert db.scalar("SELECT count(DISTINCT (enrollment_id, step_key)) FROM touches") == RACE_LEADS
        assert db.touch_states() == {"sent": RACE_LEADS}
        assert {row.message_id for row in db.touches()} == set(ids)
        assert db.scalar("SELECT count(*) FROM touch_attempts") == RACE_LEADS
        sent = [r["sent"] for r in reports(procs)]
        assert sum(sent) == RACE_LEADS
        assert sum(1 for s in sent if s) >= 2, f"the workers did not share the work: {sent}"
        print(f"set up {set_up:.1f}s, drained in {drained:.1f}s, per worker {sent}")


def assert_at_most_once(db: Db, ids) -> dict[str, list]:
    """The key property: a `sent` touch is at the sink exactly once, an `unknown` one at most once."""
    assert None not in ids, "a message without a Message-ID reached the sink"
    assert all(n == 1 for n in ids.values()), [m for m, n in ids.items() if n > 1]
    touches = db.touches()
    assert len({(t.enrollment_id, t.step_key) for t in touches}) == len(touches)
    by_status: dict[str, list] = {}
    for t in touches:
        by_status.setdefault(t.status, []).append(t)
        if t.status == "sent":
            assert ids[t.message_id] == 1, f"touch {t.id} is sent but the sink has it {ids[t.message_id]} times"
        elif t.status == "unknown":
            assert ids[t.message_id] <= 1
            assert t.enrollment_state == "needs_review", t
        else:
            raise AssertionError(f"touch {t.id} ended {t.status}")
    assert set(ids) <= {t.message_id for t in touches}, "the sink has a message no touch accounts for"
    return by_status


def no_claims_left(db: Db) -> None:
    assert db.scalar("SELECT count(*) FROM enrollments WHERE lease_owner IS NOT NULL") == 0
    assert db.scalar("SELECT count(*) FROM touches WHERE status = 'sending'") == 0


# -- 2. kill -9 at random moments --------------------------------------------------------------

CRASH_LEADS = 400
CRASH_BATCH = 10


def test_kill_9_at_random_moments_never_sends_twice_and_loses_nothing(pg_url, db, tmp_path) -> None:
    rng = random.Random(20260302)
    kinds = ["after_plan"] * 7 + ["after_send"] * 7 + ["random"] * 6
    rng.shuffle(kinds)
    pauses = tmp_path / "pauses.txt"
    pauses.touch()
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, lease_seconds=2,
                                    batch_size=CRASH_BATCH)
        cli = Cli(config)
        setup_world(cli, tmp_path, [f"crash{i:03d}@c{i % 7}.example" for i in range(CRASH_LEADS)],
                    cadence=one_step_cadence())
        killed = []
        with fleet(config, tmp_path / "logs") as workers:
            for n, kind in enumerate(kinds):
                env = {} if kind == "random" else {"SEQUENCER_TEST_PAUSE": kind,
                                                   "SEQUENCER_TEST_PAUSE_FILE": str(pauses)}
                before = len(sink.received)
                proc = workers.start("worker", "--once", "--batch-size", str(CRASH_BATCH), env=env, name=f"{n}-{kind}")
                if kind == "random":
                    wait_for(lambda: len(sink.received) > before or not proc.alive(), 60, what="a first send")
                    time.sleep(rng.uniform(0, 0.5))
                else:
                    wait_for(lambda: f"{proc.pid} {kind}" in pauses.read_text() or not proc.alive(), 60,
                             what=f"the {kind} pause")
                killed.append((kind, proc.alive()))
                proc.kill9()
            assert sum(alive for _, alive in killed) >= 15, killed  # most kills landed mid-drain

            time.sleep(2.5)  # every lease has expired: the clean worker's housekeeping reviews them
            run(config, "worker", "--once")

        ids = sink_message_ids(sink)
        by_status = assert_at_most_once(db, ids)
        no_claims_left(db)
        states = db.enrollment_states()
        assert set(states) <= {"finished", "needs_review"}, states
        assert sum(states.values()) == CRASH_LEADS
        assert len(by_status.get("sent", [])) == states["finished"]
        unknown = by_status.get("unknown", [])
        assert len(unknown) == states.get("needs_review", 0) > 0
        listed = json.loads(run(config, "touches", "unknown", "--format", "json").stdout)
        assert sorted(row["id"] for row in listed) == sorted(t.id for t in unknown)
        assert {row["id"]: row["message_id"] for row in listed} == {t.id: t.message_id for t in unknown}

        # A person checks the sent folder (here: the sink) and resolves each one.
        went_out = sum(1 for t in unknown if ids[t.message_id])
        for t in unknown:
            cli("touches", "resolve", str(t.id), "--sent" if ids[t.message_id] else "--not-sent")
        assert json.loads(cli("touches", "unknown", "--format", "json").output) == []
        run(config, "worker", "--once")

        ids = sink_message_ids(sink)
        assert db.enrollment_states() == {"finished": CRASH_LEADS}
        assert db.touch_states() == {"sent": CRASH_LEADS}
        assert len(ids) == CRASH_LEADS and sum(ids.values()) == CRASH_LEADS
        assert {t.message_id for t in db.touches()} == set(ids)
        no_claims_left(db)
        print(f"kills: {killed}; {len(unknown)} unknown, of which {went_out} had gone out")


def test_kill_9_mid_send_of_a_500_touch_batch_leaves_at_most_max_in_flight_unknown(pg_url, db, tmp_path) -> None:
    """A batch goes out max_in_flight (50) at a time: a kill strands one group, not the batch."""
    leads, in_flight = 500, 50
    with MailSink(handler=SlowHandler(delay=0.01)) as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, lease_seconds=2,
                                    batch_size=leads)
        setup_world(Cli(config), tmp_path, [f"k{i:03d}@k{i % 11}.example" for i in range(leads)],
                    cadence=one_step_cadence())
        with fleet(config, tmp_path / "logs") as workers:
            proc = workers.start("worker", "--once", "--batch-size", str(leads))
            wait_for(lambda: len(sink.received) >= 120 or not proc.alive(), 120, what="the third group")
            assert proc.alive(), proc.output()[-3000:]
            proc.kill9()
        at_kill = len(sink.received)
        sending = db.scalar("SELECT count(*) FROM touches WHERE status = 'sending'")
        settled = db.scalar("SELECT count(*) FROM touches WHERE status = 'sent'")
        leased = db.scalar("SELECT count(*) FROM enrollments WHERE lease_owner IS NOT NULL")
        pending = db.scalar("SELECT count(*) FROM touches WHERE status = 'pending'")
        # One group out, the groups before it recorded, the rest of the batch leased and not sending.
        assert 0 < sending <= in_flight and settled % in_flight == 0
        assert leased == leads - settled and pending == leads - settled - sending

        time.sleep(2.5)  # the leases expire; a clean worker reviews the group and sends the rest
        run(config, "worker", "--once")
        ids = sink_message_ids(sink)
        by_status = assert_at_most_once(db, ids)
        no_claims_left(db)
        unknown = by_status.get("unknown", [])
        assert len(unknown) == sending
        assert len(by_status["sent"]) + len(unknown) == leads
        assert db.enrollment_states() == {"finished": leads - len(unknown), "needs_review": len(unknown)}
        went_out = sum(1 for t in unknown if ids[t.message_id])
        print(f"killed after {at_kill} messages: {len(unknown)} unknown (of which {went_out} had gone out), "
              f"{leads - settled - sending} reclaimed and sent")


# -- 3. PostgreSQL restarts while two workers drain -------------------------------------------------

RESTART_LEADS = 3000


def test_postgres_restart_mid_drain(postgres, pg_url, db, tmp_path) -> None:
    with MailSink(handler=SlowHandler(delay=0.002)) as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, lease_seconds=3,
                                    batch_size=100)
        setup_world(Cli(config), tmp_path, [f"pg{i:04d}@r{i % 31}.example" for i in range(RESTART_LEADS)],
                    cadence=one_step_cadence())

        def settled() -> bool:
            try:
                states = db.enrollment_states()
            except sa.exc.OperationalError:
                return False
            return set(states) <= {"finished", "needs_review"}

        with fleet(config, tmp_path / "logs") as workers:
            procs = [workers.start("worker", name=f"w{n}") for n in range(2)]
            wait_for(lambda: len(sink.received) >= 300, 120, what="the drain to start")
            at_restart = len(sink.received)
            restart_postgres(postgres)
            wait_for(settled, 240, interval=0.5, what="every enrollment to end")
            for proc in procs:
                proc.popen.send_signal(signal.SIGTERM)
            codes = workers.wait_all(timeout=60)
        assert at_restart < RESTART_LEADS
        logs = "\n\n".join(p.output()[-3000:] for p in procs)
        assert codes == [0, 0], logs

        ids = sink_message_ids(sink)
        by_status = assert_at_most_once(db, ids)
        no_claims_left(db)
        states = db.enrollment_states()
        assert sum(states.values()) == RESTART_LEADS
        unknown = len(by_status.get("unknown", []))
        print(f"restart after {at_restart} messages; {unknown} touches ended unknown; states {dict(states)}")
        assert len(by_status.get("sent", [])) + unknown == RESTART_LEADS


# -- 4. SIGTERM / SIGINT during a drain ------------------------------------------------------------

SIGNAL_LEADS = 500


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_drain_stops_cleanly(signum, pg_url, db, tmp_path) -> None:
    with MailSink(handler=SlowHandler(delay=0.02)) as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, lease_seconds=2,
                                    batch_size=50)
        setup_world(Cli(config), tmp_path, [f"sig{i:03d}@s{i % 13}.example" for i in range(SIGNAL_LEADS)],
                    cadence=one_step_cadence())
        with fleet(config, tmp_path / "logs") as workers:
            proc = workers.start("worker", "--batch-size", "50")
            wait_for(lambda: len(sink.received) >= 60, 120, what="some messages")
            proc.popen.send_signal(signum)
            signalled = time.monotonic()
            code = workers.wait_all(timeout=30)[0]
            took = time.monotonic() - signalled
        assert code == 0, proc.output()[-3000:]
        stopped_at = len(sink.received)
        assert stopped_at < SIGNAL_LEADS, "the worker drained everything before stopping"
        no_claims_left(db)
        assert_at_most_once(db, sink_message_ids(sink))

        run(config, "worker", "--once")
        ids = sink_message_ids(sink)
        assert len(ids) == SIGNAL_LEADS and sum(ids.values()) == SIGNAL_LEADS
        assert db.enrollment_states() == {"finished": SIGNAL_LEADS}
        no_claims_left(db)
        print(f"{signal.Signals(signum).name}: stopped after {stopped_at} messages, in {took:.1f}s")


def test_concurrency_runs_engines_side_by_side_in_one_worker(pg_url, db, tmp_path) -> None:
    """--concurrency N: N engines in threads of one process share the work through SKIP LOCKED."""
    leads = 400
    with MailSink(handler=SlowHandler(delay=0.005)) as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, batch_size=25)
        setup_world(Cli(config), tmp_path, [f"cc{i:03d}@c{i % 17}.example" for i in range(leads)],
                    cadence=one_step_cadence())
        with fleet(config, tmp_path / "logs") as workers:
            proc = workers.start("worker", "--concurrency", "3", "--batch-size", "25")
            wait_for(lambda: len(sink.received) >= leads, 120, what="every message")
            proc.popen.send_signal(signal.SIGTERM)
            assert workers.wait_all(timeout=30) == [0], proc.output()[-3000:]
        assert "worker started: 3 engine(s) on PostgreSQL" in proc.output()
        ids = sink_message_ids(sink)
        assert len(ids) == leads and sum(ids.values()) == leads
        assert db.enrollment_states() == {"finished": leads}
        no_claims_left(db)


# -- 5. provider faults across a batch -----------------------------------------------------------

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)


def attempts_of(db: Db, email: str) -> list:
    return db.rows("SELECT a.number, a.started_at, a.finished_at, a.retry_at, a.error FROM touch_attempts a "
                   "JOIN touches t ON t.id = a.touch_id JOIN leads l ON l.id = t.lead_id "
                   "WHERE l.email = :email ORDER BY a.number", email=email)


def status_of(db: Db, email: str) -> tuple[str, str]:
    row = db.rows("SELECT t.status, e.state FROM touches t JOIN enrollments e ON e.id = t.enrollment_id "
                  "JOIN leads l ON l.id = t.lead_id WHERE l.email = :email", email=email)
    assert len(row) == 1, (email, row)
    return row[0].status, row[0].state


def test_provider_faults_retry_as_new_attempts_with_backoff(pg_url, db, tmp_path) -> None:
    refused = [f"f{i:02d}@f{i}.example" for i in (0, 5, 10, 15)]
    dropped_before_data = "f07@f7.example"
    stalled, dropped_after_data = "g03@g3.example", "h04@h4.example"
    handler = FaultyHandler(refuse={address: 2 for address in refused}, drop_at_rcpt={dropped_before_data},
                            stall_after_data={stalled}, stall=2.0, drop_after_data={dropped_after_data})
    with MailSink(handler=handler) as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port, smtp_timeout=1,
                                    retry_base_seconds=60, batch_size=50)
        cli = Cli(config)
        now = iso_z(T0)
        setup_world(cli, tmp_path, [], cadence=one_step_cadence(), now=now)
        # Three batches, one broken connection each (the channel reconnects once per batch).
        batches = {"f": [f"f{i:02d}@f{i}.example" for i in range(20)],
                   "g": [f"g{i:02d}@g{i}.example" for i in range(10)],
                   "h": [f"h{i:02d}@h{i}.example" for i in range(10)]}
        for emails in batches.values():
            enroll_emails(cli, tmp_path, emails, "scale", now)
            cli("worker", "--once", now=now)
        wait_for(lambda: stalled in {r for m in sink.received for r in m.rcpt_tos}, 10, what="the stalled message")

        faulty = set(refused) | {dropped_before_data, stalled, dropped_after_data}
        everyone = [e for emails in batches.values() for e in emails]
        for email in everyone:
            if email not in faulty:  # the rest of each batch went out on the first attempt
                assert status_of(db, email) == ("sent", "finished"), email
                assert [a.number for a in attempts_of(db, email)] == [1]
        for email in [*refused, dropped_before_data]:
            assert status_of(db, email) == ("pending", "active"), email
            (first,) = attempts_of(db, email)
            assert first.retry_at - first.started_at == timedelta(seconds=60), email
        assert "451" in attempts_of(db, refused[0])[0].error
        # After the terminator the server may have the message: unknown, never retried by itself.
        assert status_of(db, stalled) == ("unknown", "needs_review")
        assert status_of(db, dropped_after_data) == ("unknown", "needs_review")

        t1 = T0 + timedelta(seconds=61)
        cli("worker", "--once", now=iso_z(t1))
        assert status_of(db, dropped_before_data) == ("sent", "finished")
        assert [a.number for a in attempts_of(db, dropped_before_data)] == [1, 2]
        for email in refused:
            second = attempts_of(db, email)[1]
            assert (second.number, second.started_at, second.retry_at) == (2, t1, t1 + timedelta(seconds=120))
        cli("worker", "--once", now=iso_z(t1 + timedelta(seconds=119)))  # not due yet: nothing happens
        assert all(status_of(db, email)[0] == "pending" for email in refused)
        t2 = t1 + timedelta(seconds=120)
        cli("worker", "--once", now=iso_z(t2))
        for email in refused:
            assert status_of(db, email) == ("sent", "finished")
            assert [(a.number, a.started_at) for a in attempts_of(db, email)] == [(1, T0), (2, t1), (3, t2)]
        cli("worker", "--once", now=iso_z(t2 + timedelta(days=1)))  # the unknown ones stay put

        ids = sink_message_ids(sink)
        by_status = assert_at_most_once(db, ids)
        assert sorted(t.message_id for t in by_status["unknown"]) == sorted(
            t.message_id for t in db.touches() if t.status == "unknown")
        assert len(by_status["sent"]) == len(everyone) - 2
        assert len(ids) == len(everyone) - 1  # the stalled one reached the sink; the dropped one did not
        unknown = json.loads(cli("touches", "unknown", "--format", "json").output)
        assert sorted(row["lead_email"] for row in unknown) == sorted([stalled, dropped_after_data])
        assert ("refuse", refused[0]) in handler.events and ("drop_at_rcpt", dropped_before_data) in handler.events


# -- 6. SQLite: one worker only --------------------------------------------------------------------


def test_sqlite_refuses_a_second_worker(sqlite_template, tmp_path) -> None:
    database = tmp_path / "sequencer.db"
    shutil.copy(sqlite_template, database)
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=f"sqlite:///{database}", smtp_port=sink.port)
        lock = Path(f"{database}.worker.lock")
        with fleet(config, tmp_path / "logs") as procs:
            first = procs.start("worker")
            wait_for(lambda: lock.exists() and lock.read_text() == f"pid {first.pid}", 30, what="the worker lock")

            for args in (["worker", "--once"], ["serve", "--port", str(free_port())]):
                refused = run(config, *args, expect=None, timeout=60)
                assert refused.returncode != 0, (args, refused.stdout, refused.stderr)
                assert f"pid {first.pid} already runs the engine" in refused.stderr, refused.stderr
                assert "SQLite" in refused.stderr and "PostgreSQL" in refused.stderr

            port = free_port()
            web = procs.start("serve", "--no-scheduler", "--port", str(port), name="web")

            def healthy() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                        return response.status == 200
                except OSError:
                    return False

            wait_for(healthy, 30, interval=0.2, what="/healthz")
            assert web.alive() and first.alive()
            web.popen.terminate()
            web.popen.wait(timeout=30)
            first.popen.send_signal(signal.SIGTERM)
            assert first.popen.wait(timeout=30) == 0

            try:
                refused = run(config, "worker", "--concurrency", "2", expect=None, timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail("`worker --concurrency 2` started on SQLite")
            assert refused.returncode != 0
            assert "--concurrency above 1 needs PostgreSQL" in refused.stderr and "SQLite" in refused.stderr


# -- 7. touches unknown / resolve through the CLI ---------------------------------------------------


def test_resolve_unknown_touches_through_the_cli(db_url, tmp_path) -> None:
    pauses = tmp_path / "pauses.txt"
    pauses.touch()
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=db_url, smtp_port=sink.port, lease_seconds=2)
        cli = Cli(config)
        setup_world(cli, tmp_path, ["ann@a.example", "bob@b.example"], cadence=two_step_cadence())
        with fleet(config, tmp_path / "logs") as workers:
            proc = workers.start("worker", "--once", env={"SEQUENCER_TEST_PAUSE": "after_plan",
                                                          "SEQUENCER_TEST_PAUSE_FILE": str(pauses)})
            wait_for(lambda: f"{proc.pid} after_plan" in pauses.read_text(), 60, what="the pause")
            proc.kill9()
        time.sleep(3.2)  # the lease expires (SQLite's clock counts whole seconds)
        cli("worker", "--once")
        assert sink.received == []
        unknown = {row["lead_email"]: row for row in json.loads(cli("touches", "unknown", "--format", "json").output)}
        assert sorted(unknown) == ["ann@a.example", "bob@b.example"]
        assert all(row["step"] == "intro" and row["message_id"] for row in unknown.values())

        handle = Db(db_url)
        try:
            def enrollment(email: str) -> sa.Row:
                return handle.rows("SELECT e.state, e.step_position, e.next_due_at FROM enrollments e "
                                   "JOIN leads l ON l.id = e.lead_id WHERE l.email = :email", email=email)[0]

            assert enrollment("ann@a.example").state == "needs_review"
            before = datetime.now(timezone.utc)
            out = cli("touches", "resolve", str(unknown["ann@a.example"]["id"]), "--sent").output
            assert "resolved as sent" in out
            ann = enrollment("ann@a.example")
            assert (ann.state, ann.step_position) == ("active", 1)
            due = ann.next_due_at if isinstance(ann.next_due_at, datetime) else datetime.fromisoformat(ann.next_due_at)
            assert due.replace(tzinfo=timezone.utc) >= before + timedelta(days=1) - timedelta(seconds=5)

            bob_touch = unknown["bob@b.example"]["id"]
            cli("touches", "resolve", str(bob_touch), "--not-sent")
            cli("worker", "--once")
            (message,) = sink.messages()
            assert message["To"].addresses[0].addr_spec == "bob@b.example"
            assert message["Message-ID"] == unknown["bob@b.example"]["message_id"]
            attempts = handle.rows("SELECT number FROM touch_attempts WHERE touch_id = :id ORDER BY number",
                                   id=bob_touch)
            assert [a.number for a in attempts] == [1, 2]
            bob = enrollment("bob@b.example")
            assert (bob.state, bob.step_position) == ("active", 1)

            for touch_id, says in ((bob_touch, "not unknown"), (unknown["ann@a.example"]["id"], "not unknown"),
                                   (999999, "no touch 999999")):
                refused = cli("touches", "resolve", str(touch_id), "--not-sent", expect=None)
                assert refused.exit_code != 0 and says in refused.output, refused.output
            assert json.loads(cli("touches", "unknown", "--format", "json").output) == []
            assert len(sink.received) == 1
        finally:
            handle.dispose()


def test_resolve_refusal_names_the_status_plainly(sqlite_template, tmp_path) -> None:
    database = tmp_path / "sequencer.db"
    shutil.copy(sqlite_template, database)
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=f"sqlite:///{database}", smtp_port=sink.port)
        cli = Cli(config)
        setup_world(cli, tmp_path, ["ann@a.example"], cadence=one_step_cadence())
        cli("worker", "--once")
        refused = cli("touches", "resolve", "1", "--sent", expect=1)
        assert "touch 1 is sent, not unknown" in refused.output, refused.output


# -- 8. throttles hold across workers ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [
    "domain",
    "mailbox",
])
def test_throttles_hold_under_four_concurrent_workers(limit, pg_url, db, tmp_path) -> None:
    if limit == "domain":
        emails, cap, domain_limit, expected = [f"d{i:03d}@big.example" for i in range(200)], 1_000_000, 50, 50
    else:
        emails, cap, domain_limit, expected = [f"m{i:03d}@m{i}.example" for i in range(300)], 100, 0, 100
    with MailSink() as sink:
        config = write_scale_config(tmp_path / "config.toml", db_url=pg_url, smtp_port=sink.port,
                                    domain_limit=domain_limit)
        setup_world(Cli(config), tmp_path, emails, cadence=one_step_cadence(), daily_cap=cap)
        with fleet(config, tmp_path / "logs") as workers:
            procs = [workers.start("worker", "--once", "--batch-size", "20", name=f"w{n}") for n in range(4)]
            codes = workers.wait_all(timeout=120)
        assert codes == [0, 0, 0, 0], "\n\n".join(p.output()[-3000:] for p in procs)
        ids = sink_message_ids(sink)
        assert len(ids) == expected and sum(ids.values()) == expected
        assert db.touch_states() == {"sent": expected}
        assert db.enrollment_states() == {"finished": expected, "active": len(emails) - expected}
        assert sum(r["sent"] for r in reports(procs)) == expected
        no_claims_left(db)
