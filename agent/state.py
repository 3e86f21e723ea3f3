"""The agent's state store: SQLite in WAL mode under ``state_dir``.

Holds the sync ledgers (batches and the files in them), run records, the operator
command queue and heartbeats. Local and transactional; the TUI and CLI read it while
the agent writes. Schema changes are numbered migrations, applied in order at open.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.errors import StateStoreError

FILE_NAME = "silta.db"

MIGRATIONS: list[str] = [
    # 1: ledger, runs, commands, heartbeats
    """
    CREATE TABLE batches (
        sync TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
        run_id TEXT, files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
        rows INTEGER, table_version INTEGER, error TEXT,
        created_at TEXT NOT NULL, finished_at TEXT,
        PRIMARY KEY (sync, seq)
    );
    CREATE TABLE files (
        sync TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
        size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, seq INTEGER,
        status TEXT NOT NULL, disposed INTEGER NOT NULL DEFAULT 0, reason TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (sync, path, sha256)
    );
    CREATE INDEX files_by_stat ON files (sync, path, size, mtime_ns);
    CREATE INDEX files_by_seq ON files (sync, seq);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, trigger TEXT,
        status TEXT NOT NULL, agent TEXT, started_at TEXT NOT NULL, finished_at TEXT,
        files INTEGER NOT NULL DEFAULT 0, rows INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0, table_version INTEGER, error TEXT
    );
    CREATE INDEX runs_by_name ON runs (kind, name, started_at);
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, args TEXT NOT NULL,
        os_user TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
        claimed_at TEXT, finished_at TEXT, result TEXT
    );
    CREATE TABLE heartbeats (
        agent TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
        started_at TEXT NOT NULL, beat_at TEXT NOT NULL, state TEXT NOT NULL
    );
    CREATE TABLE schedule_marks (
        job TEXT PRIMARY KEY, last_fire TEXT NOT NULL
    );
    """,
    # 2: units that are not files (SQL watermark windows, published Delta version ranges)
    # keep their identity and progress as JSON; runs record how their result was verified
    """
    ALTER TABLE batches ADD COLUMN detail TEXT;
    ALTER TABLE runs ADD COLUMN verified TEXT;
    """,
    # 3: ML runs name their model; run records wait in an outbox until the lake's
    # _silta/runs holds them (exactly once per outbox seq, under this store's own id)
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
    ALTER TABLE runs ADD COLUMN model TEXT;
    ALTER TABLE runs ADD COLUMN model_version INTEGER;
    ALTER TABLE runs ADD COLUMN detail TEXT;
    CREATE TABLE lake_outbox (
        run_id TEXT PRIMARY KEY, row TEXT NOT NULL, seq INTEGER,
        created_at TEXT NOT NULL, flushed_at TEXT
    );
    CREATE INDEX lake_outbox_open ON lake_outbox (flushed_at, seq);
    """,
    # 4: alerts (one open alert per monitor + check + target), their history, silences,
    # and the notifications waiting for delivery (an outbox: retried, survives restarts)
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL,
        monitor TEXT NOT NULL, check_name TEXT NOT NULL, target TEXT NOT NULL, model TEXT,
        severity TEXT NOT NULL, state TEXT NOT NULL, summary TEXT NOT NULL,
        value REAL, threshold REAL, detail TEXT NOT NULL DEFAULT '{}',
        count INTEGER NOT NULL DEFAULT 1, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        last_run_id TEXT, acked_by TEXT, acked_at TEXT, ack_comment TEXT,
        resolved_at TEXT, resolved_by TEXT, last_notified_at TEXT,
        notified INTEGER NOT NULL DEFAULT 0, retrain_requested_at TEXT
    );
    CREATE UNIQUE INDEX alerts_open ON alerts (fingerprint) WHERE state != 'resolved';
    CREATE INDEX alerts_state ON alerts (state, severity);
    CREATE TABLE alert_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL, at TEXT NOT NULL,
        event TEXT NOT NULL, by TEXT, detail TEXT
    );
    CREATE INDEX alert_events_alert ON alert_events (alert_id, id);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL,
        until TEXT NOT NULL, by TEXT NOT NULL, comment TEXT, created_at TEXT NOT NULL
    );
    CREATE INDEX silences_fp ON silences (fingerprint, until);
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL,
        event TEXT NOT NULL, channel TEXT NOT NULL, created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', last_error TEXT, sent_at TEXT
    );
    CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
    ALTER TABLE runs ADD COLUMN alerts_checked INTEGER;
    """,
    # 5: live progress of what runs now (one row per job, overwritten about once a second),
    # and an index for the newest-first pages of runs the TUI shows
    """
    CREATE TABLE progress (
        job TEXT PRIMARY KEY, updated_at TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX runs_by_start ON runs (started_at);
    """,
]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class FileEntry:
    """A source file's identity: path + size + mtime + sha256."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


#: the error text of a run an agent left running when it died
INTERRUPTED_ERROR = ("the agent stopped before the run finished (killed, out of memory or "
                     "power lost); its work is recovered from the ledger")


def _no_room_hint(folder: Path) -> str:
    """What to do when the state folder's disk is full. SQLite then says only "disk I/O
    error" at open: the 32 KiB -shm file it must create gets no pages (SQLITE_IOERR)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return ""
    if st.f_bavail * st.f_frsize >= 64 * 1024:
        return ""
    return f"; the disk holding {folder} is full: free space on it and run again"


class StateStore:
    """One SQLite database; a connection per thread, every write in a transaction."""

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / FILE_NAME
        self.readonly = readonly
        self._local = threading.local()
        if not readonly:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StateStoreError(f"cannot create state folder {self.dir}: {e.strerror}; "
                                      "check [agent].state_dir and its permissions") from e
            self._migrate()
        elif not self.path.exists() or self.schema_version() == 0:
            # (an agent's first start creates the file, then its tables in one transaction:
            # a reader in between sees an empty database, not yet a store)
            self.close()
            raise StateStoreError(f"no state store at {self.path}; has the agent run yet? "
                                  "(`silta agent run --once`)")

    # -- plumbing ---------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.readonly:
                    conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                           isolation_level=None)
                else:
                    conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as e:
                raise StateStoreError(f"cannot open state store {self.path}: {e}"
                                      f"{_no_room_hint(self.dir)}") from e
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            hint = "; the disk may be full" if "full" in str(e).lower() else ""
            raise StateStoreError(f"state store {self.path}: {e}{hint}") from e
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._conn().execute(sql, params))
        except sqlite3.Error as e:
            raise StateStoreError(f"state store {self.path}: {e}") from e

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def schema_version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        with self.tx() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise StateStoreError(
                    f"state store {self.path} has schema {version}, newer than this Silta "
                    f"knows ({len(MIGRATIONS)}); upgrade Silta")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    # -- sync ledger ------------------------------------------------------------------
    def next_seq(self, sync: str) -> int:
        row = self.query("SELECT MAX(seq) FROM batches WHERE sync = ?", (sync,))[0]
        return int(row[0] or 0) + 1

    def file_status(self, sync: str, path: str, size: int, mtime_ns: int) -> str | None:
        """Status of a file seen before with exactly this size and mtime (fast path)."""
        rows = self.query(
            "SELECT status FROM files WHERE sync=? AND path=? AND size=? AND mtime_ns=? "
            "ORDER BY updated_at DESC LIMIT 1", (sync, path, size, mtime_ns))
        return str(rows[0][0]) if rows else None

    def quarantine_reason(self, sync: str, path: str, size: int, mtime_ns: int
                          ) -> tuple[str, str] | None:
        """(sha256, reason) of a quarantined file with this identity, if it is one."""
        rows = self.query(
            "SELECT sha256, reason FROM files WHERE sync=? AND path=? AND size=? AND "
            "mtime_ns=? AND status='quarantined' LIMIT 1", (sync, path, size, mtime_ns))
        return (str(rows[0][0]), str(rows[0][1] or "")) if rows else None

    def path_seen(self, sync: str, path: str) -> bool:
        return bool(self.query("SELECT 1 FROM files WHERE sync=? AND path=? LIMIT 1",
                               (sync, path)))

    def content_status(self, sync: str, path: str, sha256: str) -> str | None:
        rows = self.query("SELECT status FROM files WHERE sync=? AND path=? AND sha256=?",
                          (sync, path, sha256))
        return str(rows[0][0]) if rows else None

    def latest_committed_sha(self, sync: str, path: str) -> str | None:
        """The content most recently committed under ``path`` (by batch order)."""
        rows = self.query("SELECT sha256 FROM files WHERE sync=? AND path=? AND "
                          "status='committed' ORDER BY seq DESC LIMIT 1", (sync, path))
        return str(rows[0][0]) if rows else None

    def plan_batch(self, sync: str, run_id: str, files: Sequence[FileEntry], *,
                   min_seq: int = 1) -> int:
        """Record a batch as pending before anything is written; returns its seq.

        ``min_seq`` comes from the table (its last committed seq + 1): a ledger that was
        lost or restored from a backup must never reuse a seq the table already holds,
        or the batch would be taken for a repeat and silently not written.
        """
        with self.tx() as conn:
            seq = max(min_seq, int(conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE sync=?",
                (sync,)).fetchone()[0]))
            conn.execute(
                "INSERT INTO batches (sync, seq, status, run_id, files, bytes, created_at) "
                "VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                (sync, seq, run_id, len(files), sum(f.size for f in files), now()))
            conn.executemany(
                "INSERT INTO files (sync, path, sha256, size, mtime_ns, seq, status, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (sync, path, sha256) DO "
                "UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, seq=excluded.seq, "
                "status='pending', disposed=0, updated_at=excluded.updated_at",
                [(sync, f.path, f.sha256, f.size, f.mtime_ns, seq, now()) for f in files])
        return seq

    def drop_from_batch(self, sync: str, seq: int, paths: Sequence[str]) -> None:
        """Take files out of a pending batch (quarantined, or changed during the copy):
        free to be planned again, as a failed batch's files are."""
        with self.tx() as conn:
            for path in paths:
                conn.execute("DELETE FROM files WHERE sync=? AND seq=? AND path=? AND "
                             "status='pending'", (sync, seq, path))
            row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE "
                               "sync=? AND seq=?", (sync, seq)).fetchone()
            conn.execute("UPDATE batches SET files=?, bytes=? WHERE sync=? AND seq=?",
                         (row[0], row[1], sync, seq))

    def batch_files(self, sync: str, seq: int) -> list[FileEntry]:
        rows = self.query("SELECT path, size, mtime_ns, sha256 FROM files WHERE sync=? AND seq=?"
                          " ORDER BY mtime_ns, path", (sync, seq))
        return [FileEntry(r["path"], r["size"], r["mtime_ns"], r["sha256"]) for r in rows]

    def mark_committed(self, sync: str, seq: int, *, version: int, rows: int | None) -> None:
        with self.tx() as conn:
            conn.execute("UPDATE batches SET status='committed', table_version=?, rows=?, "
                         "finished_at=? WHERE sync=? AND seq=?", (version, rows, now(), sync, seq))
            conn.execute("UPDATE files SET status='committed', updated_at=? WHERE sync=? AND "
                         "seq=?", (now(), sync, seq))

    def mark_batch_failed(self, sync: str, seq: int, error: str, *, status: str = "failed"
                          ) -> None:
        """A batch that did not commit; its files become free to plan again."""
        with self.tx() as conn:
            conn.execute("UPDATE batches SET status=?, error=?, finished_at=? WHERE sync=? AND "
                         "seq=?", (status, error, now(), sync, seq))
            conn.execute("DELETE FROM files WHERE sync=? AND seq=? AND status='pending'",
                         (sync, seq))

    def mark_quarantined(self, sync: str, run_id: str, entry: FileEntry, reason: str) -> None:
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO files (sync, path, sha256, size, mtime_ns, seq, status, reason, "
                "updated_at) VALUES (?, ?, ?, ?, ?, NULL, 'quarantined', ?, ?) ON CONFLICT "
                "(sync, path, sha256) DO UPDATE SET status='quarantined', seq=NULL, "
                "reason=excluded.reason, size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "updated_at=excluded.updated_at",
                (sync, entry.path, entry.sha256, entry.size, entry.mtime_ns, reason, now()))
            conn.execute(
                "INSERT INTO batches (sync, seq, status, run_id, files, bytes, error, created_at,"
                " finished_at) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE "
                "sync=?), 'quarantined', ?, 1, ?, ?, ?, ?)",
                (sync, sync, run_id, entry.size, f"{entry.path}: {reason}", now(), now()))

    def mark_skipped(self, sync: str, entry: FileEntry) -> None:
        """Remember a redelivered file with identical content under a new mtime."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE files SET size=?, mtime_ns=?, disposed=0, updated_at=? WHERE sync=? AND "
                "path=? AND sha256=?",
                (entry.size, entry.mtime_ns, now(), sync, entry.path, entry.sha256))

    # -- units that are not files: a SQL watermark window, a Delta version range ------------
    def plan_unit(self, sync: str, run_id: str, detail: dict[str, Any], *, min_seq: int = 1
                  ) -> int:
        """Record a unit as pending, with its identity in ``detail``; returns its seq."""
        with self.tx() as conn:
            seq = max(min_seq, int(conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE sync=?",
                (sync,)).fetchone()[0]))
            conn.execute(
                "INSERT INTO batches (sync, seq, status, run_id, detail, created_at) VALUES "
                "(?, ?, 'pending', ?, ?, ?)",
                (sync, seq, run_id, json.dumps(detail, sort_keys=True), now()))
        return seq

    def update_unit(self, sync: str, seq: int, *, status: str, detail: dict[str, Any],
                    rows: int | None = None, bytes_: int | None = None,
                    version: int | None = None, error: str | None = None,
                    files: int | None = None) -> None:
        """Move a unit on (pending -> staged -> committed, or failed/abandoned)."""
        final = status not in ("pending", "staged")
        with self.tx() as conn:
            conn.execute(
                "UPDATE batches SET status=?, detail=?, rows=COALESCE(?, rows), "
                "bytes=COALESCE(?, bytes), table_version=COALESCE(?, table_version), error=?, "
                "files=COALESCE(?, files), finished_at=? WHERE sync=? AND seq=?",
                (status, json.dumps(detail, sort_keys=True), rows, bytes_, version, error,
                 files, now() if final else None, sync, seq))

    def open_units(self, sync: str) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, status, detail) of units a crash left pending or staged."""
        rows = self.query("SELECT seq, status, detail FROM batches WHERE sync=? AND status IN "
                          "('pending', 'staged') ORDER BY seq", (sync,))
        return [(int(r[0]), str(r[1]), json.loads(r[2] or "{}")) for r in rows]

    def last_committed_unit(self, sync: str) -> tuple[int, dict[str, Any]] | None:
        """(seq, detail) of the newest committed unit."""
        rows = self.query("SELECT seq, detail FROM batches WHERE sync=? AND status='committed' "
                          "ORDER BY seq DESC LIMIT 1", (sync,))
        return (int(rows[0][0]), json.loads(rows[0][1] or "{}")) if rows else None

    def pending_batches(self, sync: str) -> list[int]:
        rows = self.query("SELECT seq FROM batches WHERE sync=? AND status='pending' ORDER BY seq",
                          (sync,))
        return [int(r[0]) for r in rows]

    def undisposed(self, sync: str) -> list[FileEntry]:
        rows = self.query("SELECT path, size, mtime_ns, sha256 FROM files WHERE sync=? AND "
                          "status='committed' AND disposed=0", (sync,))
        return [FileEntry(r["path"], r["size"], r["mtime_ns"], r["sha256"]) for r in rows]

    def mark_disposed(self, sync: str, entry: FileEntry) -> None:
        self.mark_disposed_many(sync, [entry])

    def mark_disposed_many(self, sync: str, entries: Sequence[FileEntry]) -> None:
        """Mark files moved or deleted, in one transaction (one fsync, not one per file)."""
        if not entries:
            return
        with self.tx() as conn:
            conn.executemany("UPDATE files SET disposed=1 WHERE sync=? AND path=? AND sha256=?",
                             [(sync, e.path, e.sha256) for e in entries])

    def ledger_summary(self, sync: str) -> dict[str, Any]:
        row = self.query(
            "SELECT COUNT(*) AS batches, COALESCE(SUM(files), 0) AS files, "
            "COALESCE(SUM(rows), 0) AS rows, MAX(table_version) AS table_version "
            "FROM batches WHERE sync=? AND status='committed'", (sync,))[0]
        quarantined = self.query("SELECT COUNT(*) FROM files WHERE sync=? AND "
                                 "status='quarantined'", (sync,))[0][0]
        return {**dict(row), "quarantined": int(quarantined)}

    def batches(self, sync: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM batches WHERE sync=? ORDER BY seq DESC LIMIT ?",
                          (sync, limit))
        return [dict(r) for r in rows]

    # -- runs -------------------------------------------------------------------------
    def start_run(self, kind: str, name: str, trigger: str, agent: str) -> str:
        run_id = uuid.uuid4().hex[:16]
        with self.tx() as conn:
            conn.execute("INSERT INTO runs (id, kind, name, trigger, status, agent, started_at) "
                         "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                         (run_id, kind, name, trigger, agent, now()))
        return run_id

    def finish_run(self, run_id: str, *, status: str, files: int = 0, rows: int = 0,
                   bytes_: int = 0, batches: int = 0, failed: int = 0,
                   table_version: int | None = None, error: str | None = None,
                   verified: str | None = None, model: str | None = None,
                   model_version: int | None = None,
                   lake_row: dict[str, Any] | None = None) -> None:
        """Close a run; ``lake_row`` (its ``_silta/runs`` record) goes to the outbox with it."""
        with self.tx() as conn:
            conn.execute(
                "UPDATE runs SET status=?, finished_at=?, files=?, rows=?, bytes=?, batches=?, "
                "failed=?, table_version=?, error=?, verified=?, model=?, model_version=? "
                "WHERE id=?",
                (status, now(), files, rows, bytes_, batches, failed, table_version, error,
                 verified, model, model_version, run_id))
            if lake_row is not None:
                conn.execute(
                    "INSERT INTO lake_outbox (run_id, row, created_at) VALUES (?, ?, ?) ON "
                    "CONFLICT (run_id) DO NOTHING",
                    (run_id, json.dumps(lake_row, sort_keys=True, default=str), now()))

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE id=?", (run_id,))
        return dict(rows[0]) if rows else None

    # -- the outbox of _silta/runs ------------------------------------------------------
    def store_id(self) -> str:
        """A random id of this state store (the app id of its _silta/runs commits)."""
        return str(self.query("SELECT value FROM meta WHERE key='store_id'")[0][0])

    def outbox_open(self) -> list[tuple[str, dict[str, Any], int | None]]:
        """(run_id, row, seq) of run records not yet in the lake; seq set once planned."""
        rows = self.query("SELECT run_id, row, seq FROM lake_outbox WHERE flushed_at IS NULL "
                          "ORDER BY seq IS NULL, seq, created_at")
        return [(str(r[0]), json.loads(r[1]), None if r[2] is None else int(r[2]))
                for r in rows]

    def outbox_plan(self, min_seq: int) -> int | None:
        """Give every unplanned record one new seq (at least ``min_seq``); None if none."""
        with self.tx() as conn:
            if not conn.execute("SELECT 1 FROM lake_outbox WHERE flushed_at IS NULL AND seq "
                                "IS NULL LIMIT 1").fetchone():
                return None
            top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM lake_outbox").fetchone()[0]
            seq = max(min_seq, int(top) + 1)
            conn.execute("UPDATE lake_outbox SET seq=? WHERE flushed_at IS NULL AND seq IS "
                         "NULL", (seq,))
        return seq

    def outbox_flushed(self, seq: int, *, keep_days: float = 7.0) -> None:
        """Mark ``seq`` as in the lake; records in the lake longer than ``keep_days`` go."""
        cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=keep_days)).isoformat(
            timespec="milliseconds")
        with self.tx() as conn:
            conn.execute("UPDATE lake_outbox SET flushed_at=? WHERE seq=?", (now(), seq))
            # the table, not the outbox, keeps seqs from going back (flush's min_seq)
            conn.execute("DELETE FROM lake_outbox WHERE flushed_at < ?", (cutoff,))

    def interrupt_stale_runs(self) -> list[dict[str, str]]:
        """Runs left 'running' by an agent that died, now 'interrupted' (id, kind, name,
        started_at); called under the agent lock."""
        with self.tx() as conn:
            stale = [dict(r) for r in conn.execute(
                "SELECT id, kind, name, started_at FROM runs WHERE status='running'")]
            # a failure is recorded with its reason, as every other one is
            conn.execute("UPDATE runs SET status='interrupted', finished_at=?, "
                         "error=coalesce(error, ?) WHERE status='running'",
                         (now(), INTERRUPTED_ERROR))
        return stale

    def interrupt_stale_commands(self) -> int:
        """Commands left 'running' by an agent that died: failed, to be queued again."""
        with self.tx() as conn:
            cur = conn.execute("UPDATE commands SET status='failed', finished_at=?, result="
                               "'the agent stopped before it finished; queue it again' WHERE "
                               "status='running'", (now(),))
            return cur.rowcount

    def runs(self, *, kind: str | None = None, name: str | None = None, limit: int = 50
             ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM runs WHERE 1=1", list[Any]()
        if kind:
            sql, params = sql + " AND kind=?", [*params, kind]
        if name:
            sql, params = sql + " AND name=?", [*params, name]
        rows = self.query(sql + " ORDER BY started_at DESC LIMIT ?", [*params, limit])
        return [dict(r) for r in rows]

    # -- schedule marks (catch-up of runs missed while the agent was down) --------------
    def last_fire(self, job: str) -> dt.datetime | None:
        rows = self.query("SELECT last_fire FROM schedule_marks WHERE job=?", (job,))
        return dt.datetime.fromisoformat(rows[0][0]) if rows else None

    def set_last_fire(self, job: str, when: dt.datetime) -> None:
        with self.tx() as conn:
            conn.execute("INSERT INTO schedule_marks (job, last_fire) VALUES (?, ?) ON CONFLICT "
                         "(job) DO UPDATE SET last_fire=excluded.last_fire",
                         (job, when.isoformat()))

    # -- operator command queue ---------------------------------------------------------
    def enqueue_command(self, kind: str, args: dict[str, Any], os_user: str | None = None
                        ) -> int:
        with self.tx() as conn:
            cur = conn.execute(
                "INSERT INTO commands (kind, args, os_user, created_at, status) VALUES "
                "(?, ?, ?, ?, 'queued')",
                (kind, json.dumps(args, sort_keys=True), os_user or getpass.getuser(), now()))
            return int(cur.lastrowid or 0)

    def claim_commands(self) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT * FROM commands WHERE status='queued' ORDER BY id")]
            for r in rows:
                conn.execute("UPDATE commands SET status='running', claimed_at=? WHERE id=?",
                             (now(), r["id"]))
        for r in rows:
            r["args"] = json.loads(r["args"])
        return rows

    def finish_command(self, command_id: int, status: str, result: str = "") -> None:
        with self.tx() as conn:
            conn.execute("UPDATE commands SET status=?, finished_at=?, result=? WHERE id=?",
                         (status, now(), result, command_id))

    def commands(self, limit: int = 50) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM commands ORDER BY id DESC LIMIT ?",
                                            (limit,))]

    # -- live progress ------------------------------------------------------------------
    def record_progress(self, job: str, detail: dict[str, Any]) -> None:
        with self.tx() as conn:
            conn.execute("INSERT INTO progress (job, updated_at, detail) VALUES (?, ?, ?) ON "
                         "CONFLICT (job) DO UPDATE SET updated_at=excluded.updated_at, "
                         "detail=excluded.detail", (job, now(), json.dumps(detail)))

    def progress(self) -> dict[str, dict[str, Any]]:
        """job -> its latest progress figures (with ``updated_at``)."""
        return {str(r["job"]): {**json.loads(r["detail"]), "updated_at": r["updated_at"]}
                for r in self.query("SELECT * FROM progress")}

    # -- heartbeats -------------------------------------------------------------------
    def beat(self, agent: str, *, pid: int, host: str, started_at: str, state: str) -> None:
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO heartbeats (agent, pid, host, started_at, beat_at, state) VALUES "
                "(?, ?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET pid=excluded.pid, "
                "host=excluded.host, started_at=excluded.started_at, beat_at=excluded.beat_at, "
                "state=excluded.state", (agent, pid, host, started_at, now(), state))

    def heartbeats(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM heartbeats ORDER BY agent")]
