"""Shared helpers for the benchmarks: databases (SQLite file or a throwaway PostgreSQL cluster),
the config file, a fast bulk load of leads and enrollments, and the report printing.

Not a benchmark itself; `bench/dispatch.py` and `bench/tick_scale.py` import it.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # sequencer.testing.postgres and the sequencer package when not installed
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from sequencer.db import make_engine, upgrade  # noqa: E402
from sequencer.models import Cadence, Mailbox, Step, User  # noqa: E402

SCHEDULE_ALWAYS_OPEN: dict[str, Any] = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
    "timezone": "lead",
    "holidays": "none",
    "skip_dates": [],
}
SUBJECT = "Quick question, {{ lead.first_name }}"
BODY = ("Hi {{ lead.first_name }},\n\n"
        "Would {{ lead.company }} like fewer manual follow-ups this quarter?\n\n"
        "Best,\n{{ sender.name }}")
POSTAL_ADDRESS = "Bench Co, 1 Bench Street, Benchville"
BASE_URL = "https://sequencer.bench"
# 32 bytes or more: `sequencer worker` refuses a shorter key with a base_url that is not on this machine.
SECRET_KEY = "bench-secret-key-never-used-outside-benchmarks"
MAILBOX = "rep@bench.example"
ZONES = ("America/New_York", "Europe/Berlin", "UTC")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- databases ----------------------------------------------------------------------------------


class Databases:
    """Hand out fresh, migrated databases of one kind; cleans everything up on close."""

    def __init__(self, kind: str) -> None:
        if kind not in ("sqlite", "postgresql"):
            raise SystemExit(f"--database must be sqlite or postgresql, not {kind!r}")
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="seq-bench-"))
        self.cluster = None
        self.admin: sa.Engine | None = None
        if kind == "postgresql":
            from sequencer.testing.postgres import PostgresCluster

            self.cluster = PostgresCluster().start()
            self.admin = sa.create_engine(self.cluster.url(), isolation_level="AUTOCOMMIT",
                                          poolclass=sa.pool.NullPool)

    def create(self, name: str) -> str:
        """Create and migrate a database; return its URL."""
        if self.kind == "sqlite":
            url = f"sqlite:///{self.dir / (name + '.db')}"
        else:
            assert self.cluster is not None and self.admin is not None
            name = f"{name}_{uuid.uuid4().hex[:6]}"
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            url = self.cluster.url(name)
        upgrade(url)
        return url

    def drop(self, url: str) -> None:
        if self.kind == "sqlite":
            path = Path(url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
            return
        assert self.admin is not None
        name = url.rsplit("/", 1)[1]
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self.admin is not None:
            self.admin.dispose()
        if self.cluster is not None:
            self.cluster.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def databases(kind: str) -> Iterator[Databases]:
    dbs = Databases(kind)
    try:
        yield dbs
    finally:
        dbs.close()


def write_config(path: Path, *, db_url: str, smtp_port: int, batch_size: int = 500) -> Path:
    """Write a config.toml for the benchmark: nothing throttles, SMTP goes to the local sink."""
    path.write_text(f"""
templates_dir = "{REPO / 'templates'}"

[database]
url = "{db_url}"

[web]
base_url = "{BASE_URL}"
secret_key = "{SECRET_KEY}"

[sending]
postal_address = "{POSTAL_ADDRESS}"
max_touches_per_lead_per_day = 1000000
default_daily_cap = 1000000000

[engine]
batch_size = {batch_size}
lease_seconds = 600

[plugins.email]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = 60
""", encoding="utf-8")
    return path


# -- data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    user_id: int
    mailbox_id: int
    cadence_id: int
    leads: int
    due: int
    seconds: float


def _ts(dialect: str, at: datetime) -> Any:
    # SQLite stores naive UTC text in SQLAlchemy's format (see models.UTCDateTime); PostgreSQL takes the datetime.
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else at


def load_world(url: str, *, leads: int, due: int, now: datetime | None = None) -> World:
    """Insert one rep, one mailbox, a one-step auto-email cadence, `leads` leads and one enrollment each.

    `due` enrollments (spread evenly over the id range) are due an hour ago; the rest are due in ten
    years. The leads and enrollments are generated inside the database (a recursive CTE on SQLite,
    generate_series on PostgreSQL), which loads a million of each in well under a minute.
    """
    started = time.perf_counter()
    now = now or utcnow()
    engine = make_engine(url)
    dialect = engine.dialect.name
    stride = max(1, leads // max(due, 1))
    with engine.begin() as conn:
        user_id = conn.execute(sa.insert(User).values(
            email=MAILBOX, name="Rita Rep", role="rep", timezone="UTC", created_at=now).returning(User.id)).scalar_one()
        mailbox_id = conn.execute(sa.insert(Mailbox).values(
            address=MAILBOX, display_name="Rita Rep", owner_id=user_id, transport={}, daily_cap=10**9,
            signature="", state="active", created_at=now).returning(Mailbox.id)).scalar_one()
        cadence_id = conn.execute(sa.insert(Cadence).values(
            name="bench", version=1, state="active", description="", schedule=SCHEDULE_ALWAYS_OPEN,
            exit_rules={"on": ["reply", "bounce", "opt_out"], "scope": "lead"}, definition_hash="bench",
            created_at=now).returning(Cadence.id)).scalar_one()
        conn.execute(sa.insert(Step).values(
            cadence_id=cadence_id, key="intro", position=0, channel="email", action="auto", wait="0d",
            subject=SUBJECT, body=BODY, template=None, thread=False, variants=[]))
        zone = " ".join(f"WHEN {i} THEN '{z}'" for i, z in enumerate(ZONES))
        columns = ("email, email_normalized, external_id, first_name, last_name, company, domain, title, country, "
                   "timezone, timezone_source, candidate_zones, owner_id, custom, consents, email_invalid, "
                   "phone_wrong, created_at, updated_at")
        values = ("'lead' || x || '@company' || (x % 997) || '.example', "
                  "'lead' || x || '@company' || (x % 997) || '.example', 'ext-' || x, 'First' || x, 'Last' || x, "
                  "'Company ' || (x % 997), 'company' || (x % 997) || '.example', 'VP Sales', 'US', "
                  f"CASE x % {len(ZONES)} {zone} END, 'given', {{empty_list}}, :owner, {{empty_obj}}, {{empty_obj}}, "
                  "false, false, {ts}, {ts}")
        if dialect == "sqlite":
            lead_values = values.format(empty_list="'[]'", empty_obj="'{}'", ts=":now")
            sql = (f"INSERT INTO leads ({columns}) WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq "
                   f"WHERE x < :n) SELECT {lead_values} FROM seq")
        else:
            lead_values = values.format(empty_list="CAST('[]' AS jsonb)", empty_obj="CAST('{}' AS jsonb)",
                                        ts="CAST(:now AS timestamptz)")
            sql = f"INSERT INTO leads ({columns}) SELECT {lead_values} FROM generate_series(1, :n) AS x"
        conn.execute(sa.text(sql), {"n": leads, "owner": user_id, "now": _ts(dialect, now)})
        cast = (lambda p: p) if dialect == "sqlite" else (lambda p: f"CAST({p} AS timestamptz)")
        conn.execute(sa.text(
            "INSERT INTO enrollments (lead_id, cadence_id, cadence_name, mailbox_id, state, step_position, "
            "next_due_at, anchor_at, enrolled_at) "
            f"SELECT id, :cadence, 'bench', :mailbox, 'active', 0, "
            f"CASE WHEN id % :stride = 0 AND id <= :last_due THEN {cast(':due_at')} ELSE {cast(':later')} END, "
            f"{cast(':anchor')}, {cast(':anchor')} FROM leads ORDER BY id"),
            {"cadence": cadence_id, "mailbox": mailbox_id, "stride": stride, "last_due": stride * due,
             "due_at": _ts(dialect, now - timedelta(hours=1)), "later": _ts(dialect, now + timedelta(days=3650)),
             "anchor": _ts(dialect, now - timedelta(days=1))})
        due_count = conn.execute(sa.text("SELECT count(*) FROM enrollments WHERE next_due_at <= :now"),
                                 {"now": _ts(dialect, now)}).scalar_one()
    if dialect == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return World(user_id, mailbox_id, cadence_id, leads, due_count, time.perf_counter() - started)


# -- reporting --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "target met" if ok else "target MISSED"


def emit_json(payload: dict[str, Any]) -> None:
    """Print the final machine-readable line (tests parse the last line of stdout)."""
    print(json.dumps(payload, sort_keys=True), flush=True)
