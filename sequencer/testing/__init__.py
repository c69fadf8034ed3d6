"""Sequencer's pytest plugin for its own tests and for plugin authors (docs/plugins.md, "Testing your plugin").

Load it from a conftest.py with `pytest_plugins = ["sequencer.testing"]`. It gives real parts:
`db_url` (a freshly migrated SQLite file and a PostgreSQL database from a throwaway cluster, so
every test that uses it runs on both), `smtp_sink` (an SMTP server on loopback keeping what it
receives), `config_path` / `settings` (a config.toml for them), `clock` (fixed, a Monday),
`runtime`, `cli` (the `sequencer` command in-process) and `sent_touches` (the touch_sent
events). `sequencer.testing.world` sets up and reads a world of reps, cadences, leads and
mail; `sequencer.testing.dovecot` runs a real IMAP server; `sequencer.testing.postgres` the
PostgreSQL cluster. A service that is missing skips the test on a developer machine and fails
it when CI=true.
"""
from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sequencer import hookimpl
from sequencer.channels import SentTouch
from sequencer.clock import FixedClock
from sequencer.config import load_settings
from sequencer.db import upgrade
from sequencer.mailsink import MailSink
from sequencer.runtime import Runtime
from sequencer.testing.postgres import PostgresCluster, PostgresUnavailable

# The message templates and cadences the tests write against: the repository's, when run from it.
REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
# 32 bytes or more, and no published value: `serve` and `worker` refuse anything less when
# [web] base_url is not on this machine (the test base_url is https://sequencer.test).
TEST_SECRET_KEY = "test-only-secret-key-0f3c9a7d51e24b88a6"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and callspec.params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgresql)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs against a throwaway PostgreSQL cluster")


def unavailable(reason: str) -> None:
    """Skip on a developer machine; in CI a missing service is a failure, never a skip."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres():
    try:
        cluster = PostgresCluster().start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    admin = sa.create_engine(cluster.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE seq_template")
    upgrade(cluster.url("seq_template"))
    cluster.admin = admin
    yield cluster
    admin.dispose()
    cluster.destroy()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A freshly migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "sequencer.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    cluster = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with cluster.admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE seq_template")
    yield cluster.url(name)
    with cluster.admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def smtp_sink():
    with MailSink() as sink:
        yield sink


def write_config(path: Path, *, db_url: str, smtp_port: int,
                 postal_address: str | None = "Sequencer Test Co, 1 Test Street, Testville",
                 lease_seconds: float = 5, retry_base_seconds: float = 60, tick_seconds: float | None = None,
                 batch_size: int | None = None, max_attempts: int | None = None, smtp_timeout: float = 5,
                 max_per_lead: int | None = None, domain_limit: int | None = None) -> Path:
    """Write a config for the test database and SMTP sink; a setting left None keeps the built-in default."""
    def setting(key: str, value: object) -> str:
        return "" if value is None else f"{key} = {value}"

    postal = f'postal_address = "{postal_address}"' if postal_address else ""
    path.write_text(f"""
templates_dir = "{REPO / 'templates'}"

[database]
url = "{db_url}"

[web]
base_url = "https://sequencer.test"
secret_key = "{TEST_SECRET_KEY}"

[sending]
{postal}
{setting("max_touches_per_lead_per_day", max_per_lead)}
{setting("max_per_recipient_domain_per_hour", domain_limit)}

[leads]
default_region = "US"

[engine]
lease_seconds = {lease_seconds}
{setting("tick_seconds", tick_seconds)}
{setting("batch_size", batch_size)}
retry_base_seconds = {retry_base_seconds}
{setting("max_attempts", max_attempts)}

[plugins.email]
inbound_secret = "test-inbound-secret"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = {smtp_timeout}
""", encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path, db_url: str, smtp_sink: MailSink) -> Path:
    return write_config(tmp_path / "config.toml", db_url=db_url, smtp_port=smtp_sink.port)


@pytest.fixture
def settings(config_path: Path):
    return load_settings(config_path)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc))  # a Monday


@pytest.fixture
def runtime(settings, clock):
    rt = Runtime(settings, clock)
    yield rt
    rt.dispose()


class _SentTouches:
    """Keeps the touch_sent events, as a plugin listening to them sees them."""

    def __init__(self) -> None:
        self.touches: list[SentTouch] = []

    @hookimpl
    def touch_sent(self, touch: SentTouch) -> None:
        self.touches.append(touch)


@pytest.fixture
def sent_touches(runtime) -> Iterator[list[SentTouch]]:
    """Every touch_sent event of the test, in order. Adding a plugin collects the channels anew:
    ask for it before a fixture that holds one of the runtime's channels."""
    listener = _SentTouches()
    runtime.plugins.add_plugin(listener, "sent-touches")
    yield listener.touches
    runtime.plugins.remove_plugin("sent-touches")


class Cli:
    """Run `sequencer` in-process against the test config, optionally at a given instant."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.runner = CliRunner()

    def __call__(self, *args: str, now: str | None = None, input: str | None = None, expect: int | None = 0):
        from sequencer.cli import add_plugin_commands, main

        add_plugin_commands(str(self.config_path))
        argv = ["--config", str(self.config_path)] + (["--now", now] if now else []) + list(args)
        result = self.runner.invoke(main, argv, input=input, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"sequencer {' '.join(args)} exited {result.exit_code}:\n{result.output}"
        return result


@pytest.fixture
def cli(config_path: Path) -> Cli:
    return Cli(config_path)
