"""Disk full: the state folder, the local lake and a publish's target folder run out of
space under the real `silta agent run --once`.

Each scenario runs in a private mount namespace (``unshare -m``, as root) where a small
tmpfs lies over one folder and a ballast file takes its space; the driver
(``tests/faults/_disk_full_driver.py``) runs the real CLI there and copies what the test
reads (state store, tables, published files) out before the namespace, and the tmpfs,
go away. What is broken, and what must hold:

- the state folder (the SQLite state store and the agent's log file) with no free page at
  all: `--once` refuses at once with exit 1 and the store's own words ("database or disk
  is full"), one line about the log file and no traceback; nothing reaches the lake, the
  sources stay, and nothing of it is in the store: a run that cannot be started leaves no
  record there (stderr and the exit code are all there is). With just enough room to plan
  the batch but not to settle it (SQLITE_FULL after the Delta commit): the run is recorded
  failed and alerted, the sources stay in place, and the next run finds the batch in the
  table by its app transaction: all 503 files once, no second commit (table version 1).
  ``PRAGMA integrity_check`` is "ok" after each failure and after the recovery. With no
  room and no -shm file left (a command closed the store cleanly) SQLite cannot even open
  the store ("disk I/O error"): the refusal then says the disk is full;
- the local lake full in the middle of a commit: the ingest fails with "the lake's disk is
  full", recorded and alerted, no part file or commit left half-written, the table still
  at version 0 for both deltalake and DuckDB, the sources in place; then the publish's
  target folder full in the middle of its temporary file: the publish fails, recorded and
  alerted, its temporary file is gone and no final name appears; after room is made both
  recover (every source file once in the table, each Delta version published in one file
  with exactly its rows) and the alerts resolve. Nothing is written outside the roots.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest
from deltalake import DeltaTable

from agent.state import FileEntry, StateStore
from tests.conftest import ROOT, duck_rows, write_config
from tests.e2e._cli import delta_table, ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PAGE = 4096
FRAME = PAGE + 24  # a WAL frame: its header and one page
#: a file name long enough that 500 of them fill a few hundred ledger pages
LONG = "x" * 150
FULL = "database or disk is full; the disk may be full"
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
#: object_store's BufWriter panics on a tokio thread after a failed write (upstream
#: apache/arrow-rs-object-store#810); the Python side gets the real error meanwhile
_PANIC = re.compile(
    r"\nthread 'tokio-rt-worker' \(\d+\) panicked at [^\n]*/object_store-[\d.]+/src/"
    r"buffered\.rs:\d+:\d+:\nAlready shut down\n(note: run with `RUST_BACKTRACE=1` "
    r"environment variable to display a backtrace\n)?")  # the note: the first time only


# -- the namespace ------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root for `unshare -m` and a tmpfs mount (CI runs as root)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "mount", "-t",
                            "tmpfs", "-o", "size=8k", "tmpfs",
                            str(tmp_path_factory.mktemp("mount-probe"))],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"`unshare -m` + `mount -t tmpfs` refused here: {probe.stderr.strip()} "
                    "(needs root; CI runs as root)")


def _scenario(tmp_path: Path, steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run ``steps`` in one private mount namespace; each named step's result by name."""
    spec, result = tmp_path / "scenario.json", tmp_path / "scenario-result.json"
    spec.write_text(json.dumps({"result": str(result), "steps": steps}), encoding="utf-8")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-m",
                           "tests.faults._disk_full_driver", str(spec)], cwd=ROOT,
                          capture_output=True, text=True, timeout=280)
    done = json.loads(result.read_text(encoding="utf-8"))
    assert proc.returncode == 0 and not any("driver_error" in d for d in done), (
        proc.stderr, done[-1])
    assert len(done) == len(steps)
    return {d["name"]: d for d in done if d["name"]}


def _run(name: str, cwd: Path, config: Path) -> dict[str, Any]:
    return {"op": "run", "name": name, "cwd": str(cwd),
            "args": ["agent", "run", "--once", "--json", "--config", str(config)]}


def _outcomes(step: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["sync"]: o for o in json.loads(step["out"])}


def _log(err: str) -> list[str]:
    """stderr as lines, the timestamps of log lines taken off (the rest is exact)."""
    assert "Traceback" not in err, err
    return [_STAMP.sub("", line) for line in err.splitlines()]


# -- independent readers --------------------------------------------------------------------
def _integrity(state: Path) -> str:
    conn = sqlite3.connect(f"file:{state / 'silta.db'}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _runs(state: Path) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in ledger(
        state, "SELECT id, kind, name, status, files, rows, error FROM runs "
               "ORDER BY started_at, rowid")]


def _alerts(state: Path) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in ledger(
        state, "SELECT monitor, check_name, target, state, count FROM alerts ORDER BY id")]


def _batches(state: Path, sync: str) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in ledger(
        state, "SELECT seq, status, files, table_version, run_id FROM batches WHERE sync=? "
               "ORDER BY seq", (sync,))]


def _landed(duck: Any, table: Path) -> list[tuple[str, int]]:
    """(source, id) of every row, by deltalake and by DuckDB, which must agree."""
    data = delta_table(table)
    by_deltalake = sorted(zip(data.column("_silta_source").to_pylist(),
                              data.column("id").to_pylist(), strict=True))
    assert by_deltalake == sorted(duck_rows(duck, table, "SELECT _silta_source, id FROM t"))
    return by_deltalake


def _table_files(table: Path) -> tuple[list[str], list[str]]:
    """(commit files, data files) under ``table``; every data file one the log refers to."""
    files = sorted(p.relative_to(table).as_posix() for p in table.rglob("*") if p.is_file())
    log = [f for f in files if f.startswith("_delta_log/")]
    data = [f for f in files if not f.startswith("_delta_log/")]
    assert sorted(DeltaTable(str(table)).file_uris()) == sorted(str(table / f) for f in data)
    return log, data


def _commits(n: int) -> list[str]:
    return [f"_delta_log/{v:020d}.json" for v in range(n)]


# -- data -----------------------------------------------------------------------------------
def _write(folder: Path, name: str, text: str) -> FileEntry:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    os.utime(path, (1.7e9, 1.7e9))  # long settled
    st = path.stat()
    return FileEntry(name, st.st_size, st.st_mtime_ns,
                     hashlib.sha256(text.encode()).hexdigest())


def _ledger_frames(folder: Path, files: list[FileEntry]) -> tuple[int, int]:
    """WAL frames the state store writes to plan, then to settle, a batch of ``files``.

    Measured with the product's own StateStore on a scratch store, so the room left on the
    full disk follows the ledger's schema instead of a number copied into this test."""
    store = StateStore(folder)
    try:
        wal = folder / "silta.db-wal"
        run_id = store.start_run("sync", "s", "calibration", "test-agent")
        before = wal.stat().st_size
        seq = store.plan_batch("s", run_id, files)
        planned = wal.stat().st_size
        store.mark_committed("s", seq, version=1, rows=len(files))
        settled = wal.stat().st_size
    finally:
        store.close()
    return (planned - before) // FRAME, (settled - planned) // FRAME


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder


# -- 1. the state folder --------------------------------------------------------------------
def test_state_folder_full_refuses_or_fails_recorded_and_recovers_exactly_once(
        tmp_path: Path, work: Path, duck: Any) -> None:
    config = write_config(work, [{"name": "s", "on_success": "move"}])
    state, inbox, later = work / "state", work / "inbox", tmp_path / "later"
    for i in range(3):
        _write(inbox, f"f{i:05d}_{LONG}.csv", f"id,v\n{i},n{i}\n")
    entries = [_write(later, f"f{i:05d}_{LONG}.csv", f"id,v\n{i},n{i}\n")
               for i in range(3, 503)]
    plan, settle = _ledger_frames(tmp_path / "calibration", entries)
    # Room for the run's start (a heartbeat, the run row, a few progress rows: 8 frames is
    # plenty) and the plan, and half of what settling the batch needs: the run fails
    # after its Delta commit, the worst moment for exactly-once.
    room = math.ceil((8 + plan + settle // 2) * FRAME / PAGE)
    assert settle > 16 + 16, (plan, settle)  # enough margin on both sides of `room`

    r = _scenario(tmp_path, [
        {"op": "mount", "path": str(state), "kib": 8192},
        _run("first", work, config),
        {"op": "move", "src": str(later), "dst": str(inbox)},
        # the log file (in the state folder) ends 16 bytes before a page boundary: its
        # next line needs a page the full disk does not have
        {"op": "pad", "path": str(state / "logs" / "agent.log"), "room": 16},
        {"op": "fill", "name": "no-room", "path": str(state / "ballast"), "leave_pages": 0},
        _run("refused", work, config),
        {"op": "tree", "name": "inbox-refused", "path": str(inbox)},
        {"op": "copy", "src": str(state), "dst": str(tmp_path / "state-refused")},
        {"op": "unfill", "path": str(state / "ballast")},
        {"op": "fill", "name": "some-room", "path": str(state / "ballast"),
         "leave_pages": room},
        _run("failed", work, config),
        {"op": "tree", "name": "inbox-failed", "path": str(inbox)},
        {"op": "copy", "src": str(state), "dst": str(tmp_path / "state-failed")},
        {"op": "unfill", "path": str(state / "ballast")},
        _run("recovered", work, config),
        {"op": "tree", "name": "inbox-recovered", "path": str(inbox)},
        {"op": "copy", "src": str(state), "dst": str(tmp_path / "state-after")},
        # no room, and no -shm file left by an earlier agent (a command closed the store
        # cleanly): SQLite cannot even open the store
        {"op": "close-store", "path": str(state)},
        {"op": "tree", "name": "closed", "path": str(state)},
        {"op": "fill", "path": str(state / "ballast"), "leave_pages": 0},
        _run("refused-at-open", work, config),
        {"op": "copy", "src": str(state), "dst": str(tmp_path / "state-closed")},
    ])
    db = state / "silta.db"
    table = work / "lake" / "raw" / "t"
    names = [f"f{i:05d}_{LONG}.csv" for i in range(503)]
    sizes = {n: len(f"id,v\n{i},n{i}\n") for i, n in enumerate(names)}

    first = r["first"]
    assert (first["code"], _outcomes(first)["s"]["status"], _outcomes(first)["s"]["files"]) \
        == (0, "ok", 3), first

    # no room at all: refused before anything is started, in the store's own words
    assert r["no-room"]["free_pages"] == 0
    refused = r["refused"]
    assert refused["code"] == 1, refused
    assert refused["out"] == ""
    assert _log(refused["err"]) == [
        f"ERROR silta.agent heartbeat not recorded: state store {db}: {FULL}",
        f"silta: cannot write the log file {state / 'logs' / 'agent.log'}: No space left on "
        "device; the log goes on on stderr only until it can be written again",
        f"silta: state store error: state store {db}: {FULL}",
    ]
    assert r["inbox-refused"]["files"] == {n: sizes[n] for n in names[3:]} | {
        f".silta-done/{n}": sizes[n] for n in names[:3]}
    assert _integrity(tmp_path / "state-refused") == "ok"
    # nothing of the refused start is in the store: only the first run
    assert [x[1:] for x in _runs(tmp_path / "state-refused")] == [
        ("sync", "s", "ok", 3, 3, None)]

    # room to plan the batch, not to settle it: the commit is in the table, the ledger
    # says pending, the run is recorded failed and alerted, the sources stay
    assert r["some-room"]["free_pages"] == room
    failed = r["failed"]
    assert failed["code"] == 1, failed
    out = _outcomes(failed)["s"]
    error = f"state store {db}: {FULL}"
    assert (out["status"], out["batches"], out["files"], out["rows"], out["table_version"],
            out["error"], out["retriable"]) == ("failed", 0, 0, 0, 1, error, False), out
    assert _log(failed["err"]) == [
        f"ERROR silta.sync sync=s failed: {error}",
        f"silta: cannot write the log file {state / 'logs' / 'agent.log'}: No space left on "
        "device; the log goes on on stderr only until it can be written again",
        f"WARNING silta.alerts FIRING warning: agent / run_failed / sync:s: sync s failed: "
        f"{error}",
    ]
    assert r["inbox-failed"]["files"] == r["inbox-refused"]["files"]
    mid = tmp_path / "state-failed"
    assert _integrity(mid) == "ok"
    runs = _runs(mid)
    assert [x[1:] for x in runs] == [("sync", "s", "ok", 3, 3, None),
                                     ("sync", "s", "failed", 0, 0, error)]
    failed_id = runs[1][0]
    assert _batches(mid, "s") == [(1, "committed", 3, 0, runs[0][0]),
                                  (2, "pending", 500, None, failed_id)]
    assert _alerts(mid) == [("agent", "run_failed", "sync:s", "firing", 1)]
    assert _table_files(table)[0] == _commits(2)
    assert len(_landed(duck, table)) == 503  # the commit itself is whole

    # room again: the batch is found in the table (app transaction), not written twice
    recovered = r["recovered"]
    assert recovered["code"] == 0, recovered
    out = _outcomes(recovered)["s"]
    assert (out["status"], out["batches"], out["files"], out["rows"], out["table_version"],
            out["error"]) == ("ok", 0, 0, 0, 1, None), out
    assert _log(recovered["err"]) == [
        "INFO silta.sync sync=s batch=2 recovered: it had committed as version 1",
        f"INFO silta.alerts RESOLVED warning: agent / run_failed / sync:s: sync s failed: "
        f"{error}",
    ]
    assert r["inbox-recovered"]["files"] == {f".silta-done/{n}": sizes[n] for n in names}
    after = tmp_path / "state-after"
    assert _integrity(after) == "ok"
    runs = _runs(after)
    assert [x[1:] for x in runs] == [("sync", "s", "ok", 3, 3, None),
                                     ("sync", "s", "failed", 0, 0, error),
                                     ("sync", "s", "ok", 0, 0, None)]
    assert _batches(after, "s") == [(1, "committed", 3, 0, runs[0][0]),
                                    (2, "committed", 500, 1, failed_id)]
    assert _alerts(after) == [("agent", "run_failed", "sync:s", "resolved", 1)]
    assert ledger(after, "SELECT COUNT(*) AS n FROM files WHERE sync='s' AND "
                         "status='committed' AND disposed=1") == [{"n": 503}]

    assert sorted(r["closed"]["files"]) == ["agent.lock", "logs/agent.log", "silta.db"]
    at_open = r["refused-at-open"]
    assert (at_open["code"], at_open["out"]) == (1, ""), at_open
    assert _log(at_open["err"]) == [
        f"silta: state store error: cannot open state store {db}: disk I/O error; the disk "
        f"holding {state} is full: free space on it and run again"]
    closed = tmp_path / "state-closed"
    assert _integrity(closed) == "ok"
    assert _runs(closed) == runs  # the refused start left nothing

    log, data = _table_files(table)
    assert (log, len(data)) == (_commits(2), 2)
    assert DeltaTable(str(table)).version() == 1
    assert _landed(duck, table) == sorted((f"inbox:{n}", i) for i, n in enumerate(names))
    # the tmpfs held the whole state folder: nothing reached the disk beneath it
    assert sorted(os.listdir(state)) == []
    assert sorted(os.listdir(work)) == ["inbox", "lake", "silta.toml", "state"]


# -- 2. the lake, then a publish's target folder ------------------------------------------
def _rows_text(i: int) -> str:
    return "id,v\n" + "".join(f"{i * 1000 + j},n{i}_{j}_{'z' * 40}\n" for j in range(200))


def _ids(files: range) -> list[int]:
    return sorted(i * 1000 + j for i in files for j in range(200))


def _published(path: Path) -> list[int]:
    data = pacsv.read_csv(path)
    assert data.column_names == ["id", "v"]
    return sorted(data.column("id").to_pylist())


def test_lake_and_publish_target_full_fail_cleanly_and_recover(tmp_path: Path, work: Path,
                                                               duck: Any) -> None:
    config = write_config(work, [
        {"name": "s", "on_success": "move"},
        {"name": "pub", "source": "lake:raw/t", "target": "inbox:outgoing/t_{version}.csv",
         "mode": "append", "after": ["s"]},
    ], agent={"sync_workers": 1})
    lake, inbox, later = work / "lake", work / "inbox", tmp_path / "later"
    outgoing = inbox / "outgoing"
    outgoing.mkdir()
    for i in range(3):
        _write(inbox, f"f{i:05d}.csv", _rows_text(i))
    for i in range(3, 23):
        _write(later, f"f{i:05d}.csv", _rows_text(i))
    sizes = {f"f{i:05d}.csv": len(_rows_text(i)) for i in range(23)}

    r = _scenario(tmp_path, [
        {"op": "mount", "path": str(lake), "kib": 8192},
        {"op": "mount", "path": str(outgoing), "kib": 2048},
        _run("first", work, config),
        {"op": "move", "src": str(later), "dst": str(inbox)},
        # one page: the batch's part file (38 KB) starts and cannot be finished, nor can
        # the run records' (7 KB) in _silta/runs
        {"op": "fill", "name": "lake-room", "path": str(lake / "ballast"), "leave_pages": 1},
        _run("lake-full", work, config),
        {"op": "tree", "name": "lake-full-tree", "path": str(lake)},
        {"op": "tree", "name": "inbox-lake-full", "path": str(inbox)},
        {"op": "copy", "src": str(lake), "dst": str(tmp_path / "lake-full")},
        {"op": "unfill", "path": str(lake / "ballast")},
        # two pages of the 250 KB the next publish needs: its temporary file is cut short
        {"op": "fill", "name": "target-room", "path": str(outgoing / ".ballast"),
         "leave_pages": 2},
        _run("target-full", work, config),
        {"op": "tree", "name": "outgoing-full", "path": str(outgoing)},
        {"op": "unfill", "path": str(outgoing / ".ballast")},
        _run("recovered", work, config),
        {"op": "tree", "name": "outgoing-after", "path": str(outgoing)},
        {"op": "tree", "name": "inbox-after", "path": str(inbox)},
        {"op": "copy", "src": str(lake), "dst": str(tmp_path / "lake-after")},
        {"op": "copy", "src": str(outgoing), "dst": str(tmp_path / "outgoing-after")},
    ])
    state = work / "state"
    first = _outcomes(r["first"])
    assert r["first"]["code"] == 0, r["first"]
    assert [(o["status"], o["files"], o["rows"], o["table_version"]) for o in first.values()
            ] == [("ok", 3, 600, 0), ("ok", 1, 600, 0)]

    # the lake full in the middle of a commit
    assert r["lake-room"]["free_pages"] == 1
    full = r["lake-full"]
    assert full["code"] == 1, full
    lake_error = ("table 'raw/t': the lake's disk is full (no space left on device); free "
                  "space on it and the work is retried")
    runs_error = ("table '_silta/runs': the lake's disk is full (no space left on device); "
                  "free space on it and the work is retried")
    out = _outcomes(full)
    assert (out["s"]["status"], out["s"]["files"], out["s"]["table_version"],
            out["s"]["error"], out["s"]["retriable"]) == ("failed", 0, 0, lake_error, True)
    assert (out["pub"]["status"], out["pub"]["files"], out["pub"]["verified"]) == (
        "ok", 0, "ok: up to date (published to version 0)")
    # besides the upstream panic (a race: not after every failed write), exactly these
    assert _log(_PANIC.sub("", full["err"])) == [
        f"ERROR silta.sync sync=s failed (retried on the next run): {lake_error}",
        f"WARNING silta.alerts FIRING warning: agent / run_failed / sync:s: sync s failed: "
        f"{lake_error}",
        "WARNING silta.runs run records not written to _silta/runs yet (kept, retried "
        f"later): {runs_error}",
        "INFO silta.publish sync=pub nothing to publish: raw/t is at version 0, published "
        "up to 0",
        "WARNING silta.runs run records not written to _silta/runs yet (kept, retried "
        f"later): {runs_error}",
    ]
    # nothing half-written: only whole commits and the files they name, no temporary name
    tree = r["lake-full-tree"]["files"]
    assert not [f for f in tree if "tmp" in f or "_commit_" in f], tree
    held = tmp_path / "lake-full" / "raw" / "t"
    log, data = _table_files(held)
    assert (log, len(data)) == (_commits(1), 1)
    assert _landed(duck, held) == sorted((f"inbox:f{i:05d}.csv", i * 1000 + j)
                                         for i in range(3) for j in range(200))
    assert r["inbox-lake-full"]["files"] == {f"f{i:05d}.csv": sizes[f"f{i:05d}.csv"]
                                             for i in range(3, 23)} | {
        f".silta-done/f{i:05d}.csv": sizes[f"f{i:05d}.csv"] for i in range(3)} | {
        "outgoing/t_0.csv": r["outgoing-after"]["files"]["t_0.csv"]}

    # the publish target full in the middle of its temporary file
    assert r["target-room"]["free_pages"] == 2
    full = r["target-full"]
    assert full["code"] == 1, full
    pub_error = ("writing 'outgoing/t_1.csv': disk full (No space left on device); free space "
                 "and the work is retried")
    out = _outcomes(full)
    assert (out["s"]["status"], out["s"]["files"], out["s"]["rows"],
            out["s"]["table_version"]) == ("ok", 20, 4000, 1)
    assert (out["pub"]["status"], out["pub"]["files"], out["pub"]["error"],
            out["pub"]["retriable"]) == ("failed", 0, pub_error, True)
    assert r["outgoing-full"]["files"] == {".ballast": r["outgoing-full"]["files"][".ballast"],
                                           "t_0.csv": r["outgoing-after"]["files"]["t_0.csv"]}

    # room again: the ingest's files once, each version published once with its rows
    rec = r["recovered"]
    assert rec["code"] == 0, rec
    out = _outcomes(rec)
    assert (out["s"]["status"], out["s"]["files"], out["s"]["table_version"]) == ("ok", 0, 1)
    assert (out["pub"]["status"], out["pub"]["files"], out["pub"]["rows"],
            out["pub"]["table_version"], out["pub"]["verified"]) == (
        "ok", 1, 4000, 1, "ok: rows read 4000 = written 4000")
    assert sorted(r["outgoing-after"]["files"]) == ["t_0.csv", "t_1.csv"]
    published = tmp_path / "outgoing-after"
    assert _published(published / "t_0.csv") == _ids(range(3))
    assert _published(published / "t_1.csv") == _ids(range(3, 23))
    assert sorted(r["inbox-after"]["files"]) == sorted(
        [f".silta-done/f{i:05d}.csv" for i in range(23)] + ["outgoing/t_0.csv",
                                                            "outgoing/t_1.csv"])
    table = tmp_path / "lake-after" / "raw" / "t"
    log, data = _table_files(table)
    assert (log, len(data)) == (_commits(2), 2)
    assert _landed(duck, table) == sorted((f"inbox:f{i:05d}.csv", i * 1000 + j)
                                          for i in range(23) for j in range(200))

    # every failure recorded and alerted, then resolved; the store intact
    assert _integrity(state) == "ok"
    runs = _runs(state)
    assert [x[1:4] for x in runs] == [
        ("sync", "s", "ok"), ("publish", "pub", "ok"),
        ("sync", "s", "failed"), ("publish", "pub", "ok"),
        ("sync", "s", "ok"), ("publish", "pub", "failed"),
        ("sync", "s", "ok"), ("publish", "pub", "ok")]
    assert [x[6] for x in runs] == [None, None, lake_error, None, None, pub_error, None, None]
    ids = [x[0] for x in runs]
    assert _batches(state, "s") == [(1, "committed", 3, 0, ids[0]),
                                    (2, "failed", 20, None, ids[2]),
                                    (3, "committed", 20, 1, ids[4])]
    assert _batches(state, "pub") == [(1, "committed", 1, 0, ids[1]),
                                      (2, "abandoned", 0, None, ids[5]),
                                      (3, "committed", 1, 1, ids[7])]
    assert _alerts(state) == [("agent", "run_failed", "sync:s", "resolved", 1),
                              ("agent", "run_failed", "publish:pub", "resolved", 1)]
    # the lake's own run log has every run that moved data or failed, once, the failed
    # ingest's record included (it waited in the outbox while the lake was full)
    lake_runs = delta_table(tmp_path / "lake-after" / "_silta" / "runs")
    expected = sorted((x[0], x[3]) for x in runs if x[3] == "failed" or x[4])
    assert sorted(zip(lake_runs.column("run_id").to_pylist(),
                      lake_runs.column("status").to_pylist(), strict=True)) == expected
    # both tmpfs held all their writes: nothing reached the disks beneath them
    assert os.listdir(lake) == [] and os.listdir(outgoing) == []
    assert sorted(os.listdir(work)) == ["inbox", "lake", "silta.toml", "state"]
