"""A throwaway PostgreSQL cluster for tests and benchmarks, run as the `postgres` system user."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("SEQUENCER_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """initdb + pg_ctl in a temp folder owned by `postgres`, listening on 127.0.0.1:port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="seq-pg-"))
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # PostgreSQL refuses to run as root, so root hands the cluster to `postgres`.
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self) -> "PostgresCluster":
        if not (PG_BIN / "initdb").exists():
            raise PostgresUnavailable(f"no PostgreSQL binaries in {PG_BIN}; install postgresql-15 or set SEQUENCER_PG_BIN")
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        try:
            self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C.UTF-8")
            self._run(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                      "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            raise PostgresUnavailable(f"PostgreSQL did not start: {exc.stderr or exc.stdout}") from None
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        self._run(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        # -l matters: without a log file the new postmaster keeps our captured pipes open forever.
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-m", "fast", "-w",
                  "-t", "60", "restart", check=True)

    def destroy(self) -> None:
        self.stop("immediate")
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
