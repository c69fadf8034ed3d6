"""Database engine and sessions; SQLite gets the pragmas a concurrent app needs."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as so

# Alembic revisions live at the top of the source tree (DESIGN.md layout); installs are editable.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def make_engine(url: str, **kwargs) -> sa.Engine:
    """Create an engine; on SQLite turn on WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types
            # isolation_level=None hands transaction control to the events below, so that
            # BEGIN IMMEDIATE takes the write lock up front instead of failing later.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            # SQLite's default page cache is 2 MB: at a million enrollments every batch would
            # read its rows and index pages from disk again. 32 MB keeps a batch's pages hot
            # while the worker's memory stays bounded whatever the table size.
            cur.execute("PRAGMA cache_size=-32768")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: sa.Engine) -> so.sessionmaker[so.Session]:
    """Return the session factory every part of Sequencer uses."""
    return so.sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine_or_session: sa.Engine | so.Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, so.Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def alembic_config(url: str):
    """Return an Alembic Config pointing at the packaged migrations and this URL."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (the only way tables are created)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
