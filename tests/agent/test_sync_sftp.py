"""The real sync engine ingesting CSV files from a real SFTP server into a Delta table.

The config names an ``sftp`` connector (``[connectors.inbox] type = "sftp"``) pointing at
the session's sshd; the engine is built as ``make_engine`` builds it. Files are put in the
server's root through the local disk (the server runs here) with mtimes in the past.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from agent.config import LoadedConfig, load_config
from agent.outcome import SyncProgress
from agent.state import StateStore
from agent.stores import connector_options, open_lake, open_store
from agent.sync import SyncEngine
from connectors.abc import FileStore
from connectors.sftp import SftpStore
from tests.agent.helpers import put, rows_both
from tests.conftest import duck_rows
from tests.servers.sshd import SshServer

Build = Callable[..., tuple[SyncEngine, LoadedConfig]]


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


def write_sftp_config(folder: Path, server: SshServer, root: Path,
                      sync: dict[str, Any]) -> Path:
    connector = {"type": "sftp", "host": server.host, "port": server.port,
                 "username": server.username, "key_file": str(server.key_file),
                 "known_hosts": str(server.known_hosts), "root": str(root),
                 "timeout_seconds": 10.0, "retries": 1}
    merged = {"name": "s", "source": "inbox:*.csv", "target": "lake:raw/t",
              "settle_seconds": 0, **sync}
    lines = ["[agent]", 'name = "test-agent"', 'state_dir = "state"', "[lake]",
             'uri = "lake"', "[connectors.inbox]",
             *(f"{k} = {_toml(v)}" for k, v in connector.items()), "[[syncs]]",
             *(f"{k} = {_toml(v)}" for k, v in merged.items())]
    path = folder / "silta.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def build(sftp_server: SshServer, sftp_root: Path, tmp_path: Path) -> Iterator[Build]:
    """``build(sync_options, store_class=SftpStore)`` -> (engine, loaded config)."""
    states: list[StateStore] = []
    stores: list[FileStore] = []

    def make(sync: dict[str, Any] | None = None, store_class: type[SftpStore] | None = None
             ) -> tuple[SyncEngine, LoadedConfig]:
        loaded = load_config(write_sftp_config(tmp_path, sftp_server, sftp_root, sync or {}))
        state = StateStore(loaded.state_dir)
        states.append(state)
        if store_class is None:
            store = open_store(loaded, "inbox")
        else:
            store = store_class(**connector_options(loaded, "inbox"))
        assert isinstance(store, SftpStore)
        store.backoff_seconds = 0.05
        stores.append(store)
        return SyncEngine(loaded, state, open_lake(loaded), {"inbox": store},
                          "test-agent"), loaded

    yield make
    for store in stores:
        store.close()
    for s in states:
        s.close()


def table_of(tmp_path: Path) -> Path:
    return tmp_path / "lake" / "raw" / "t"


def ledger(engine: SyncEngine) -> dict[str, str]:
    rows = engine.state.query("SELECT path, status FROM files WHERE sync='s'")
    return {r["path"]: r["status"] for r in rows}


def test_files_land_exactly_once(build: Build, sftp_root: Path, tmp_path: Path,
                                 duck: Any) -> None:
    engine, _ = build({"source": "inbox:**/*.csv"})
    put(sftp_root, "a.csv", "id,name\n1,a\n2,b\n", age=300)
    put(sftp_root, "sub/b.csv", "id,name\n3,c\n", age=200)
    put(sftp_root, "c.csv", "id,name\n4,d\n5,e\n", age=100)
    put(sftp_root, ".hidden.csv", "id,name\n99,x\n", age=100)
    put(sftp_root, "d.csv.part", "id,name\n98,y\n", age=100)
    out = engine.run("s")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 3, 5, 0), out.error
    assert rows_both(duck, table_of(tmp_path), ["id", "name", "_silta_source"]) == [
        (1, "a", "inbox:a.csv"), (2, "b", "inbox:a.csv"), (3, "c", "inbox:sub/b.csv"),
        (4, "d", "inbox:c.csv"), (5, "e", "inbox:c.csv")]
    again = engine.run("s")
    assert (again.status, again.files, again.batches, again.table_version) == ("ok", 0, 0, 0)
    assert ledger(engine) == {"a.csv": "committed", "sub/b.csv": "committed",
                              "c.csv": "committed"}


def test_server_stopped_mid_run_then_the_rest_lands_once(
        build: Build, sftp_server: SshServer, sftp_root: Path, tmp_path: Path, duck: Any
        ) -> None:
    engine, _ = build({"batch_max_files": 1})
    for i in range(1, 5):
        put(sftp_root, f"f{i}.csv", f"id\n{i}\n", age=500 - i)
    stopped: list[int] = []

    def outage_after_first_commit(p: SyncProgress) -> None:
        if p.batches == 1 and not stopped:
            stopped.append(p.batches)
            sftp_server.stop()

    try:
        out = engine.run("s", on_progress=outage_after_first_commit)
    finally:
        sftp_server.start()
    assert stopped == [1]
    assert (out.status, out.batches, out.files, out.retriable) == ("failed", 1, 1, True)
    assert out.error is not None and "transient" in out.error
    run = engine.state.runs(kind="sync", name="s")[0]
    assert run["status"] == "failed" and "transient" in run["error"]
    assert rows_both(duck, table_of(tmp_path), ["id"]) == [(1,)]

    after = engine.run("s")
    assert (after.status, after.files, after.rows) == ("ok", 3, 3), after.error
    assert rows_both(duck, table_of(tmp_path), ["id", "_silta_source"]) == [
        (i, f"inbox:f{i}.csv") for i in range(1, 5)]
    assert set(ledger(engine).values()) == {"committed"}
    assert engine.run("s").batches == 0


class _GrowsWhileCopied(SftpStore):
    """Appends rows to ``grow.csv`` on the server once the engine opens it a second time
    (the first open hashes it; the second reads it for the commit)."""

    disk = Path()  # the server's root on the local disk
    opens = 0

    def open_read(self, path: str) -> BinaryIO:
        stream = super().open_read(path)
        if path == "grow.csv":
            type(self).opens += 1
            if type(self).opens == 2:
                with open(type(self).disk / path, "a") as f:
                    f.write("3\n4\n")
        return stream


def test_file_changed_while_copied_is_not_committed_half(
        build: Build, sftp_root: Path, tmp_path: Path, duck: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    _GrowsWhileCopied.disk, _GrowsWhileCopied.opens = sftp_root, 0
    engine, _ = build(store_class=_GrowsWhileCopied)
    put(sftp_root, "steady.csv", "id\n10\n", age=300)
    put(sftp_root, "grow.csv", "id\n1\n2\n", age=200)
    with caplog.at_level(logging.INFO, logger="silta.sync"):
        first = engine.run("s")
    assert first.status == "ok" and first.files == 1 and first.waiting >= 1, first.error
    assert "file=grow.csv changed during the copy" in caplog.text
    assert rows_both(duck, table_of(tmp_path), ["id"]) == [(10,)]  # nothing of grow.csv

    second = engine.run("s")  # settled now (settle_seconds = 0): read whole
    assert (second.status, second.files, second.rows) == ("ok", 1, 4), second.error
    assert rows_both(duck, table_of(tmp_path), ["id", "_silta_source"]) == [
        (1, "inbox:grow.csv"), (2, "inbox:grow.csv"), (3, "inbox:grow.csv"),
        (4, "inbox:grow.csv"), (10, "inbox:steady.csv")]


def test_on_success_move_over_sftp(build: Build, sftp_root: Path, tmp_path: Path,
                                   duck: Any) -> None:
    engine, _ = build({"source": "inbox:**/*.csv", "on_success": "move"})
    content = {"sub/a.csv": b"id\n1\n2\n", "b.csv": b"id\n3\n"}
    for i, (name, data) in enumerate(content.items()):
        put(sftp_root, name, data, age=100 - i)
    out = engine.run("s")
    assert (out.status, out.files, out.rows) == ("ok", 2, 3), out.error
    for name, data in content.items():
        assert not (sftp_root / name).exists()
        assert (sftp_root / ".silta-done" / name).read_bytes() == data
    again = engine.run("s")
    assert (again.status, again.files, again.skipped) == ("ok", 0, 0)
    assert rows_both(duck, table_of(tmp_path), ["id"]) == [(1,), (2,), (3,)]
    disposed = engine.state.query("SELECT path, disposed FROM files WHERE sync='s'")
    assert {r["path"]: r["disposed"] for r in disposed} == {"sub/a.csv": 1, "b.csv": 1}


def test_a_file_bigger_than_the_probe_is_streamed_whole(build: Build, sftp_root: Path,
                                                        tmp_path: Path, duck: Any) -> None:
    engine, _ = build()
    n = 200_000  # about 3 MiB: read twice through the SFTP stream (probe, then commit)
    put(sftp_root, "big.csv", "id,label\n" + "".join(f"{i},row-{i:07d}\n" for i in range(n)))
    out = engine.run("s")
    assert (out.status, out.files, out.rows) == ("ok", 1, n), out.error
    assert duck_rows(duck, table_of(tmp_path),
                     "SELECT count(*), sum(id), count(DISTINCT label) FROM t") == [
        (n, n * (n - 1) // 2, n)]


def test_connection_cut_mid_file_then_every_file_lands_once(
        sftp_server: SshServer, sftp_root: Path, tmp_path: Path, duck: Any) -> None:
    """The SSH stream is cut (a TCP reset by the proxy) while a 3 MB file is being read:
    the run fails with a retriable error and commits nothing half; the next run, on a
    fresh connection, lands every file exactly once."""
    from tests.tcp_proxy import TcpProxy

    rows = 60_000
    put(sftp_root, "a.csv", "id,v\n1,a\n2,b\n", age=300)
    put(sftp_root, "big.csv", "id,v\n" + "".join(f"{i},{'x' * 40}\n"
                                                  for i in range(10, 10 + rows)), age=200)
    put(sftp_root, "c.csv", "id,v\n3,c\n", age=100)
    with TcpProxy(sftp_server.port) as proxy:
        # The host key is the server's; known_hosts names it by the address clients dial.
        line = sftp_server.known_hosts.read_text(encoding="utf-8").strip()
        known = tmp_path / "known_hosts_proxy"
        known.write_text(line.replace(f"]:{sftp_server.port} ", f"]:{proxy.port} ") + "\n",
                         encoding="utf-8")
        config = write_sftp_config(tmp_path, sftp_server, sftp_root, {"batch_max_files": 1})
        text = config.read_text(encoding="utf-8")
        text = text.replace(f"port = {sftp_server.port}\n", f"port = {proxy.port}\n")
        text = text.replace(f'known_hosts = "{sftp_server.known_hosts}"',
                            f'known_hosts = "{known}"')
        config.write_text(text, encoding="utf-8")
        loaded = load_config(config)
        state = StateStore(loaded.state_dir)
        store = open_store(loaded, "inbox")
        assert isinstance(store, SftpStore)
        store.backoff_seconds = 0.05
        engine = SyncEngine(loaded, state, open_lake(loaded), {"inbox": store}, "test-agent")
        try:
            proxy.cut_after(1 << 20, "down")  # about a third into big.csv
            first = engine.run("s")
            assert proxy.bytes_down >= 1 << 20
            assert (first.status, first.retriable) == ("failed", True), first.error
            run = state.runs(name="s")[0]
            assert run["status"] == "failed" and run["error"] == first.error
            table = tmp_path / "lake" / "raw" / "t"
            landed = (duck_rows(duck, table, "SELECT count(*) FROM t")[0][0]
                      if (table / "_delta_log").exists() else 0)
            assert landed in (0, 2)  # a.csv alone at most: never a part of big.csv

            second = engine.run("s")
            assert second.status == "ok", second.error
            assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [
                (rows + 3, rows + 3)]
            assert duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1 "
                             "ORDER BY 1") == [("inbox:a.csv", 2), ("inbox:big.csv", rows),
                                               ("inbox:c.csv", 1)]
        finally:
            store.close()
            state.close()
