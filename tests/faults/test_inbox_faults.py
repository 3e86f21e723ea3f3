"""Floods and changing files in the inbox, through the real `silta` CLI and a real sshd.

What it breaks, and what must hold each time:

1. 100,000 one-row CSV files dropped into a folder inbox while the agent is down, then
   `silta agent run --once` (``on_success = "delete"``): every file lands exactly once
   (100,000 distinct ``_silta_source`` values, each with its own row; DuckDB and
   deltalake agree), 100 batches of 1,000 in the ledger and in the table's app
   transaction, the inbox is empty, nothing else is written, no alert; the agent's peak
   RSS (GNU time's high-water mark) stays under ``FLOOD_RSS_BOUND``.
2. a ~160 MB file rewritten in place (truncated, then rows with another column) and a
   4 MB one deleted while the agent copies them, from a folder and from SFTP: the agent
   is frozen (SIGSTOP) at the copy's open, seen through inotify (the third open:
   sha256, probe, copy), and held until the process reading the disk (the agent, or
   sshd's session) is part-way into the file; the file is changed or removed, and the
   agent goes on (SIGCONT). Nothing of either file is in the table (no torn rows), the
   other files land, the run reports both put back (``waiting``), nothing is
   quarantined or alerted; the next run lands the rewritten file once with its final
   content, the deleted one never.
3. the same name redelivered after its first copy was committed and moved away: new
   content lands once as a new batch, identical content is skipped as README promises
   (in ``append`` mode: the content was ever committed under that name; in ``snapshot``
   mode: only when it equals the latest content landed there, so going back to older
   content lands again); each delivery is disposed of in its own run, and the archive
   in ``.silta-done`` keeps every delivery's bytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import signal
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import SILTA, cli_env, delta_table, ledger, silta
from tests.servers.sshd import SshServer, _descendants

pytestmark = pytest.mark.timeout(300)

FLOOD_FILES = 100_000
#: The agent idles at 193 MiB RSS (GNU time, 10 files); the flood peaked at 293 MiB here:
#: ~1 KiB per waiting file (its listing entry and identity). Holding every file's parsed
#: rows at once would add ~325 MiB (3.3 KiB per small Arrow table: ~520 MiB in all), and
#: the sha256 queue that submitted a future per file at once (fixed with this test)
#: added 164 MiB (~460 MiB). 400 MiB leaves a third over the measured peak for allocator
#: noise and still fails either kind of growth per file.
FLOOD_RSS_BOUND = 400 << 20
IN_OPEN = 0x20
#: the commit read is a file's third open: sha256 (scan), schema probe, copy
COPY_OPEN = 3


# -- helpers -------------------------------------------------------------------------------
def _once(root: Path, config: Path) -> tuple[int, dict[str, Any]]:
    """`silta agent run --once --json`: its exit code and the one sync's outcome."""
    r = silta(root, "agent", "run", "--once", "--json", "--config", config, timeout=240)
    assert "Traceback" not in r.err, r
    (outcome,) = r.json()
    return r.code, outcome


def _alerts(state: Path) -> list[tuple[str, str, str, str]]:
    return [(a["monitor"], a["check_name"], a["target"], a["state"])
            for a in ledger(state, "SELECT * FROM alerts ORDER BY id")]


def _runs(state: Path) -> list[tuple[str, str, str, int, int, str | None]]:
    return [(r["kind"], r["name"], r["status"], r["files"], r["rows"], r["error"])
            for r in ledger(state, "SELECT * FROM runs ORDER BY started_at, rowid")]


def _both(duck: Any, table: Path, cols: str) -> list[tuple[Any, ...]]:
    """The table's rows (``cols``, sorted) through DuckDB, checked equal via deltalake."""
    names = [c.strip() for c in cols.split(",")]
    via_duck = duck_rows(duck, table, f"SELECT {cols} FROM t ORDER BY {cols}")
    data = delta_table(table)
    via_delta = sorted(zip(*(data[n].to_pylist() for n in names), strict=True))
    assert via_duck == via_delta
    return via_duck


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _csv(ids: range, width: int) -> bytes:
    """A CSV ``id,v`` whose rows are ``width`` wide: a torn read splits them."""
    return ("id,v\n" + "".join(f"{i},{'y' * width}\n" for i in ids)).encode()


# -- 1. a flood of 100,000 files ---------------------------------------------------------------
def _run_with_peak_rss(cwd: Path, *args: str, timeout: float) -> tuple[int, int, str, str]:
    """Run `silta ARGS` to the end; (exit code, peak RSS in bytes, stdout, stderr).

    GNU time reports the kernel's own high-water mark (exact, where polling could miss a
    short peak). Not ``os.wait4`` from here: a child forked from pytest keeps pytest's
    RSS high-water mark across exec, and would be charged for it.
    """
    out_path, err_path = cwd / "agent.stdout", cwd / "agent.stderr"
    rss_path = cwd / "agent.maxrss"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(rss_path), *SILTA,
                                 *args], cwd=cwd, env=cli_env(), stdout=out, stderr=err)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:  # never hang the suite
                proc.kill()
                proc.wait()
    peak_kib = int(rss_path.read_text(encoding="utf-8").split()[-1])
    return (code, peak_kib * 1024, out_path.read_text(encoding="utf-8"),
            err_path.read_text(encoding="utf-8", errors="replace"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_flood_of_100k_files_lands_each_once_with_bounded_memory(tmp_path: Path,
                                                                 duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "flood", "on_success": "delete"}])
    inbox, table, state = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t", tmp_path / "state"
    # One short row each, written with bare syscalls: pathlib would triple the time.
    base = os.fspath(inbox)
    for i in range(FLOOD_FILES):
        fd = os.open(f"{base}/f{i:06d}.csv", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"id,v\n%d,x%d\n" % (i, i))
        os.close(fd)

    code, peak, out, err = _run_with_peak_rss(
        tmp_path, "agent", "run", "--once", "--json", "--config", str(config), timeout=840)
    assert "Traceback" not in err, err[-3000:]
    assert code == 0, err[-3000:]
    (outcome,) = json.loads(out)
    assert {k: outcome[k] for k in ("status", "batches", "files", "rows", "skipped", "waiting",
                                    "quarantined", "table_version", "error", "verified")} == {
        "status": "ok", "batches": 100, "files": FLOOD_FILES, "rows": FLOOD_FILES,
        "skipped": 0, "waiting": 0, "quarantined": [], "table_version": 99, "error": None,
        "verified": f"ok: rows read {FLOOD_FILES} = written {FLOOD_FILES}"}
    assert peak < FLOOD_RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"

    # every file once, its own row with it: DuckDB ...
    expected_sum = FLOOD_FILES * (FLOOD_FILES - 1) // 2
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT _silta_source), "
                     "count(DISTINCT id), sum(id), min(id), max(id), count(DISTINCT "
                     "_silta_batch) FROM t") == [
        (FLOOD_FILES, FLOOD_FILES, FLOOD_FILES, expected_sum, 0, FLOOD_FILES - 1, 100)]
    assert duck_rows(duck, table, "SELECT count(*) FROM t WHERE _silta_source <> 'inbox:f' "
                     "|| lpad(id::VARCHAR, 6, '0') || '.csv' OR v <> 'x' || id::VARCHAR") == [
        (0,)]
    # ... and deltalake
    data = delta_table(table)
    sources = data["_silta_source"].to_pylist()
    assert len(sources) == FLOOD_FILES
    assert set(zip(sources, data["id"].to_pylist(), strict=True)) == {
        (f"inbox:f{i:06d}.csv", i) for i in range(FLOOD_FILES)}
    dt = DeltaTable(str(table))
    assert dt.transaction_version("silta/flood") == 100
    ops = [h["operation"] for h in dt.history()]
    # 100 batch commits, then the run's compaction of their 100 small files
    assert (dt.version(), ops.count("WRITE"), ops.count("OPTIMIZE")) == (100, 100, 1)

    # the ledger agrees, and says every file was disposed of
    assert ledger(state, "SELECT status, count(*) AS n, sum(files) AS files, sum(rows) AS rows, "
                  "min(seq) AS lo, max(seq) AS hi, max(table_version) AS v FROM batches "
                  "GROUP BY status") == [{"status": "committed", "n": 100, "files": FLOOD_FILES,
                                          "rows": FLOOD_FILES, "lo": 1, "hi": 100, "v": 99}]
    assert ledger(state, "SELECT status, disposed, count(*) AS n, count(DISTINCT path) AS paths "
                  "FROM files GROUP BY status, disposed") == [
        {"status": "committed", "disposed": 1, "n": FLOOD_FILES, "paths": FLOOD_FILES}]
    assert _runs(state) == [("sync", "flood", "ok", FLOOD_FILES, FLOOD_FILES, None)]
    assert _alerts(state) == []
    # disposed per config (deleted), and nothing written beside the configured roots
    assert os.listdir(inbox) == []
    assert sorted(os.listdir(tmp_path)) == ["agent.maxrss", "agent.stderr", "agent.stdout",
                                            "inbox", "lake", "silta.toml", "state"]


# -- 2. files changed and deleted while they are copied ------------------------------------------
class _Inotify:
    """inotify (libc, via ctypes) on single files: counts their opens, by anyone."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.names: dict[int, str] = {}

    def watch(self, path: Path) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN)
        assert wd >= 0, os.strerror(ctypes.get_errno())
        self.names[wd] = path.name

    def opens(self, timeout: float) -> list[str]:
        """Names opened since the last call (one entry per open); [] after ``timeout``."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data, found = os.read(self.fd, 65536), []
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            offset += 16 + length
            if mask & IN_OPEN:
                found.append(self.names[wd])
        return found

    def close(self) -> None:
        os.close(self.fd)


def _open_offsets(pids: list[int], path: Path) -> list[int]:
    """File offsets of every descriptor of ``pids`` open on ``path`` (from /proc)."""
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != str(path):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    found.append(int(f.readline().split()[1]))  # "pos:\t<offset>"
            except OSError:
                continue
    return found


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` unless the process has ended (then there is nothing to freeze)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _run_breaking_copies(root: Path, config: Path, files: Path,
                         actions: dict[str, Callable[[Path], None]],
                         readers: Callable[[int], list[int]], part_way: set[str],
                         ) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """`silta agent run --once`, frozen (SIGSTOP) in each victim's copy for its action.

    The freeze comes at the victim's third open (the copy's); for the ``part_way``
    ones it waits until the process that reads the disk (``readers(agent_pid)``: the
    agent, or sshd's session) has read part of it. Returns the exit code, the outcome,
    and what each freeze saw: the victim's ledger status and the readers' offsets in it.
    """
    watcher = _Inotify()
    for name in actions:
        watcher.watch(files / name)
    seen: list[dict[str, Any]] = []
    out_path, err_path = root / "agent.stdout", root / "agent.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([*SILTA, "agent", "run", "--once", "--json", "--config",
                                 str(config)], cwd=root, env=cli_env(), stdout=out, stderr=err)
    try:
        counts = dict.fromkeys(actions, 0)
        while proc.poll() is None and len(seen) < len(actions):
            for name in watcher.opens(timeout=0.5):
                counts[name] += 1
                if counts[name] != COPY_OPEN:
                    continue
                path = files / name
                size = path.stat().st_size
                _signal(proc, signal.SIGSTOP)
                try:
                    # Open but maybe nothing read yet: for a rewrite, let it run a moment
                    # at a time until the first bytes are in (Arrow then reads ahead
                    # 64 MiB and waits); an unlink only needs the file open.
                    for _ in range(20_000):
                        offsets = _open_offsets(readers(proc.pid), path)
                        if (any(0 < o < size for o in offsets) if name in part_way
                                else offsets) or proc.poll() is not None:
                            break
                        _signal(proc, signal.SIGCONT)
                        select.select([], [], [], 0.001)
                        _signal(proc, signal.SIGSTOP)
                    (row,) = ledger(root / "state", "SELECT status FROM files WHERE path=?",
                                    (name,))
                    seen.append({"name": name, "status": row["status"], "size": size,
                                 "offsets": offsets})
                    actions[name](path)
                finally:
                    _signal(proc, signal.SIGCONT)
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        watcher.close()
    errors = err_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in errors, errors
    (outcome,) = json.loads(out_path.read_text(encoding="utf-8"))
    return code, outcome, seen


#: The rewritten victim is ~160 MB: Arrow's CSV reader reads up to 32 blocks of 2 MiB
#: ahead (64 MiB, from the page cache in a few ms), so a smaller file would be read
#: through before the freeze; this one is still being read while the agent is frozen.
BIG_ROWS = 400_000
OLD = _csv(range(1_000_000, 1_000_000 + BIG_ROWS), 400)
#: rewritten with another column: every row read after the rewrite is the wrong shape
NEW_IDS = range(2_000_000, 2_000_000 + BIG_ROWS + 50_000)
NEW = ("id,v,w\n" + "".join(f"{i},{'y' * 420},{i % 7}\n" for i in NEW_IDS)).encode()
#: the deleted victim: over 1 MiB, so it is read from disk again for the copy (smaller
#: files are kept from the probe)
DELETED = _csv(range(3_000_000, 3_000_000 + 40_000), 100)


def _rewrite_in_place(path: Path) -> None:
    """What an exporter that reopens its output does: truncate, write other rows."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(NEW)


def _place_victims(files: Path) -> None:
    for i, name in enumerate(("a.csv", "b.csv", "c.csv")):
        (files / name).write_bytes(f"id,v\n{i + 1},small{i + 1}\n".encode())
    (files / "changed.csv").write_bytes(OLD)
    (files / "deleted.csv").write_bytes(DELETED)


def _check_breaking_copies(root: Path, config: Path, files: Path, table: Path, duck: Any,
                           target: str, readers: Callable[[int], list[int]]) -> None:
    _place_victims(files)
    code, first, seen = _run_breaking_copies(
        root, config, files, {"changed.csv": _rewrite_in_place, "deleted.csv": os.unlink},
        readers, part_way={"changed.csv"})
    # Each freeze came in that file's copy: planned (the ledger holds it pending), open, ...
    assert [(s["name"], s["status"]) for s in seen] == [("changed.csv", "pending"),
                                                         ("deleted.csv", "pending")]
    # ... the rewritten one read part-way (its rest comes from the new content), the
    # deleted one open (an open descriptor still reads it whole: only the stat after
    # the copy can tell)
    (offset,) = seen[0]["offsets"]
    assert 0 < offset < seen[0]["size"], seen
    (offset,) = seen[1]["offsets"]
    assert 0 <= offset <= seen[1]["size"], seen
    assert code == 0, first
    assert {k: first[k] for k in ("status", "batches", "files", "rows", "waiting",
                                  "quarantined", "error")} == {
        "status": "ok", "batches": 1, "files": 3, "rows": 3, "waiting": 2, "quarantined": [],
        "error": None}
    small = [(1, f"{target}:a.csv"), (2, f"{target}:b.csv"), (3, f"{target}:c.csv")]
    assert _both(duck, table, "id, _silta_source") == small  # not one row of either victim
    state = root / "state"
    assert _runs(state) == [("sync", "s", "ok", 3, 3, None)]
    assert ledger(state, "SELECT path, status FROM files ORDER BY path") == [
        {"path": p, "status": "committed"} for p in ("a.csv", "b.csv", "c.csv")]
    assert _alerts(state) == []
    assert not (files / ".silta-quarantine").exists()

    # The rewritten file has settled: it lands whole, with its final content, once.
    code, second = _once(root, config)
    assert code == 0, second
    assert {k: second[k] for k in ("status", "batches", "files", "rows", "waiting")} == {
        "status": "ok", "batches": 1, "files": 1, "rows": len(NEW_IDS), "waiting": 0}
    counts = duck_rows(duck, table, "SELECT _silta_source, count(*), min(id), max(id), "
                       "count(DISTINCT v), min(length(v)), count(w), sum(w) FROM t GROUP BY 1 "
                       "ORDER BY 1")
    new_ids = NEW_IDS
    assert counts == [(f"{target}:a.csv", 1, 1, 1, 1, 6, 0, None),
                      (f"{target}:b.csv", 1, 2, 2, 1, 6, 0, None),
                      (f"{target}:c.csv", 1, 3, 3, 1, 6, 0, None),
                      (f"{target}:changed.csv", len(new_ids), new_ids[0], new_ids[-1], 1, 420,
                       len(new_ids), sum(i % 7 for i in new_ids))]
    data = delta_table(table)
    changed = pc.equal(data["_silta_source"], f"{target}:changed.csv")
    assert sorted(data.filter(changed)["id"].to_pylist()) == list(new_ids)
    assert ledger(state, "SELECT path, sha256, status FROM files ORDER BY path") == [
        *({"path": p, "sha256": _sha(files / p), "status": "committed"}
          for p in ("a.csv", "b.csv", "c.csv")),
        {"path": "changed.csv", "sha256": hashlib.sha256(NEW).hexdigest(),
         "status": "committed"}]
    assert DeltaTable(str(table)).transaction_version("silta/s") == 2


def test_folder_file_changed_or_deleted_during_copy(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    _check_breaking_copies(tmp_path, config, tmp_path / "inbox", tmp_path / "lake" / "raw" / "t",
                           duck, "inbox", readers=lambda agent: [agent])


def test_sftp_file_changed_or_deleted_during_copy(tmp_path: Path, duck: Any,
                                                  sftp_server: SshServer,
                                                  sftp_root: Path) -> None:
    from tests.agent.test_sync_sftp import write_sftp_config

    config = write_sftp_config(tmp_path, sftp_server, sftp_root, {})
    # The agent reads through sshd: the session process below sshd reads the disk.
    server = sftp_server._proc
    assert server is not None
    _check_breaking_copies(tmp_path, config, sftp_root, tmp_path / "lake" / "raw" / "t", duck,
                           "inbox", readers=lambda _agent: _descendants(server.pid))


# -- 3. the same name delivered again -----------------------------------------------------------
def _deliver(inbox: Path, name: str, data: bytes) -> None:
    (inbox / name).write_bytes(data)


A = b"id,v\n1,first\n2,first\n"
B = b"id,v\n3,second\n4,second\n5,second\n"
C = b"id,v\n10,other\n"


def _sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _archive(inbox: Path) -> dict[str, bytes]:
    done = inbox / ".silta-done"
    return {p.name: p.read_bytes() for p in sorted(done.iterdir())} if done.exists() else {}


def test_append_redelivery_new_content_lands_identical_is_skipped(tmp_path: Path,
                                                                  duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "s", "on_success": "move"}])
    inbox, table, state = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t", tmp_path / "state"
    _deliver(inbox, "a.csv", A)
    _deliver(inbox, "c.csv", C)
    code, first = _once(tmp_path, config)
    assert (code, first["status"], first["files"], first["rows"]) == (0, "ok", 2, 3), first
    assert sorted(os.listdir(inbox)) == [".silta-done"]

    # a.csv again with new rows, c.csv again byte for byte (a new mtime)
    _deliver(inbox, "a.csv", B)
    _deliver(inbox, "c.csv", C)
    code, second = _once(tmp_path, config)
    assert {k: second[k] for k in ("status", "batches", "files", "rows", "skipped",
                                   "table_version")} == {
        "status": "ok", "batches": 1, "files": 1, "rows": 3, "skipped": 1, "table_version": 1}
    assert _both(duck, table, "id, v, _silta_source, _silta_batch") == [
        (1, "first", "inbox:a.csv", 1), (2, "first", "inbox:a.csv", 1),
        (3, "second", "inbox:a.csv", 2), (4, "second", "inbox:a.csv", 2),
        (5, "second", "inbox:a.csv", 2), (10, "other", "inbox:c.csv", 1)]

    # a.csv a third time with its first content: append already holds those rows
    _deliver(inbox, "a.csv", A)
    code, third = _once(tmp_path, config)
    assert {k: third[k] for k in ("status", "batches", "files", "skipped", "table_version")} == {
        "status": "ok", "batches": 0, "files": 0, "skipped": 1, "table_version": 1}
    assert duck_rows(duck, table, "SELECT count(*) FROM t") == [(6,)]
    assert DeltaTable(str(table)).transaction_version("silta/s") == 2
    assert ledger(state, "SELECT path, sha256, seq, status, disposed FROM files "
                  "ORDER BY path, seq") == [
        {"path": "a.csv", "sha256": hashlib.sha256(A).hexdigest(), "seq": 1,
         "status": "committed", "disposed": 1},
        {"path": "a.csv", "sha256": hashlib.sha256(B).hexdigest(), "seq": 2,
         "status": "committed", "disposed": 1},
        {"path": "c.csv", "sha256": hashlib.sha256(C).hexdigest(), "seq": 1,
         "status": "committed", "disposed": 1}]
    # every delivery was disposed of in its own run, and no earlier one's bytes were lost
    assert sorted(os.listdir(inbox)) == [".silta-done"]
    # beside the first delivery, named by content (a name taken: these very bytes)
    assert _archive(inbox) == {"a.csv": A, f"a.csv.{_sha12(B)}": B, f"a.csv.{_sha12(A)}": A,
                               "c.csv": C, f"c.csv.{_sha12(C)}": C}
    assert [r[2] for r in _runs(state)] == ["ok", "ok", "ok"]
    assert _alerts(state) == []


def test_snapshot_redelivery_skips_only_the_latest_content(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "s", "mode": "snapshot", "on_success": "move"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    results = []
    # A, A again (identical to the latest: skipped), B (new), A (back to older: a change)
    for data in (A, A, B, A):
        _deliver(inbox, "a.csv", data)
        code, out = _once(tmp_path, config)
        results.append((code, out["status"], out["batches"], out["skipped"],
                        out["table_version"]))
        assert sorted(os.listdir(inbox)) == [".silta-done"], (results, out)
    assert results == [(0, "ok", 1, 0, 0), (0, "ok", 0, 1, 0), (0, "ok", 1, 0, 1),
                       (0, "ok", 1, 0, 2)]
    assert _both(duck, table, "id, v, _silta_batch") == [(1, "first", 3), (2, "first", 3)]
    dt = DeltaTable(str(table))
    assert (dt.version(), dt.transaction_version("silta/s")) == (2, 3)
    # time travel keeps each landed snapshot
    for version, ids in ((0, [1, 2]), (1, [3, 4, 5])):
        dt.load_as_version(version)
        assert sorted(dt.to_pyarrow_dataset().to_table()["id"].to_pylist()) == ids
    assert _archive(inbox) == {"a.csv": A, f"a.csv.{_sha12(A)}": A, f"a.csv.{_sha12(B)}": B}
    assert _alerts(tmp_path / "state") == []
