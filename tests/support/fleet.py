"""Run `sequencer` worker processes against a test database, and look at what they did.

Used by tests/test_scaleout.py: real processes (so kill -9 and signals are real), a real
SMTP sink in the test process, and plain SQL reads of the outcome. Setting up (the rep, the
cadence, the leads) goes through tests/support/world.py with tests/conftest.py's in-process `Cli`.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from sequencer.mailsink import MailSink, SinkHandler
from sequencer.testing import Cli, write_config
from sequencer.testing.world import ALWAYS_OPEN, apply, cadence_name, enroll_emails, team


def sequencer_executable() -> str:
    """The `sequencer` console script of this interpreter's environment (there is no `python -m sequencer`)."""
    beside = Path(sys.executable).parent / "sequencer"
    if beside.exists():
        return str(beside)
    found = shutil.which("sequencer")
    if found is None:
        raise RuntimeError("the `sequencer` console script is not installed; run `pip install -e .`")
    return found


SEQUENCER = sequencer_executable()


def one_step_cadence(name: str = "scale") -> str:
    return f'name = "{name}"\n' + ALWAYS_OPEN + """
[[steps]]
key = "intro"
channel = "email"
subject = "Hello {{ lead.first_name }}"
body = "Hi {{ lead.first_name }}, a short note."
"""


def two_step_cadence(name: str = "twostep") -> str:
    return one_step_cadence(name) + """
[[steps]]
key = "bump"
channel = "email"
wait = "1d"
thread = true
body = "Hi {{ lead.first_name }}, bumping this up."
"""


def write_scale_config(path: Path, *, db_url: str, smtp_port: int, lease_seconds: float = 2, tick_seconds: float = 0.5,
                       batch_size: int = 200, retry_base_seconds: float = 60, max_attempts: int = 5,
                       smtp_timeout: float = 5, max_per_lead: int = 100, domain_limit: int = 0) -> Path:
    """tests/conftest.py's config, with the engine and sending settings of a fleet of workers."""
    return write_config(path, db_url=db_url, smtp_port=smtp_port, lease_seconds=lease_seconds,
                        tick_seconds=tick_seconds, batch_size=batch_size, retry_base_seconds=retry_base_seconds,
                        max_attempts=max_attempts, smtp_timeout=smtp_timeout, max_per_lead=max_per_lead,
                        domain_limit=domain_limit)


# -- running the CLI -----------------------------------------------------------------------


def cli_env(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQUENCER_")}
    env["SEQUENCER_CONFIG"] = str(config)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(config: Path, *args: str, now: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120, expect: int | None = 0) -> subprocess.CompletedProcess:
    """Run `sequencer ARGS` in its own process and wait for it."""
    argv = [SEQUENCER, "--config", str(config)] + (["--now", now] if now else []) + list(args)
    done = subprocess.run(argv, env=cli_env(config, **(env or {})), capture_output=True, text=True, timeout=timeout)
    if expect is not None:
        assert done.returncode == expect, (f"sequencer {' '.join(args)} exited {done.returncode}:\n"
                                           f"{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


@dataclass
class Fleet:
    """Worker processes of one test; whatever is still running at the end is killed."""

    config: Path
    logs: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str] | None = None, name: str = "worker") -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}-{len(self.procs)}-{uuid.uuid4().hex[:4]}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen([SEQUENCER, "--config", str(self.config), *args], stdout=out,
                                     stderr=subprocess.STDOUT, env=cli_env(self.config, **(env or {})),
                                     start_new_session=True)
        proc = Proc(popen, log, name)
        self.procs.append(proc)
        return proc

    def wait_all(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.popen.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{proc.name} (pid {proc.pid}) still running after {timeout}s:\n"
                                     f"{proc.output()[-3000:]}") from None
        return codes

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@contextmanager
def fleet(config: Path, logs: Path) -> Iterator[Fleet]:
    f = Fleet(config, logs)
    try:
        yield f
    finally:
        f.kill_all()


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the world: a rep, a mailbox, a cadence, leads -------------------------------------------------


def setup_world(cli: Cli, tmp: Path, emails: list[str], *, cadence: str, daily_cap: int = 1_000_000,
                now: str | None = None) -> None:
    team(cli, daily_cap=daily_cap, now=now)
    apply(cli, tmp, cadence, now=now)
    if emails:
        enroll_emails(cli, tmp, emails, cadence_name(cadence), now)


# -- the SMTP sink ---------------------------------------------------------------------------------

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)  # folded or not


def message_id_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode() if match else None


def sink_message_ids(sink: MailSink) -> Counter:
    """Message-ID -> how many times the sink received it (a missing header counts under None)."""
    with sink.handler._lock:
        received = list(sink.received)
    return Counter(message_id_of(m.data) for m in received)


@dataclass
class SlowHandler(SinkHandler):
    """A sink that takes `delay` seconds per message (without blocking other connections)."""

    delay: float = 0.0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd API
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class FaultyHandler(SinkHandler):
    """A sink that misbehaves on purpose, by recipient address.

    refuse: recipient -> how many RCPT tries get `451` before it is accepted;
    drop_at_rcpt: recipients whose first RCPT closes the connection (before the data: retryable);
    drop_after_data: recipients whose first DATA closes the connection after the terminator,
        without a reply (unknown); `keep` says whether the server kept the message;
    stall_after_data: recipients whose first DATA is kept, then answered only after `stall`
        seconds (the client times out after the terminator: unknown).
    """

    refuse: dict[str, int] = field(default_factory=dict)
    drop_at_rcpt: set[str] = field(default_factory=set)
    drop_after_data: set[str] = field(default_factory=set)
    keep_dropped: bool = False
    stall_after_data: set[str] = field(default_factory=set)
    stall: float = 2.0
    rcpt_tries: Counter = field(default_factory=Counter)
    data_tries: Counter = field(default_factory=Counter)
    events: list[tuple[str, str]] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: ANN001
        self.rcpt_tries[address] += 1
        tries = self.rcpt_tries[address]
        if address in self.drop_at_rcpt and tries == 1:
            self.events.append(("drop_at_rcpt", address))
            server.transport.close()
            return "421 closing"  # never reaches the closed connection
        if tries <= self.refuse.get(address, 0):
            self.events.append(("refuse", address))
            return "451 4.7.1 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        address = envelope.rcpt_tos[0]
        self.data_tries[address] += 1
        first = self.data_tries[address] == 1
        if address in self.drop_after_data and first:
            self.events.append(("drop_after_data", address))
            if self.keep_dropped:
                await super().handle_DATA(server, session, envelope)
            server.transport.close()
            return "451 never seen"
        if address in self.stall_after_data and first:
            # Keep the message first: aiosmtpd cancels the handler when the client hangs up.
            self.events.append(("stall_after_data", address))
            reply = await super().handle_DATA(server, session, envelope)
            await asyncio.sleep(self.stall)
            return reply
        return await super().handle_DATA(server, session, envelope)


# -- reading the database ------------------------------------------------------------------------


class Db:
    """Plain SQL reads of a test database (no pool: survives a server restart)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def rows(self, sql: str, **params: Any) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def enrollment_states(self) -> Counter:
        return Counter(dict(self.rows("SELECT state, count(*) FROM enrollments GROUP BY state")))

    def touch_states(self) -> Counter:
        return Counter(dict(self.rows("SELECT status, count(*) FROM touches GROUP BY status")))

    def touches(self) -> list[sa.Row]:
        return self.rows("SELECT t.id, t.enrollment_id, t.step_key, t.status, t.message_id, e.state AS enrollment_state "
                         "FROM touches t JOIN enrollments e ON e.id = t.enrollment_id ORDER BY t.id")

    def dispose(self) -> None:
        self.engine.dispose()


def create_database(admin: sa.Engine) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE seq_template")
    return name


def drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def restart_postgres(cluster: Any) -> None:
    """`pg_ctl restart -m fast` on the test cluster."""
    cluster.restart()