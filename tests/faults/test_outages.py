"""Outages under a running agent: servers stopped mid-run and started again, a stalled link.

What is broken, and what must hold each time (every server is this test's own, never a
session fixture: stopping a shared one would break other tests in the same process):

1. the SFTP source (a real sshd) is stopped while the agent copies large files (the
   stop waits until a session has a file open part-way, seen in /proc): the run in
   flight fails, is recorded (runs table) and alerted (`run_failed`); the files not yet
   committed are untouched (same bytes and mtime, no temporary names), the committed
   ones were moved only after their commit; after the restart every file is in the
   table exactly once, the Delta version is exact, the alert resolves.
2. PostgreSQL, the source of a watermark ingest, is stopped mid-run (after some commits):
   the same invariants, per watermark window: every row once after the restart.
3. Azurite, the lake itself, is stopped mid-run: no partial commit is visible (a fresh
   deltalake reader and DuckDB see whole batches only), the run is recorded and alerted,
   and after the restart every file is in the table once.
4. a TCP proxy between the agent and sshd stalls mid-transfer (a dead link, nothing
   closes): the run times out after the connector's ``timeout_seconds``, fails, is
   recorded and alerted; the agent's main loop goes on meanwhile (fresh heartbeat,
   `silta agent health` exit 0 while the run hangs) and another sync lands; after the
   link comes back the failed sync recovers with every file once.
5. a Delta commit that landed but whose reply was lost while the lake stays away (one
   injected fault, in-process: no real server loses that one reply on demand): the batch
   stays pending, and the next run finds it in the table instead of writing it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.conftest import dedent, duck_rows
from tests.connectors import test_lake_cloud
from tests.connectors.test_lake_cloud import Env, _Duck, read_everywhere
from tests.e2e._cli import Background, background, delta_count, ledger, silta, wait_for, write_csv
from tests.servers.azurite import AzuriteServer
from tests.servers.postgres import PostgresServer
from tests.servers.sshd import SshServer, _descendants, start_sshd
from tests.tcp_proxy import TcpProxy

#: a large CSV each: bigger than the SFTP store's 8 MiB read-ahead, so a stop lands
#: while the file is open part-way
ROWS_PER_FILE = 90_000
PAYLOAD = "x" * 120


#: DuckDB with the delta, httpfs and azure extensions (reads tables on Azurite)
azure_duck = test_lake_cloud.duck3


# -- helpers -------------------------------------------------------------------------------
def _csv(path: Path, first_id: int, rows: int, *, age: float, payload: str = PAYLOAD) -> str:
    """Write a CSV of ids ``first_id..`` with an mtime ``age`` s ago; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,grp,payload", *(f"{i},{i % 7},{payload}" for i in
                                 range(first_id, first_id + rows))]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    t = time.time() - age
    os.utime(path, (t, t))
    return hashlib.sha256(data).hexdigest()


def _identity(path: Path) -> tuple[str, int, int]:
    """sha256, size and mtime of a file: what "untouched" means."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns


def _runs(state: Path, name: str) -> list[dict[str, Any]]:
    try:
        return ledger(state, "SELECT status, trigger, files, rows, batches, table_version, "
                             "error FROM runs WHERE name=? ORDER BY started_at, rowid", (name,))
    except sqlite3.Error:  # the state store is still being created
        return []


def _finished(state: Path, name: str, count: int) -> list[dict[str, Any]] | None:
    """The runs of ``name`` once ``count`` of them have finished (none running)."""
    runs = _runs(state, name)
    done = [r for r in runs if r["status"] != "running"]
    return runs if len(done) >= count and len(done) == len(runs) else None


def _alerts(state: Path) -> list[tuple[str, str, str, str]]:
    """The agent's own alerts: (check, target, state, summary), oldest first."""
    return [(a["check_name"], a["target"], a["state"], a["summary"]) for a in ledger(
        state, "SELECT check_name, target, state, summary FROM alerts WHERE monitor='agent' "
               "ORDER BY id")]


def _committed_files(state: Path, sync: str) -> set[str]:
    return {r["path"] for r in ledger(state, "SELECT path FROM files WHERE sync=? AND "
                                             "status='committed'", (sync,))}


def _by_source(table: Any, duck: Any, path: str | None = None) -> dict[str, tuple[int, ...]]:
    """Per ``_silta_source``: (rows, distinct ids, min id, max id), from deltalake and from
    DuckDB (``path``: the table's folder, or None when DuckDB reads it elsewhere)."""
    data = table.to_pyarrow_dataset().to_table(columns=["id", "_silta_source"])
    grouped = data.group_by("_silta_source").aggregate(
        [("id", "count"), ("id", "count_distinct"), ("id", "min"), ("id", "max")])
    mine = {r["_silta_source"]: (r["id_count"], r["id_count_distinct"], r["id_min"],
                                 r["id_max"]) for r in grouped.to_pylist()}
    if path is not None:
        theirs = {r[0]: tuple(r[1:]) for r in duck_rows(
            duck, Path(path), "SELECT _silta_source, count(id), count(DISTINCT id), min(id), "
                              "max(id) FROM t GROUP BY 1")}
        assert theirs == mine
    return mine


def _expected(names: list[str], rows: int = ROWS_PER_FILE) -> dict[str, tuple[int, ...]]:
    """What `_by_source` gives for files of ``rows`` consecutive ids each, in order."""
    return {f"inbox:{n}": (rows, rows, i * rows, (i + 1) * rows - 1)
            for i, n in enumerate(names)}


def _top(root: Path) -> set[str]:
    """The first two levels of every file's path under ``root``."""
    return {"/".join(p.split("/")[:2]) for p in _tree(root)}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _reading_part_way(server: SshServer, root: Path) -> tuple[str, int, int] | None:
    """A file under ``root`` that an sshd session has open part-way: (name, pos, size)."""
    if server._proc is None:
        return None
    for pid in _descendants(server._proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            if not target.startswith(f"{root}/"):
                continue
            pos = int(info.split("pos:", 1)[1].split()[0])
            size = os.stat(target).st_size
            if 0 < pos < size:
                return os.path.relpath(target, root), pos, size
    return None


def _stop_agent(agent: Background) -> None:
    assert agent.terminate(timeout=30) == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of this test's own: stopping it touches no other test."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def _sftp_config(folder: Path, server: SshServer, *, port: int | None = None,
                 known_hosts: Path | None = None, timeout: float = 10.0, retries: int = 1,
                 extra: str = "") -> Path:
    path = folder / "silta.toml"
    path.write_text(dedent(f'''
        [agent]
        name = "test-agent"
        state_dir = "state"
        heartbeat_seconds = 1
        [lake]
        uri = "lake"
        [connectors.inbox]
        type = "sftp"
        host = "{server.host}"
        port = {port or server.port}
        username = "{server.username}"
        key_file = "{server.key_file}"
        known_hosts = "{known_hosts or server.known_hosts}"
        root = "{server.root}"
        timeout_seconds = {timeout}
        retries = {retries}
        [[syncs]]
        name = "s"
        source = "inbox:*.csv"
        target = "lake:raw/s"
        # run at start-up; later runs come from the operator's `silta sync run`
        watch = true
        settle_seconds = 0
        batch_max_files = 1
        on_success = "move"
        ''') + extra, encoding="utf-8")
    return path


# -- 1. the SFTP server stopped mid-transfer ------------------------------------------------
@pytest.mark.timeout(120)
def test_sftp_server_stopped_mid_transfer_then_every_file_lands_once(
        tmp_path: Path, sshd: SshServer, duck: Any) -> None:
    names = [f"part{i}.csv" for i in range(3)]
    for i, n in enumerate(names):
        _csv(sshd.root / n, i * ROWS_PER_FILE, ROWS_PER_FILE, age=400 - i)
    before = {n: _identity(sshd.root / n) for n in names}
    config = _sftp_config(tmp_path, sshd)
    state, table = tmp_path / "state", tmp_path / "lake" / "raw" / "s"

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        def mid_transfer() -> tuple[str, int, int] | None:
            assert agent.alive(), agent.stderr()
            try:
                if not _committed_files(state, "s"):
                    return None  # one commit first: both sides of "untouched" are checked
            except sqlite3.Error:
                return None
            return _reading_part_way(sshd, sshd.root)

        seen = wait_for("a file open part-way after the first commit", mid_transfer,
                        timeout=60, interval=0.01)
        sshd.stop()
        name, pos, size = seen
        assert name in names and 0 < pos < size

        runs = wait_for("the run to end", lambda: _finished(state, "s", 1), timeout=60)
        assert [(r["status"], r["trigger"]) for r in runs] == [("failed", "startup-scan")]
        # the stop cut a read, or the retry found nobody listening
        assert re.fullmatch(
            rf"SFTP {sshd.username}@127\.0\.0\.1:{sshd.port}: (connecting: connection refused "
            r"\(is the SFTP server running\?\)|reading 'part\d\.csv': connection lost \(.*\))"
            r"; transient: the work is retried", runs[0]["error"]), runs[0]["error"]
        committed = _committed_files(state, "s")
        done = sorted(committed)
        assert 1 <= len(done) < len(names) and runs[0]["files"] == len(done)
        assert runs[0]["table_version"] == len(done) - 1
        assert _alerts(state) == [("run_failed", "sync:s", "firing",
                                   f"sync s failed: {runs[0]['error']}")]

        # the table holds the committed files whole, nothing of the one cut off
        t = DeltaTable(str(table))
        assert t.version() == len(done) - 1
        expected = _expected(names)
        assert _by_source(t, duck, str(table)) == {f"inbox:{n}": expected[f"inbox:{n}"]
                                                  for n in done}
        # files not committed are untouched; committed ones were moved only after it
        for n in names:
            if n in committed:
                assert not (sshd.root / n).exists()
                assert _identity(sshd.root / ".silta-done" / n) == before[n]
            else:
                assert _identity(sshd.root / n) == before[n]
        assert _tree(sshd.root) == {*(n for n in names if n not in committed),
                                    *(f".silta-done/{n}" for n in done)}

        sshd.start()
        r = silta(tmp_path, "sync", "run", "s", "--config", config)
        assert r.code == 0 and "queued a run of s" in r.out, r
        runs = wait_for("the operator's run", lambda: _finished(state, "s", 2), timeout=60)
        assert [(r["status"], r["files"], r["table_version"]) for r in runs[1:]] == [
            ("ok", len(names) - len(done), len(names) - 1)]
        assert agent.alive()
        _stop_agent(agent)

    t = DeltaTable(str(table))
    assert t.version() == len(names) - 1  # one commit per file, none twice
    assert _by_source(t, duck, str(table)) == _expected(names)
    assert _tree(sshd.root) == {f".silta-done/{n}" for n in names}
    for n in names:
        assert _identity(sshd.root / ".silta-done" / n) == before[n]
    assert [a[:3] for a in _alerts(state)] == [("run_failed", "sync:s", "resolved")]
    assert _top(tmp_path / "lake") == {"raw/s", "_silta/runs"}  # nothing outside the roots


# -- 2. PostgreSQL stopped in the middle of an ingest ----------------------------------------
PG_ROWS, PG_WINDOW = 60_000, 5_000


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own (as the session fixture builds one)."""
    base = Path(tempfile.mkdtemp(prefix="silta-pg-"))  # not tmp_path: postgres runs it
    server = PostgresServer(base)
    try:
        server.init()
        server.start()
        with server.connect("postgres") as conn:
            conn.execute(f'CREATE DATABASE "{server.database}"')
        monkeypatch.setenv("PGPASS", server.password)  # the agent's ${PGPASS}
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _units(state: Path, sync: str) -> list[tuple[int, str]]:
    try:
        return [(r["seq"], r["status"]) for r in ledger(
            state, "SELECT seq, status FROM batches WHERE sync=? ORDER BY seq", (sync,))]
    except sqlite3.Error:
        return []


@pytest.mark.timeout(120)
def test_postgres_stopped_mid_ingest_then_every_row_lands_once(
        tmp_path: Path, postgres: PostgresServer, duck: Any) -> None:
    with postgres.connect() as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, grp int NOT NULL, "
                     "payload text NOT NULL, wm bigint NOT NULL)")
        conn.execute("CREATE INDEX people_wm ON people (wm)")
        conn.execute(f"INSERT INTO people SELECT i, i % 7, repeat('x', 20), i "
                     f"FROM generate_series(0, {PG_ROWS - 1}) AS i")
    config = tmp_path / "silta.toml"
    config.write_text(dedent(f'''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.pg]
        type = "sql"
        url = "{postgres.url}"
        password = "${{PGPASS}}"
        [[syncs]]
        name = "ing"
        source = "pg:public.people"
        target = "lake:raw/people"
        watermark = "wm"
        key = ["id"]
        batch_rows = {PG_WINDOW}
        '''), encoding="utf-8")
    state, table = tmp_path / "state", tmp_path / "lake" / "raw" / "people"

    with background(tmp_path, "agent", "run", "--once", "--json", "--config", config) as agent:
        def some_committed() -> list[tuple[int, str]] | None:
            assert agent.alive(), agent.stderr()
            units = _units(state, "ing")
            return units if any(s == "committed" for _, s in units) else None

        wait_for("the first committed window", some_committed, timeout=60, interval=0.01)
        postgres.stop()  # fast shutdown: the agent's session is cut mid-read
        assert agent.proc.wait(timeout=60) == 1, agent.stderr()  # 1: a job failed
    assert "Traceback" not in agent.stderr()
    [first] = [o for o in json.loads(agent.stdout()) if o["kind"] == "sync"]
    runs = _runs(state, "ing")
    assert [(r["status"], r["trigger"], r["rows"], r["batches"]) for r in runs] == [
        ("failed", "once", first["rows"], first["batches"])]
    assert first["status"] == "failed" and first["retriable"] is True
    assert runs[0]["error"] == first["error"]
    # the server's goodbye, or the socket closed under the client: both say what happened
    assert re.fullmatch(
        rf"reading public\.people \(postgresql\+psycopg://silta:\*\*\*@127\.0\.0\.1:"
        rf"{postgres.port}/stat\): (terminating connection due to administrator command|"
        r"consuming input failed: server closed the connection unexpectedly .*); the "
        r"database is unreachable or busy, the work is tried again later",
        first["error"]), first["error"]
    assert _alerts(state) == [("run_failed", "sync:ing", "firing",
                               f"sync ing failed: {first['error']}")]
    # only whole windows landed: their rows are the ids below the last committed watermark
    landed = first["rows"]
    assert _units(state, "ing") == [(i, "committed") for i in range(1, first["batches"] + 1)]
    assert 0 < landed < PG_ROWS and runs[0]["table_version"] == first["batches"] - 1
    assert _people(table, duck) == (first["batches"] - 1, landed, landed, 0, landed - 1)

    postgres.start()
    with postgres.connect() as conn:  # the source was only read
        assert conn.execute("SELECT count(*), sum(id), sum(wm) FROM people").fetchone() == (
            PG_ROWS, PG_ROWS * (PG_ROWS - 1) // 2, PG_ROWS * (PG_ROWS - 1) // 2)
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    [second] = [o for o in r.json() if o["kind"] == "sync"]
    assert (second["status"], second["rows"]) == ("ok", PG_ROWS - landed)
    total = first["batches"] + second["batches"]
    assert second["table_version"] == total - 1
    assert _units(state, "ing") == [(i, "committed") for i in range(1, total + 1)]
    assert _people(table, duck) == (total - 1, PG_ROWS, PG_ROWS, 0, PG_ROWS - 1)
    assert [a[:3] for a in _alerts(state)] == [("run_failed", "sync:ing", "resolved")]
    assert _top(tmp_path / "lake") == {"raw/people", "_silta/runs"}


def _people(table: Path, duck: Any) -> tuple[int, int, int, int, int]:
    """(version, rows, distinct ids, min id, max id) by deltalake, checked against DuckDB."""
    t = DeltaTable(str(table))
    ids = t.to_pyarrow_dataset().to_table(columns=["id"]).column("id")
    mine = (len(ids), pc.count_distinct(ids).as_py(), pc.min(ids).as_py(), pc.max(ids).as_py())
    assert duck_rows(duck, table, "SELECT count(id), count(DISTINCT id), min(id), max(id) "
                                  "FROM t") == [mine]
    return (t.version(), *mine)


# -- 3. the lake (Azurite) stopped in the middle of a run -----------------------------------
AZ_ROWS = 10_000


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[AzuriteServer]:
    """An Azurite of this test's own (its data folder survives stop() for start())."""
    server = AzuriteServer(tmp_path / "azurite")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_azurite_stopped_mid_run_leaves_no_partial_commit_then_every_file_lands_once(
        tmp_path: Path, azurite: AzuriteServer, azure_duck: _Duck,
        monkeypatch: pytest.MonkeyPatch) -> None:
    container = azurite.new_container("outage")
    monkeypatch.setenv("AZ_KEY", azurite.key)  # the agent's ${AZ_KEY}
    inbox = tmp_path / "inbox"
    names = [f"part{i}.csv" for i in range(4)]
    for i, n in enumerate(names):
        _csv(inbox / n, i * AZ_ROWS, AZ_ROWS, age=400 - i, payload="y" * 20)
    options = "{ " + ", ".join(f'{k} = "{v}"' for k, v in {
        **azurite.storage_options(azure_storage_account_key="${AZ_KEY}"),
        "max_retries": "1", "retry_timeout": "3s"}.items()) + " }"
    config = tmp_path / "silta.toml"
    config.write_text(dedent(f'''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "az://{container}/lake"
        # two attempts, not object_store's ten over three minutes: the same errors, sooner
        storage_options = {options}
        [connectors.inbox]
        type = "folder"
        path = "inbox"
        [[syncs]]
        name = "s"
        source = "inbox:*.csv"
        target = "lake:raw/s"
        settle_seconds = 0
        batch_max_files = 1
        on_success = "move"
        '''), encoding="utf-8")
    state = tmp_path / "state"
    env = Env("az", f"az://{container}/lake", azurite.storage_options(),
              lambda prefix: [b.removeprefix("lake/")
                              for b in azurite.blob_names(container, "lake/" + prefix)],
              lambda b: azurite.read_blob(container, "lake/" + b),
              lambda t: f"az://{container}/lake/{t}", azurite)
    before = {n: _identity(inbox / n) for n in names}
    with background(tmp_path, "agent", "run", "--once", "--json", "--config", config) as agent:
        def one_committed() -> set[str] | None:
            assert agent.alive(), agent.stderr()
            try:
                return _committed_files(state, "s") or None
            except sqlite3.Error:
                return None

        wait_for("the first commit", one_committed, timeout=90, interval=0.01)
        azurite.stop()  # its endpoint first: every connection is cut at once
        assert agent.proc.wait(timeout=90) == 1, agent.stderr()  # 1: a job failed
    assert "Traceback" not in agent.stderr()
    [first] = json.loads(agent.stdout())
    done = sorted(_committed_files(state, "s"))
    k = len(done)
    assert (first["status"], first["retriable"], first["files"], first["table_version"]) == (
        "failed", True, k, k - 1)
    assert 1 <= k < len(names)
    assert re.fullmatch(
        rf"table 'raw/s' in lake 'az://{container}/lake': cannot reach the object store at "
        rf"http://127\.0\.0\.1:{azurite.port} \(.*\); it is tried again later",
        first["error"]), first["error"]
    assert [(r["status"], r["files"], r["error"]) for r in _runs(state, "s")] == [
        ("failed", k, first["error"])]
    assert _alerts(state) == [("run_failed", "sync:s", "firing",
                               f"sync s failed: {first['error']}")]
    _check_inbox(inbox, names, set(done), before)

    azurite.start()  # the same data folder: what Azurite stored is back
    # No partial commit: the log has no gaps, every file it adds exists, and four readers
    # (Silta, a fresh deltalake, DuckDB, the raw parquet objects) see whole files only.
    assert _sources(read_everywhere(env, azure_duck, "raw/s", ["id", "_silta_source"])) == {
        src: v for src, v in _expected(names, AZ_ROWS).items() if src[6:] in done}
    assert DeltaTable(f"{env.uri}/raw/s", storage_options=env.options).version() == k - 1

    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    [second] = r.json()
    assert (second["status"], second["files"], second["table_version"]) == (
        "ok", len(names) - k, len(names) - 1)
    assert _sources(read_everywhere(env, azure_duck, "raw/s", ["id", "_silta_source"])) == \
        _expected(names, AZ_ROWS)
    assert DeltaTable(f"{env.uri}/raw/s", storage_options=env.options).version() == \
        len(names) - 1
    _check_inbox(inbox, names, set(names), before)
    assert [a[:3] for a in _alerts(state)] == [("run_failed", "sync:s", "resolved")]
    # the run record the lake refused waited in the outbox: both are in _silta/runs, once
    ids = [r["id"] for r in ledger(state, "SELECT id FROM runs WHERE name='s' ORDER BY "
                                          "started_at")]
    runs = DeltaTable(f"{env.uri}/_silta/runs", storage_options=env.options
                      ).to_pyarrow_dataset().to_table(columns=["run_id", "status"])
    assert sorted(zip(runs["run_id"].to_pylist(), runs["status"].to_pylist(), strict=True)
                  ) == sorted(zip(ids, ["failed", "ok"], strict=True))
    assert {b.split("/")[1] + "/" + b.split("/")[2] for b in
            azurite.blob_names(container)} == {"raw/s", "_silta/runs"}


def _sources(rows: list[tuple[Any, ...]]) -> dict[str, tuple[int, ...]]:
    """(id, source) rows as `_by_source` gives them: rows, distinct ids, min, max."""
    out: dict[str, list[int]] = {}
    for i, src in rows:
        out.setdefault(src, []).append(i)
    return {src: (len(v), len(set(v)), min(v), max(v)) for src, v in out.items()}


def _check_inbox(inbox: Path, names: list[str], committed: set[str],
                 before: dict[str, tuple[str, int, int]]) -> None:
    """Files not committed are untouched in place; committed ones moved whole, once."""
    for n in names:
        if n in committed:
            assert not (inbox / n).exists()
            assert _identity(inbox / ".silta-done" / n) == before[n]
        else:
            assert _identity(inbox / n) == before[n]
    assert _tree(inbox) == {*(n for n in names if n not in committed),
                            *(f".silta-done/{n}" for n in sorted(committed))}


# -- 4. a stalled link between the agent and sshd -------------------------------------------
STALL_TIMEOUT = 5  # [connectors.remote] timeout_seconds: the key that bounds a dead link


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_stalled_sftp_link_times_out_while_the_agent_and_other_syncs_go_on(
        tmp_path: Path, sshd: SshServer, duck: Any) -> None:
    names = [f"part{i}.csv" for i in range(3)]
    for i, n in enumerate(names):
        _csv(sshd.root / n, i * ROWS_PER_FILE, ROWS_PER_FILE, age=400 - i)
    before = {n: _identity(sshd.root / n) for n in names}
    with TcpProxy(sshd.port) as proxy:
        config = _sftp_config(tmp_path, sshd, port=proxy.port,
                              known_hosts=sshd.known_hosts_for(proxy.port),
                              timeout=STALL_TIMEOUT, retries=0, extra=dedent('''
            [connectors.local]
            type = "folder"
            path = "local"
            [[syncs]]
            name = "other"
            source = "local:*.csv"
            target = "lake:raw/other"
            watch = true
            settle_seconds = 0
            '''))
        (tmp_path / "local").mkdir()
        state = tmp_path / "state"
        with background(tmp_path, "agent", "run", "--config", config) as agent:
            def transferring() -> int | None:
                assert agent.alive(), agent.stderr()
                return proxy.bytes_down if proxy.bytes_down >= 4 << 20 else None

            wait_for("4 MiB through the proxy", transferring, timeout=60, interval=0.01)
            proxy.stall()  # nothing forwarded, nothing closed: a dead link
            assert [r["status"] for r in _runs(state, "s")] == ["running"]
            # another sync's file arrives while the SFTP run hangs
            write_csv(tmp_path / "local" / "a.csv", "id,grp,payload",
                      [f"{i},1,z" for i in range(50)])

            beats: set[str] = set()

            def failed() -> list[dict[str, Any]] | None:
                assert agent.alive(), agent.stderr()
                runs = _runs(state, "s")
                if runs[-1]["status"] == "running":
                    beats.update(b["beat_at"] for b in ledger(
                        state, "SELECT beat_at FROM heartbeats"))
                    return None
                return runs

            runs = wait_for("the stalled run to time out", failed, timeout=60, interval=0.2)
            # the main loop kept beating while the sync thread waited on the dead link
            assert len(beats) >= 2, beats
            assert [(r["status"], r["files"]) for r in runs] == [("failed", 0)]
            assert re.fullmatch(
                rf"SFTP {sshd.username}@127\.0\.0\.1:{proxy.port}: reading 'part[01]\.csv': "
                rf"no answer within {STALL_TIMEOUT} s; transient: the work is retried",
                runs[0]["error"]), runs[0]["error"]
            wait_for("the other sync's file", lambda: delta_count(
                tmp_path / "lake" / "raw" / "other") == 50, timeout=60)
            other = _runs(state, "other")  # its start-up scan, then the file's arrival
            assert {r["status"] for r in other} == {"ok"}
            assert [(r["files"], r["rows"]) for r in other if r["files"]] == [(1, 50)]
            assert _alerts(state) == [("run_failed", "sync:s", "firing",
                                       f"sync s failed: {runs[0]['error']}")]
            health = silta(tmp_path, "agent", "health", "--json", "--config", config)
            assert health.code == 1, health  # alive, but a job's last run failed
            checks = health.json()["checks"]
            assert [(c["check"], c["ok"]) for c in checks] == [("agent test-agent", True),
                                                               ("sync:s", False)]
            assert checks[0]["detail"].startswith(f"alive, pid {agent.pid}, since ")
            assert checks[1]["detail"].endswith(f" ago: {runs[0]['error']}")
            # nothing landed, nothing moved, nothing half-written on the server
            assert not (tmp_path / "lake" / "raw" / "s").exists()
            assert _tree(sshd.root) == set(names)

            proxy.resume()
            r = silta(tmp_path, "sync", "run", "s", "--config", config)
            assert r.code == 0 and "queued a run of s" in r.out, r
            runs = wait_for("the run after the link came back",
                            lambda: _finished(state, "s", 2), timeout=60)
            assert [(r["status"], r["files"], r["table_version"]) for r in runs[1:]] == [
                ("ok", len(names), len(names) - 1)]
            _stop_agent(agent)
    table = tmp_path / "lake" / "raw" / "s"
    t = DeltaTable(str(table))
    assert t.version() == len(names) - 1
    assert _by_source(t, duck, str(table)) == _expected(names)
    assert _tree(sshd.root) == {f".silta-done/{n}" for n in names}
    for n in names:
        assert _identity(sshd.root / ".silta-done" / n) == before[n]
    assert [a[:3] for a in _alerts(state)] == [("run_failed", "sync:s", "resolved")]
    assert _top(tmp_path / "lake") == {"raw/s", "raw/other", "_silta/runs"}


# -- 5. a commit's reply lost while the lake is away -----------------------------------------
def test_a_commit_whose_reply_is_lost_while_the_lake_is_away_is_not_written_twice(
        make_engine: Any, tmp_path: Path, duck: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, with one injected fault: no real server loses exactly the reply of a
    Delta commit on demand (case 3 stops Azurite, but where its stop lands is chance).

    The second file's commit lands, its reply is "lost" (the write raises) and the lake
    cannot be asked afterwards either. The batch must stay pending, not be failed: a
    failed batch frees its files, and the next run wrote them again (one more copy).
    """
    import connectors.lake as lake_module

    engine, _ = make_engine([{"name": "s", "batch_max_files": 1}])
    for i in range(2):
        path = tmp_path / "inbox" / f"f{i}.csv"
        path.write_text(f"id\n{i}\n")
        os.utime(path, (1.7e9 + i, 1.7e9 + i))
    real_write = lake_module.write_deltalake

    def reply_lost(target: Any, *args: Any, **kwargs: Any) -> None:
        real_write(target, *args, **kwargs)
        if isinstance(target, DeltaTable):  # not the creation: the second batch
            monkeypatch.setattr(engine.lake, "committed_seq", _lake_away)
            raise OSError("connection reset by peer")

    monkeypatch.setattr(lake_module, "write_deltalake", reply_lost)
    out = engine.run("s")
    assert (out.status, out.batches, out.retriable) == ("failed", 1, True)
    assert out.error == "table 'raw/t': connection reset by peer"
    assert [(r["seq"], r["status"]) for r in engine.state.query(
        "SELECT seq, status FROM batches WHERE sync='s' ORDER BY seq")] == [
        (1, "committed"), (2, "pending")]

    monkeypatch.undo()  # the lake answers again
    again = engine.run("s")
    assert (again.status, again.batches, again.error) == ("ok", 0, None)
    assert [(r["seq"], r["status"], r["table_version"]) for r in engine.state.query(
        "SELECT seq, status, table_version FROM batches WHERE sync='s' ORDER BY seq")] == [
        (1, "committed", 0), (2, "committed", 1)]
    table = tmp_path / "lake" / "raw" / "t"
    assert DeltaTable(str(table)).version() == 1
    assert duck_rows(duck, table, "SELECT id, _silta_source FROM t ORDER BY id") == [
        (0, "inbox:f0.csv"), (1, "inbox:f1.csv")]


def _lake_away(*args: Any, **kwargs: Any) -> None:
    from connectors.errors import StoreError

    raise StoreError("cannot reach the object store", retriable=True)
