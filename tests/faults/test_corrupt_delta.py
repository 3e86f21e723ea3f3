"""A damaged Delta log under the agent: the newest commit or the checkpoint torn or lost.

The base world (built once by the real CLI): nine syncs from one inbox, each into its own
table, one file per batch. The first run lands three files each and, with
``compact_min_files = 3``, the product's maintenance compacts every table (version 3) and
writes a checkpoint at it; a second run, with compaction off, lands one more file (version
4, a Silta batch, the newest commit). Each test copies that world and breaks tables:

- ``half``: the newest commit truncated to half its bytes (a torn line);
- ``lines``: the newest commit cut at its last line break (its ``txn`` line lost; delta-rs
  reads the rest as a smaller commit without a word);
- ``garbage``: the newest commit replaced by binary garbage of the same size;
- ``notjson``: the newest commit replaced by text whose second line is not JSON;
- ``empty``: the newest commit emptied to zero bytes (delta-rs reads it as an empty
  version and, before the lake checked, a sync wrote version 5 on top: batch 4 lost);
- ``badckpt``: the checkpoint Parquet truncated to half (``_last_checkpoint`` names it);
- ``nockpt``: the checkpoint Parquet deleted (``_last_checkpoint`` names a missing file);
- ``idle``: the newest commit emptied, and no new file for it: a run with nothing to do
  must fail too (reported ok, it would resolve the alert on a table still damaged);
- ``ok``: not broken, the control.

What must hold, on `silta agent run --once` (all cases at once) and under the service
(``empty``, broken while the agent runs, after the agent itself read that commit as sound):
each broken sync's run fails, recorded in the runs table with an exact error naming the
table, the damaged file, what is wrong and what to do, and alerted (``run_failed``,
monitor ``agent``); the new files stay in the inbox byte for byte; the table's folder
(``_delta_log`` and data files) is byte-for-byte what it was: no commit on top, no orphan
data file; nothing else in the world changes but the control table, the state store and
``_silta/``. `silta tables list` / `tables show` name the damage without a traceback. After
the operator puts the original bytes back, the next run lands every new file exactly once
(deltalake and DuckDB agree, exact versions) and the alert resolves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import SILTA, Result, background, cli_env, ledger, silta, wait_for, write_csv

pytestmark = pytest.mark.timeout(180)

#: sync (= table under raw/) -> table index, for ids that never collide between tables
TABLES = ["half", "lines", "garbage", "notjson", "empty", "badckpt", "nockpt", "idle", "ok"]
BROKEN = TABLES[:-1]
HEADER = "id,v,src"
BASE_ROWS = 5  # rows of each base file f0..f3
NEW_ROWS = 3  # rows of each new file
LOG = "_delta_log"
LATEST = f"{LOG}/{4:020d}.json"
CHECKPOINT = f"{LOG}/{3:020d}.checkpoint.parquet"
RESTORE = ("restore its original bytes from a backup (or the object store's earlier "
           "version of the file); nothing is written to the table until then")
GARBAGE = b"\xde\xad\xbe\xef"
NOT_JSON = b'{"commitInfo": {"timestamp": 1}}\n{"add": not json}\n'


# -- the world ---------------------------------------------------------------------------------
def _config(root: Path, *, compact: int) -> Path:
    return write_config(root, [{"name": t, "source": f"inbox:{t}_*.csv", "target": f"lake:raw/{t}",
                                "batch_max_files": 1, "on_success": "delete", "watch": True}
                               for t in TABLES],
                        agent={"compact_min_files": compact, "heartbeat_seconds": 1})


def _ids(table: str, file: int, rows: int) -> list[int]:
    return [TABLES.index(table) * 10_000 + file * 100 + r for r in range(rows)]


def _drop(root: Path, table: str, file: int, rows: int) -> Path:
    path = root / "inbox" / f"{table}_{file}.csv"
    write_csv(path, HEADER, [f"{i},{i % 7},{table}" for i in _ids(table, file, rows)])
    return path


def _check(r: Result, code: int) -> None:
    assert r.code == code, r
    assert "Traceback" not in r.err + r.out, r


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corrupt_delta_base")
    config = _config(root, compact=3)
    for t in TABLES:
        for f in range(3):
            _drop(root, t, f, BASE_ROWS)
    _check(silta(root, "agent", "run", "--once", "--config", config), 0)
    # compaction off from here: every later version is a batch, easy to count exactly
    _config(root, compact=0)
    for t in TABLES:
        _drop(root, t, 3, BASE_ROWS)
    _check(silta(root, "agent", "run", "--once", "--config", config), 0)
    for t in TABLES:
        log = root / "lake" / "raw" / t / LOG
        assert sorted(os.listdir(log)) == sorted([
            *(f"{v:020d}.json" for v in range(5)), Path(CHECKPOINT).name,
            "_last_checkpoint"]), t
        assert json.loads((log / "_last_checkpoint").read_bytes())["version"] == 3
        ops = [json.loads(line)["commitInfo"] for v in range(5)
               for line in (log / f"{v:020d}.json").read_bytes().split(b"\n")
               if line.startswith(b'{"commitInfo"')]
        assert [o["operation"] for o in ops] == ["WRITE", "WRITE", "WRITE", "OPTIMIZE", "WRITE"]
        assert ops[4]["silta.app_id"] == f"silta/{t}" and ops[4]["silta.seq"] == "4"
    assert sorted(os.listdir(root / "inbox")) == []  # on_success = "delete"
    return root


def _world(base: Path, into: Path) -> Path:
    shutil.copytree(base, into, dirs_exist_ok=True)
    return into / "silta.toml"


def _break(table_dir: Path, how: str) -> tuple[Path, bytes]:
    """Damage ``table_dir`` as ``how`` says; returns the file and its original bytes."""
    target = table_dir / (CHECKPOINT if how in ("badckpt", "nockpt") else LATEST)
    data = target.read_bytes()
    if how == "half":
        target.write_bytes(data[:len(data) // 2])
    elif how == "lines":
        target.write_bytes(data[:data.rindex(b"\n") + 1])
    elif how == "garbage":
        target.write_bytes((GARBAGE * len(data))[:len(data)])
    elif how == "notjson":
        target.write_bytes(NOT_JSON)
    elif how in ("empty", "idle"):
        target.write_bytes(b"")
    elif how == "badckpt":
        target.write_bytes(data[:len(data) // 2])
    elif how == "nockpt":
        target.unlink()
    return target, data


def _problem(how: str, original: bytes) -> str:
    """The exact error the run must record for a table broken as ``how``."""
    where = f"its latest commit {LATEST} (version 4)"
    replay = ("every commit up to it is still in the log, which is then read from them")
    if how == "half":
        cut = original[:len(original) // 2]
        assert not cut.endswith(b"\n")  # a torn line, as the case means
        line = cut.count(b"\n") + 1
        text = (f"{where} ends in the middle of a record on line {line} "
                f"(the file was cut short): {RESTORE}")
    elif how == "lines":
        kept = original[:original.rindex(b"\n")].count(b"\n") + 1
        assert kept == 2  # commitInfo and add survive; the txn line is gone
        text = (f"{where} lacks the txn action of silta/lines batch 4 that its commitInfo "
                f"announces (the file was cut short after line {kept}): {RESTORE}")
    elif how == "garbage":
        text = (f"{where} has a line 1 that is not JSON ('utf-8' codec can't decode byte "
                f"0xbe in position 2: invalid start byte): {RESTORE}")
    elif how == "notjson":
        text = (f"{where} has a line 2 that is not JSON (Expecting value: line 1 column 9 "
                f"(char 8)): {RESTORE}")
    elif how in ("empty", "idle"):
        text = f"{where} is empty (0 bytes): {RESTORE}"
    elif how == "badckpt":
        text = (f"its checkpoint {CHECKPOINT} (version 3) is not a readable Parquet file "
                "(Parquet magic bytes not found in footer. Either the file is corrupted or "
                f"this is not a parquet file.): restore it from a backup, or move it and "
                f"{LOG}/_last_checkpoint aside ({replay}); nothing is written to the table "
                "until then")
    else:
        assert how == "nockpt"
        text = (f"its {LOG}/_last_checkpoint names the checkpoint of version 3, which is not "
                f"in {LOG}/: restore the checkpoint from a backup, or remove "
                f"{LOG}/_last_checkpoint ({replay}); nothing is written to the table until "
                "then")
    return f"table 'raw/{how}' is damaged: {text}"


# -- what is read back -------------------------------------------------------------------------
def _snapshot(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    """Every file under ``root`` (not under ``skip``) -> sha256 and mtime: what "untouched"
    means."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(skip):
            out[rel] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_mtime_ns}"
    return out


def _runs(state: Path, sync: str) -> list[dict[str, Any]]:
    return ledger(state, "SELECT status, files, rows, batches, table_version, error FROM runs "
                         "WHERE name=? ORDER BY started_at, rowid", (sync,))


def _alerts(state: Path) -> dict[str, tuple[str, str, str, int]]:
    """The agent's run_failed alerts by target: (state, severity, summary, count)."""
    rows = ledger(state, "SELECT check_name, target, state, severity, summary, count FROM "
                         "alerts WHERE monitor='agent' ORDER BY id")
    assert {r["check_name"] for r in rows} <= {"run_failed"}, rows
    return {r["target"]: (r["state"], r["severity"], r["summary"], r["count"]) for r in rows}


def _summary(sync: str, error: str) -> str:
    """agent/run_alerts.py's summary: the text, cut to 300 characters with an ellipsis."""
    text = f"sync {sync} failed: {error}"
    return text if len(text) <= 300 else text[:299] + "…"


def _landed(root: Path, duck: Any, table: str) -> tuple[int, list[tuple[Any, ...]]]:
    """The table's version and its (source, rows, distinct ids, min id, max id) per file,
    read by deltalake and checked against DuckDB."""
    path = root / "lake" / "raw" / table
    dt = DeltaTable(str(path))
    data = dt.to_pyarrow_dataset().to_table(columns=["id", "_silta_source"]).to_pylist()
    mine: dict[str, list[int]] = {}
    for r in data:
        mine.setdefault(r["_silta_source"], []).append(r["id"])
    ours = sorted((s, len(ids), len(set(ids)), min(ids), max(ids)) for s, ids in mine.items())
    theirs = duck_rows(duck, path, "SELECT _silta_source, count(*), count(DISTINCT id), "
                                   "min(id), max(id) FROM t GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in theirs] == ours
    return dt.version(), ours


def _expected(table: str, new: list[int]) -> list[tuple[Any, ...]]:
    files = [(f, BASE_ROWS) for f in range(4)] + [(f, NEW_ROWS) for f in new]
    return sorted((f"inbox:{table}_{f}.csv", n, n, _ids(table, f, n)[0], _ids(table, f, n)[-1])
                  for f, n in files)


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SILTA, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")


def _finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=120)
    return Result(proc.returncode, out, err, proc.pid)


# -- the cases ---------------------------------------------------------------------------------
def test_a_damaged_log_is_refused_recorded_alerted_and_recovers(base: Path, tmp_path: Path,
                                                                duck: Any) -> None:
    config = _world(base, tmp_path)
    lake = tmp_path / "lake" / "raw"
    originals = {how: _break(lake / how, how) for how in BROKEN}
    problems = {how: _problem(how, originals[how][1]) for how in BROKEN}
    fresh = {t: [4, 5] if t != "idle" else [] for t in TABLES}  # idle: nothing to do
    new = {t: [_drop(tmp_path, t, f, NEW_ROWS) for f in fresh[t]] for t in TABLES}
    # everything but what the run may change: the state store, _silta/, the control's files
    skip = ("state/", "lake/_silta/", "lake/raw/ok/", "inbox/ok_")
    before = _snapshot(tmp_path, skip)

    # The operator's views start with the run (read-only, each a process of its own): one
    # wait for start-up instead of one after another.
    shown = ["half", "empty", "nockpt"]  # one of each kind of refusal
    views = [_start(tmp_path, "tables", "list", "--json", "--config", str(config)),
             *(_start(tmp_path, "tables", "show", f"raw/{how}", "--config", str(config))
               for how in shown)]
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    _check(r, 1)
    for how in BROKEN:
        assert f"{how}: failed: {problems[how]}" in r.out, (how, r)
    assert _snapshot(tmp_path, skip) == before
    for how in BROKEN:
        assert _runs(tmp_path / "state", how)[-1] == {
            "status": "failed", "files": 0, "rows": 0, "batches": 0, "table_version": None,
            "error": problems[how]}
        assert all(p.exists() for p in new[how])  # in the inbox, bytes and mtime as before
    assert _alerts(tmp_path / "state") == {
        f"sync:{how}": ("firing", "warning", _summary(how, problems[how]), 1)
        for how in BROKEN}
    # the control table was not held up by the others
    assert _runs(tmp_path / "state", "ok")[-1]["status"] == "ok"
    assert _landed(tmp_path, duck, "ok") == (6, _expected("ok", [4, 5]))

    listing, *shows = (_finish(v) for v in views)
    _check(listing, 0)
    listed = {t["table"]: t for t in listing.json()}
    assert sorted(listed) == [f"raw/{t}" for t in sorted(TABLES)]
    for how in BROKEN:
        assert listed[f"raw/{how}"] == {
            "table": f"raw/{how}", "version": None, "rows": None, "columns": None,
            "last_commit": None, "last_operation": None,
            "error": f"unreadable: {problems[how]}"}
    assert listed["raw/ok"]["error"] is None  # its version depends on the run's progress
    for how, show in zip(shown, shows, strict=True):
        _check(show, 1)
        assert show.out == ""
        assert show.err == f"silta: corrupt delta table: {problems[how]}\n", how

    # the operator puts the original bytes back
    for path, data in originals.values():
        path.write_bytes(data)
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    _check(r, 0)
    for how in BROKEN:
        n = len(fresh[how])
        assert _runs(tmp_path / "state", how)[-1] == {
            "status": "ok", "files": n, "rows": n * NEW_ROWS, "batches": n,
            "table_version": 4 + n, "error": None}
        assert _landed(tmp_path, duck, how) == (4 + n, _expected(how, fresh[how]))
        assert not any(p.exists() for p in new[how])  # deleted only after their commits
        assert ledger(tmp_path / "state", "SELECT path, seq, status FROM files WHERE sync=? "
                                          "AND path LIKE ? ORDER BY path",
                      (how, f"{how}_%")) == [
            {"path": f"{how}_{f}.csv", "seq": f + 1, "status": "committed"}
            for f in range(4 + n)]
    assert _alerts(tmp_path / "state") == {
        f"sync:{how}": ("resolved", "warning", _summary(how, problems[how]), 1)
        for how in BROKEN}
    assert sorted(os.listdir(tmp_path / "inbox")) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_the_service_refuses_a_commit_emptied_under_it_and_recovers(base: Path,
                                                                     tmp_path: Path,
                                                                     duck: Any) -> None:
    config = _world(base, tmp_path)
    state, table = tmp_path / "state", tmp_path / "lake" / "raw" / "empty"
    with background(tmp_path, "agent", "run", "--config", config) as agent:
        def running() -> bool:
            assert agent.alive(), agent.stderr()
            return bool(ledger(state, "SELECT 1 FROM heartbeats WHERE pid=? AND "
                                      "state='running'", (agent.pid,)))

        wait_for("the agent running", running, timeout=60)
        # the agent lands a batch itself, so it has read (and found sound) version 5
        _drop(tmp_path, "empty", 4, NEW_ROWS)
        wait_for("batch 5 landed", lambda: any(
            r["table_version"] == 5 for r in _runs(state, "empty")), timeout=60)
        wait_for("no run in flight", lambda: all(
            r["status"] != "running" for r in _runs(state, "empty")), timeout=60)
        done = len(_runs(state, "empty"))
        latest = table / LOG / f"{5:020d}.json"
        original = latest.read_bytes()
        latest.write_bytes(b"")
        before = _snapshot(table, ())
        staged = [_drop(tmp_path / "staging", "empty", f, NEW_ROWS) for f in (5, 6)]
        inbox = _snapshot(tmp_path / "staging" / "inbox", ())  # a rename keeps bytes, mtime
        for p in staged:  # both arrive together: one file-arrival run
            os.replace(p, tmp_path / "inbox" / p.name)
        problem = (f"table 'raw/empty' is damaged: its latest commit {LOG}/{5:020d}.json "
                   f"(version 5) is empty (0 bytes): {RESTORE}")
        failed = wait_for("the failed run", lambda: [
            r for r in _runs(state, "empty")[done:] if r["status"] == "failed"], timeout=60)
        assert failed[0] == {"status": "failed", "files": 0, "rows": 0, "batches": 0,
                             "table_version": None, "error": problem}
        wait_for("no run in flight", lambda: all(
            r["status"] != "running" for r in _runs(state, "empty")), timeout=60)
        after = _runs(state, "empty")[done:]
        assert {r["status"] for r in after} == {"failed"}  # nothing landed on the empty file
        assert _snapshot(table, ()) == before
        assert _snapshot(tmp_path / "inbox", ()) == inbox
        assert _alerts(state) == {"sync:empty": ("firing", "warning",
                                                 _summary("empty", problem), len(after))}
        alerts = silta(tmp_path, "alerts", "list", "--json", "--config", config)
        _check(alerts, 0)
        assert [(a["monitor"], a["check"], a["target"], a["state"], a["summary"])
                for a in alerts.json()] == [
            ("agent", "run_failed", "sync:empty", "firing", _summary("empty", problem))]
        assert agent.alive()

        latest.write_bytes(original)  # the operator restores the commit
        _drop(tmp_path, "empty", 7, NEW_ROWS)  # the next arrival runs the sync again
        wait_for("the recovery", lambda: any(
            r["status"] == "ok" and r["table_version"] == 8
            for r in _runs(state, "empty")), timeout=60)
        assert _runs(state, "empty")[-1] == {"status": "ok", "files": 3, "rows": 3 * NEW_ROWS,
                                             "batches": 3, "table_version": 8, "error": None}
        assert _alerts(state)["sync:empty"][0] == "resolved"
        assert agent.terminate(timeout=30) == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()
    assert _landed(tmp_path, duck, "empty") == (8, _expected("empty", [4, 5, 6, 7]))
    assert sorted(os.listdir(tmp_path / "inbox")) == []
