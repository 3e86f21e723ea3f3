"""PostgreSQL for the tests: a fresh cluster per session, password-authenticated over TCP.

``postgres_server`` runs ``initdb`` into a temporary folder and starts the server with
``pg_ctl`` on a free loopback port. Every connection (socket and TCP) needs the password
of the superuser ``silta`` (scram-sha-256), so a wrong password really is refused.
``initdb`` refuses to run as root: as root the programs run as the ``postgres`` OS user
(from the Debian package), otherwise as the current user. ``stop()`` and ``start()``
take the server away and bring it back on the same port with the same data: an outage
as clients see it. ``new_database()`` gives each test its own database.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, wait_for_port

__all__ = ["postgres_server"]

INSTALL_HINT = ("PostgreSQL's server programs (initdb, pg_ctl) are not installed: run .ci/run, "
                "or `apt-get install postgresql`")


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(found)).parent
    # Debian keeps them off PATH, one folder per major version: take the newest.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name))
    if not candidates:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return Path(candidates[-1]).parent


def _run_as() -> list[str]:
    """The prefix that runs a server program as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no `postgres` OS user to run initdb as; "
                    + INSTALL_HINT, pytrace=False)
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """A running PostgreSQL; ``url`` never holds the password (pass ``password`` apart)."""

    base: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    user: str = "silta"
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(8))
    database: str = "stat"
    bin_dir: Path = field(default_factory=_bin_dir)
    _prefix: list[str] = field(default_factory=_run_as)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def _pg(self, program: str, *args: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        cmd = [*self._prefix, str(self.bin_dir / program), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base, timeout=120)
        if check and proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"{program} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}",
                        pytrace=False)
        return proc

    def init(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        (self.base / "sock").mkdir()
        if self._prefix:
            owner = pwd.getpwnam("postgres")
            for p in (self.base, pwfile, self.base / "sock"):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        self._pg("initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                 "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()

    def start(self) -> None:
        """Start the server; a no-op when it runs (fixtures call it after outage tests)."""
        if self.running:
            return
        opts = (f"-c listen_addresses={self.host} -p {self.port} -k {self.base / 'sock'} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir),
                 "-l", str(self.base / "server.log"), "-o", opts, "start")
        wait_for_port(self.port, timeout=30, host=self.host)

    def stop(self) -> None:
        """Stop at once: open sessions are cut, as when the server goes down."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-m", "fast", "stop")

    @property
    def running(self) -> bool:
        return self._pg("pg_ctl", "-D", str(self.data_dir), "status", check=False
                        ).returncode == 0

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A psycopg connection (autocommit) for the tests' own checks."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, dbname=database or self.database,
                               autocommit=True, **kwargs)

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its name (``url_for(name)`` for its URL)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def new_schema(self, database: str | None = None, prefix: str = "s") -> str:
        """A fresh schema in ``database`` (default: ``stat``); returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.connect(database) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return name


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL on loopback for the whole session, with the database ``stat``."""
    # Not under pytest's tmp folder: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="silta-pg-"))
    server = PostgresServer(base)
    try:
        server.init()
        server.start()
        with server.connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{server.database}"')
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
