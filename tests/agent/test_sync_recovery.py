"""Crash windows, simulated without killing: the ledger and the table disagree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from agent.state import FileEntry
from tests.agent.helpers import put, rows_both
from tests.conftest import duck_rows


def entry_for(root: Path, rel: str) -> FileEntry:
    path = root / rel
    st = path.stat()
    return FileEntry(rel, st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())



def ledger(engine: Any, sync: str = "s") -> list[tuple[int, str, int | None, int | None]]:
    return [(b["seq"], b["status"], b["table_version"], b["rows"])
            for b in sorted(engine.state.batches(sync), key=lambda b: b["seq"])]


def file_states(engine: Any, sync: str = "s") -> dict[str, tuple[str, int | None]]:
    rows = engine.state.query("SELECT path, status, seq FROM files WHERE sync=?", (sync,))
    return {r["path"]: (r["status"], r["seq"]) for r in rows}


def forget_commit(engine: Any, seq: int, sync: str = "s") -> None:
    """The crash window: the Delta commit is durable, the ledger update never happened."""
    with engine.state.tx() as conn:
        conn.execute("UPDATE batches SET status='pending', table_version=NULL, rows=NULL, "
                     "finished_at=NULL WHERE sync=? AND seq=?", (sync, seq))
        conn.execute("UPDATE files SET status='pending', disposed=0 WHERE sync=? AND seq=?",
                     (sync, seq))


# -- (a) planned, never committed -----------------------------------------------------------
def test_pending_batch_never_committed_is_abandoned(make_engine: Any, tmp_path: Path,
                                                    duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n2\n")
    assert engine.state.plan_batch("s", "crashed-run", [entry_for(inbox, "a.csv")]) == 1
    assert engine.state.pending_batches("s") == [1]

    restarted, _ = make_engine([{"name": "s"}])  # a new process on the same state store
    out = restarted.run("s")
    assert (out.status, out.batches, out.files, out.rows, out.table_version) == (
        "ok", 1, 1, 2, 0)
    assert ledger(restarted) == [(1, "abandoned", None, None), (2, "committed", 0, 2)]
    assert restarted.state.pending_batches("s") == []
    assert DeltaTable(str(table)).transaction_version("silta/s") == 2
    assert rows_both(duck, table, ["id", "_silta_batch"]) == [(1, 2), (2, 2)]
    again = restarted.run("s")
    assert (again.batches, again.table_version) == (0, 0)


def test_pending_batch_after_committed_ones_is_abandoned(make_engine: Any, tmp_path: Path,
                                                         duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "b.csv", "id\n2\n3\n", age=50)
    assert engine.state.plan_batch("s", "crashed-run", [entry_for(inbox, "b.csv")]) == 2

    out = engine.run("s")
    assert (out.status, out.batches, out.files, out.rows, out.table_version) == (
        "ok", 1, 1, 2, 1)
    assert ledger(engine) == [(1, "committed", 0, 1), (2, "abandoned", None, None),
                              (3, "committed", 1, 2)]
    assert file_states(engine) == {"a.csv": ("committed", 1), "b.csv": ("committed", 3)}
    assert DeltaTable(str(table)).transaction_version("silta/s") == 3
    assert rows_both(duck, table, ["id", "_silta_batch"]) == [(1, 1), (2, 3), (3, 3)]


# -- (b) committed in the table, ledger still pending ---------------------------------------
def test_committed_but_ledger_pending_is_not_written_twice(make_engine: Any, tmp_path: Path,
                                                           duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n2\n")
    assert engine.run("s").table_version == 0
    forget_commit(engine, 1)
    assert engine.state.pending_batches("s") == [1]
    assert file_states(engine) == {"a.csv": ("pending", 1)}

    out = engine.run("s")
    assert (out.status, out.batches, out.files, out.rows, out.table_version) == (
        "ok", 0, 0, 0, 0)
    assert DeltaTable(str(table)).version() == 0
    assert duck_rows(duck, table, "SELECT count(*) FROM t") == [(2,)]
    assert rows_both(duck, table, ["id", "_silta_batch"]) == [(1, 1), (2, 1)]
    assert ledger(engine) == [(1, "committed", 0, 2)]
    assert file_states(engine) == {"a.csv": ("committed", 1)}


def test_recovery_records_the_version_of_its_own_commit(make_engine: Any, tmp_path: Path,
                                                        duck: Any) -> None:
    """Another sync wrote the same table after the crash: the ledger gets the right version."""
    syncs = [{"name": "s", "source": "inbox:a*.csv"},
             {"name": "other", "source": "inbox:b*.csv"}]
    engine, _ = make_engine(syncs)
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a1.csv", "id\n1\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "a2.csv", "id\n2\n", age=90)
    assert engine.run("s").table_version == 1
    forget_commit(engine, 2)
    put(inbox, "b1.csv", "id\n3\n", age=80)
    assert engine.run("other").table_version == 2

    put(inbox, "a3.csv", "id\n4\n", age=70)
    out = engine.run("s")
    assert (out.status, out.batches, out.files, out.table_version) == ("ok", 1, 1, 3)
    assert ledger(engine) == [(1, "committed", 0, 1), (2, "committed", 1, 1),
                              (3, "committed", 3, 1)]
    assert rows_both(duck, table, ["id", "_silta_source"]) == [
        (1, "inbox:a1.csv"), (2, "inbox:a2.csv"), (3, "inbox:b1.csv"), (4, "inbox:a3.csv")]


def test_recovered_commit_then_disposes_the_source(make_engine: Any, tmp_path: Path,
                                                   duck: Any) -> None:
    """Crash after the commit, before the ledger and the move: recovery moves it, no rewrite."""
    engine, _ = make_engine([{"name": "s", "on_success": "move"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n2\n")
    assert engine.run("s").table_version == 0
    done = inbox / ".silta-done" / "a.csv"
    assert done.is_file() and not (inbox / "a.csv").exists()
    os.replace(done, inbox / "a.csv")  # as if the move had never happened (mtime kept)
    forget_commit(engine, 1)

    out = engine.run("s")
    assert (out.status, out.batches, out.rows, out.table_version) == ("ok", 0, 0, 0)
    assert done.is_file() and not (inbox / "a.csv").exists()
    assert DeltaTable(str(table)).version() == 0
    assert rows_both(duck, table, ["id"]) == [(1,), (2,)]
    assert ledger(engine) == [(1, "committed", 0, 2)]


def test_committed_but_not_yet_moved_is_moved_next_run(make_engine: Any, tmp_path: Path,
                                                       duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "on_success": "delete"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    path = put(inbox, "a.csv", "id\n1\n")
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert engine.run("s").table_version == 0
    assert not path.exists()
    path.write_bytes(data)  # the delete never happened
    os.utime(path, ns=(mtime, mtime))
    with engine.state.tx() as conn:
        conn.execute("UPDATE files SET disposed=0 WHERE sync='s'")

    out = engine.run("s")
    assert (out.status, out.batches, out.skipped, out.table_version) == ("ok", 0, 0, 0)
    assert not path.exists()
    assert rows_both(duck, table, ["id"]) == [(1,)]


# -- lost ledger ----------------------------------------------------------------------------
def test_new_state_store_still_lands_new_files(make_engine: Any, tmp_path: Path,
                                               duck: Any) -> None:
    """The table already holds seq 1..n of this app id; a fresh ledger must not reuse them."""
    engine, _ = make_engine([{"name": "s", "on_success": "delete"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n", age=100)
    assert engine.run("s").table_version == 0

    engine.state.close()
    (tmp_path / "state").rename(tmp_path / "state.lost")  # the state store is lost
    fresh, _ = make_engine([{"name": "s", "on_success": "delete"}])
    assert fresh.state.batches("s") == []
    put(inbox, "b.csv", "id\n2\n", age=50)
    out = fresh.run("s")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 1, 1)
    assert DeltaTable(str(table)).version() == 1
    assert rows_both(duck, table, ["id", "_silta_source"]) == [
        (1, "inbox:a.csv"), (2, "inbox:b.csv")]


def test_a_stop_between_batches_leaves_the_rest_for_the_next_run(make_engine: Any,
                                                                  tmp_path: Path,
                                                                  duck: Any) -> None:
    import threading

    engine, _ = make_engine([{"name": "s", "batch_max_files": 2}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    for i in range(10):
        put(inbox, f"f{i}.csv", f"id\n{i}\n", age=100 - i)
    cancel = threading.Event()

    def stop_after_first_batch(progress: Any) -> None:
        if progress.batches >= 1:
            cancel.set()  # as SIGTERM does: the batch in flight finishes, no new one starts

    out = engine.run("s", cancel=cancel, on_progress=stop_after_first_batch)
    assert (out.status, out.batches, out.files) == ("ok", 1, 2)
    assert rows_both(duck, table, ["id"]) == [(0,), (1,)]
    assert len(file_states(engine)) == 2  # nothing planned beyond the batch that landed
    rest = engine.run("s")
    assert (rest.batches, rest.files) == (4, 8)
    assert rows_both(duck, table, ["id"]) == [(i,) for i in range(10)]
