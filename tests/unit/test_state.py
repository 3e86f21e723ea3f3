from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from agent.lock import InstanceLock
from agent.scheduling import missed_fire
from agent.state import MIGRATIONS, FileEntry, StateStore
from connectors.errors import LockHeldError, StateStoreError


def test_migrations_apply_once_and_wal_is_on(tmp_path: Path):
    s = StateStore(tmp_path)
    assert s.schema_version() == len(MIGRATIONS)
    assert s.query("PRAGMA journal_mode")[0][0] == "wal"
    s.close()
    again = StateStore(tmp_path)  # re-opening does not re-run migrations
    assert again.schema_version() == len(MIGRATIONS)


def test_a_newer_schema_is_refused_with_advice(tmp_path: Path):
    StateStore(tmp_path).close()
    con = sqlite3.connect(tmp_path / "silta.db")
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(StateStoreError, match="upgrade Silta"):
        StateStore(tmp_path)


def test_ledger_lifecycle(tmp_path: Path):
    s = StateStore(tmp_path)
    a = FileEntry("a.csv", 10, 1, "aa")
    b = FileEntry("b.csv", 20, 2, "bb")
    seq = s.plan_batch("sync", "run1", [a, b])
    assert seq == 1 and s.pending_batches("sync") == [1]
    assert s.file_status("sync", "a.csv", 10, 1) == "pending"
    s.drop_from_batch("sync", 1, ["b.csv"])
    assert s.batch_files("sync", 1) == [a]
    s.mark_committed("sync", 1, version=0, rows=5)
    assert s.pending_batches("sync") == []
    assert s.file_status("sync", "a.csv", 10, 1) == "committed"
    assert s.content_status("sync", "a.csv", "aa") == "committed"
    s.mark_quarantined("sync", "run1", b, "bad row")
    assert s.file_status("sync", "b.csv", 20, 2) == "quarantined"
    assert s.next_seq("sync") == 3  # the quarantine record took seq 2
    assert s.ledger_summary("sync") == {"batches": 1, "files": 1, "rows": 5,
                                        "table_version": 0, "quarantined": 1}
    seq3 = s.plan_batch("sync", "run2", [FileEntry("c.csv", 1, 3, "cc")])
    s.mark_batch_failed("sync", seq3, "abandoned", status="abandoned")
    assert s.file_status("sync", "c.csv", 1, 3) is None  # free to plan again


def test_runs_commands_and_heartbeats(tmp_path: Path):
    s = StateStore(tmp_path)
    run = s.start_run("sync", "x", "once", "agent-1")
    (stale,) = s.interrupt_stale_runs()
    assert (stale["id"], stale["kind"], stale["name"]) == (run, "sync", "x")
    assert s.interrupt_stale_runs() == []
    assert s.runs(kind="sync", name="x")[0]["status"] == "interrupted"
    s.finish_run(run, status="ok", files=2, rows=7)
    assert s.runs()[0]["rows"] == 7
    cid = s.enqueue_command("sync.run", {"sync": "x"}, os_user="operator")
    claimed = s.claim_commands()
    assert [(c["id"], c["args"], c["os_user"]) for c in claimed] == [
        (cid, {"sync": "x"}, "operator")]
    assert s.claim_commands() == []
    s.finish_command(cid, "done", "ok")
    assert s.commands()[0]["status"] == "done"
    s.beat("agent-1", pid=42, host="h", started_at="t", state="running")
    assert s.heartbeats()[0]["pid"] == 42


def test_readonly_store_needs_an_existing_database(tmp_path: Path):
    with pytest.raises(StateStoreError, match="has the agent run yet"):
        StateStore(tmp_path / "none", readonly=True)
    StateStore(tmp_path).close()
    ro = StateStore(tmp_path, readonly=True)
    assert ro.runs() == []
    with pytest.raises(StateStoreError):
        ro.start_run("sync", "x", "t", "a")


def test_second_lock_holder_is_refused_with_the_holder_named(tmp_path: Path):
    with InstanceLock(tmp_path):
        with pytest.raises(LockHeldError) as info:
            InstanceLock(tmp_path).acquire()
        assert "another agent is running" in info.value.msg and "pid" in info.value.msg
    with InstanceLock(tmp_path):  # released: can be taken again
        pass


def test_missed_fire_detects_downtime():
    utc = dt.UTC
    last = dt.datetime(2026, 11, 27, 10, 0, tzinfo=utc)
    hourly = "0 * * * *"
    assert missed_fire(hourly, last, dt.datetime(2026, 11, 27, 10, 59, tzinfo=utc)) is None
    now = dt.datetime(2026, 11, 27, 13, 30, tzinfo=utc)
    missed = missed_fire(hourly, last, now)
    # the first hour after `last` (cron runs in local time; whole-hour zones agree)
    assert missed is not None and last < missed <= now and missed.minute == 0
    assert missed - last <= dt.timedelta(hours=1)
    assert missed_fire(hourly, None, dt.datetime(2026, 11, 27, 13, 30, tzinfo=utc)) is None


def test_a_reader_between_the_files_creation_and_its_tables_sees_no_store_yet(
        tmp_path: Path) -> None:
    import sqlite3

    from connectors.errors import StateStoreError

    sqlite3.connect(tmp_path / "silta.db").close()  # as an agent's first start leaves it
    with pytest.raises(StateStoreError, match=r"no state store at .*has the agent run yet"):
        StateStore(tmp_path, readonly=True)
    StateStore(tmp_path).close()  # the agent's migration
    reader = StateStore(tmp_path, readonly=True)
    assert reader.schema_version() >= 1
    assert reader.query("SELECT count(*) FROM heartbeats")[0][0] == 0
    reader.close()
