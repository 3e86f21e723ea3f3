"""The sync engine: files in an on-prem store into one Delta table, exactly once.

The protocol (ARCHITECTURE.md, "exactly once"):

1. recover: a batch left ``pending`` by a crash is looked up in the table by its app
   transaction; committed there means committed, otherwise it is abandoned and its
   files are planned again;
2. scan: files that are hidden, temporary or not yet settled are left alone; a file is
   identified by path + size + mtime + sha256; content already committed is skipped;
3. plan: files are grouped into batches (one big file alone, small ones together),
   and each batch is written to the ledger as ``pending`` before any byte goes out;
4. commit: the batch is streamed as Arrow record batches into one Delta commit that
   carries ``Transaction("silta/<sync>", seq)``; the lake refuses nothing twice;
5. settle the ledger, then (only now) move or delete the source files.

A crash between any two steps repeats at most the step, never the commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import BinaryIO, Literal

import pyarrow as pa

from agent.codeinfo import code_version
from agent.config import LoadedConfig, SyncConfig
from agent.maintenance import maintain
from agent.outcome import ProgressCallback, SyncOutcome
from agent.run_alerts import record_run
from agent.runner import SyncRunner
from agent.runs import RunRecord, flush_quietly
from agent.state import FileEntry, StateStore, now
from agent.stores import Store
from connectors.abc import FileInfo, FileStore, TableStore
from connectors.errors import (
    CommitConflictError,
    CommitUnknownError,
    CorruptTableError,
    NotFoundError,
    ParseError,
    SchemaMismatchError,
    SiltaError,
    SourceChangedError,
    StoreError,
)
from connectors.formats import (
    PROBE_BYTES,
    CsvFormat,
    Format,
    delta_schema,
    parse_type_name,
    probe,
    read_batches,
    table_batches,
    unify,
    widen,
)
from connectors.lake import CommitResult, DeltaLake, history_summary
from connectors.names import is_temporary, safe_display

log = logging.getLogger("silta.sync")

LINEAGE = pa.schema([
    pa.field("_silta_source", pa.string()),
    pa.field("_silta_batch", pa.int64()),
    pa.field("_silta_ingested_at", pa.timestamp("us", tz="UTC")),
])
QUARANTINE_DIR = ".silta-quarantine"
HASH_CHUNK = 4 << 20
HASH_THREADS = 2
#: files hashed ahead of the batch being planned (bounds the queue's memory)
HASH_AHEAD = 256
#: small files are read whole when probed and kept for the write, up to this much per batch
SMALL_FILE_BYTES = PROBE_BYTES
SMALL_CACHE_BYTES = 64 << 20
MAX_ATTEMPTS = 25
#: commit races lost to other writers before the batch fails (it is retried next run)
CONFLICT_RETRIES = 8
#: disposed files recorded in the ledger per transaction
DISPOSE_GROUP = 1000


class _Stream:
    """The batch's files as one record-batch stream; remembers which file failed."""

    def __init__(self, run: _SyncRun, files: list[FileEntry], schema: pa.Schema, seq: int,
                 ingested_at: dt.datetime) -> None:
        self.run = run
        self.files = files
        self.data_schema = schema
        self.schema = (pa.schema(list(schema) + list(LINEAGE)) if run.conf.lineage_columns
                       else schema)
        self.seq = seq
        self.ingested_at = ingested_at
        self.failed_file: FileEntry | None = None
        self.failure: SiltaError | None = None
        self.rows = 0

    def batches(self) -> Iterator[pa.RecordBatch]:
        run = self.run
        done = run.progress.bytes_done
        for entry in self.files:
            try:
                yield from self._file_batches(entry)
            except SiltaError as e:
                self.failed_file, self.failure = entry, e
                raise
            done += entry.size
            run.progress.files_done += 1
            run.progress.bytes_done = done
            run.emit()

    def _file_batches(self, entry: FileEntry) -> Iterator[pa.RecordBatch]:
        run = self.run
        run.progress.current = entry.path
        source = f"{run.conf.connector}:{entry.path}"

        opened: list[BinaryIO] = []

        def opener() -> BinaryIO:
            opened.append(run.store.open_read(entry.path))
            return opened[-1]

        base = run.progress.bytes_done
        cached = run.small.get(entry.path)
        if cached is not None:
            source_batches = table_batches(cached, self.data_schema)
        else:
            source_batches = read_batches(opener, run.fmt, run.csv, self.data_schema)
        try:
            yield from self._lineage(entry, source_batches, base, opened, source)
        except (ParseError, NotFoundError) as e:
            # Rows torn by a rewrite under the reader, or a file gone since it was
            # planned: not a bad file to quarantine (that would move its new content
            # aside) but a changed one, read again once it settles.
            if not self._unchanged(entry):
                raise SourceChangedError(f"{safe_display(entry.path)} changed while it was "
                                         "read") from e
            raise
        if not self._unchanged(entry):
            raise SourceChangedError(f"{safe_display(entry.path)} changed while it was read")

    def _unchanged(self, entry: FileEntry) -> bool:
        now_info = self.run.store.stat(entry.path)
        return now_info is not None and (now_info.size, now_info.mtime_ns) == (
            entry.size, entry.mtime_ns)

    def _lineage(self, entry: FileEntry, source_batches: Iterator[pa.RecordBatch], base: int,
                 opened: list[BinaryIO], source: str) -> Iterator[pa.RecordBatch]:
        run = self.run
        for batch in source_batches:
            with contextlib.suppress(OSError, ValueError):  # progress only
                run.progress.bytes_done = base + (opened[-1].tell() if opened else entry.size)
            if run.conf.lineage_columns:
                n = batch.num_rows
                batch = pa.RecordBatch.from_arrays(
                    [*batch.columns, pa.repeat(source, n),
                     pa.repeat(pa.scalar(self.seq, pa.int64()), n),
                     pa.repeat(pa.scalar(self.ingested_at, LINEAGE.field(2).type), n)],
                    schema=self.schema)
            self.rows += batch.num_rows
            run.progress.rows += batch.num_rows
            run.emit()
            yield batch

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches())


class _SyncRun(SyncRunner):
    """One run of a files -> lake sync."""

    def __init__(self, engine: SyncEngine, conf: SyncConfig, run_id: str,
                 cancel: threading.Event, on_progress: ProgressCallback | None) -> None:
        super().__init__(engine, conf, run_id, cancel, on_progress)
        store = engine.store_for(conf.connector)
        assert isinstance(store, FileStore)
        self.store = store
        self.fmt: Format = conf.file_format
        self.csv: CsvFormat | None = conf.csv.to_format() if conf.format == "csv" else None
        self.widened: dict[str, pa.DataType] = {}
        self.small: dict[str, pa.Table] = {}  # files of the current batch read whole

    # -- steps ------------------------------------------------------------------------
    def execute(self) -> None:
        """recover, dispose, then scan -> plan -> commit until done or stopped."""
        self.recover()
        self.dispose_committed()
        entries = self.scan()
        try:
            for batch in self.plan(entries):
                if self.cancel.is_set():
                    break
                self.commit(batch)
        finally:
            entries.close()  # stops the background hashing at once
        if self.outcome.skipped:
            # Redelivered identical files: in the lake already, so disposed of now, not
            # left in the inbox until the next run (which may be hours away).
            self.dispose_committed()
        if self.cancel.is_set():
            # The scan stops too, so the loop may simply run out: say why either way.
            log.info("sync=%s stopping between batches (shutdown)", self.conf.name)
        self.outcome.summarize_verification()

    def recover(self) -> None:
        """Settle batches a crash left pending: the table's app transaction decides."""
        for seq in self.state.pending_batches(self.conf.name):
            done = self.lake.committed_seq(self.table, self.app_id)
            if done is not None and done >= seq:
                entry = self.lake.find_commit(self.table, self.app_id, seq)
                summary = history_summary(entry) if entry else {}
                version = summary.get("version")
                if version is None:
                    version = self.lake.require(self.table).version()
                self.state.mark_committed(self.conf.name, seq, version=int(version),
                                          rows=summary.get("rows_added"))
                log.info("sync=%s batch=%d recovered: it had committed as version %s",
                         self.conf.name, seq, version)
            else:
                self.state.mark_batch_failed(self.conf.name, seq, "abandoned: the agent stopped "
                                             "before the commit", status="abandoned")
                log.info("sync=%s batch=%d abandoned: not in the table; its files are planned "
                         "again", self.conf.name, seq)

    def dispose_committed(self) -> None:
        """Move or delete source files whose commit is durable (after a crash too)."""
        if self.conf.on_success == "keep":
            return
        # The ledger learns in groups: one fsync'd transaction per file cost ~6 ms each
        # (10 minutes for 100,000 files). A crash before a group is recorded is harmless:
        # the next run finds those files gone (or moved) and only marks them.
        done: list[FileEntry] = []
        try:
            for entry in self.state.undisposed(self.conf.name):
                info = self.store.stat(entry.path)
                if info is not None and (info.size, info.mtime_ns) == (entry.size,
                                                                     entry.mtime_ns):
                    if self.conf.on_success == "delete":
                        self.store.delete(entry.path)
                    else:
                        self.store.move(entry.path, self._archive_name(entry))
                done.append(entry)
                if len(done) >= DISPOSE_GROUP:
                    self.state.mark_disposed_many(self.conf.name, done)
                    done = []
        finally:
            self.state.mark_disposed_many(self.conf.name, done)

    def _archive_name(self, entry: FileEntry) -> str:
        """Where ``on_success = "move"`` puts a file: never over an earlier delivery.

        The same name delivered again (new content, or identical after a skip) would
        replace the first delivery's archived bytes; it goes beside them, named by its
        content, as quarantine does. That name taken means these very bytes are there.
        """
        target = f"{self.conf.move_to}/{entry.path}"
        if self.store.stat(target) is not None:
            target = f"{target}.{entry.sha256[:12]}"
        return target

    def scan(self) -> Generator[FileEntry, None, None]:
        """Settled files not yet in the lake, with their identity, oldest first.

        A generator: files are hashed in the background (hashlib releases the GIL) while
        earlier batches are written, so 100,000 waiting files start landing at once.
        """
        now_ns = time.time_ns()
        settle_ns = int(self.conf.settle_seconds * 1e9)
        fresh: list[FileInfo] = []
        for info in self.store.list(self.conf.pattern):
            if info.refused is not None:
                self.outcome.refused.append((info.path, info.refused))
                continue
            if is_temporary(info.path):
                continue
            status = self.state.file_status(self.conf.name, info.path, info.size,
                                            info.mtime_ns)
            if status == "quarantined":
                # Recorded, but a crash came before the move: finish moving it aside.
                found = self.state.quarantine_reason(self.conf.name, info.path, info.size,
                                                     info.mtime_ns)
                if found is not None:
                    self._move_aside(FileEntry(info.path, info.size, info.mtime_ns, found[0]),
                                     found[1])
                continue
            if status == "committed":
                continue
            age = now_ns - info.mtime_ns
            ahead = (self.conf.name, info.path, info.size, info.mtime_ns)
            if age < 0:
                # An mtime ahead of our clock (the clock was stepped back, or a file
                # server's clock runs ahead) tells nothing of the file's age: count from
                # when it was first seen so, not until the clock catches up (hours).
                first = self.engine.ahead_seen.setdefault(ahead, time.monotonic())
                age = int((time.monotonic() - first) * 1e9)
            if age < settle_ns:
                self.outcome.waiting += 1
                wait = (settle_ns - age) / 1e9
                self.outcome.next_check = min(self.outcome.next_check or wait, wait)
                continue
            self.engine.ahead_seen.pop(ahead, None)
            fresh.append(info)
        fresh.sort(key=lambda f: (f.mtime_ns, f.path))
        self.progress.files_total = len(fresh)
        self.progress.bytes_total = sum(f.size for f in fresh)
        self.emit(force=True)
        pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="sha256")
        try:
            hashes = self._hash_ahead(pool, fresh)
            for info, sha in zip(fresh, hashes, strict=True):
                if self.cancel.is_set():
                    break
                entry = self._identify(info, sha) if sha is not None else None
                if entry is not None:
                    yield entry
        finally:
            # A failed or stopped run must not wait for every queued file to be hashed.
            pool.shutdown(wait=True, cancel_futures=True)

    def _hash_ahead(self, pool: ThreadPoolExecutor, infos: list[FileInfo]
                    ) -> Iterator[str | None]:
        """Each file's sha256 in order, at most HASH_AHEAD files ahead of the consumer.

        ``pool.map`` would queue a future for every file at once: ~1.6 KiB each, 160 MiB
        for 100,000 waiting files, growing with the backlog instead of staying bounded.
        """
        queued: deque[Future[str | None]] = deque()
        rest = iter(infos)
        for info in itertools.islice(rest, HASH_AHEAD):
            queued.append(pool.submit(self._sha256_or_none, info))
        while queued:
            sha = queued.popleft().result()
            for info in itertools.islice(rest, 1):
                queued.append(pool.submit(self._sha256_or_none, info))
            yield sha

    def _sha256_or_none(self, info: FileInfo) -> str | None:
        if self.cancel.is_set():
            return None
        try:
            return self._sha256(info.path)
        except NotFoundError:
            return None  # gone since the listing

    def _identify(self, info: FileInfo, sha: str) -> FileEntry | None:
        after = self.store.stat(info.path)
        if after is None or (after.size, after.mtime_ns) != (info.size, info.mtime_ns):
            self.outcome.waiting += 1  # still being written: next run
            self.outcome.next_check = min(self.outcome.next_check or 1e9,
                                          max(self.conf.settle_seconds, 1.0))
            return None
        entry = FileEntry(info.path, info.size, info.mtime_ns, sha)
        if self.conf.mode == "append":
            # Appending the same content again would double its rows.
            seen = self.state.content_status(self.conf.name, info.path, sha) == "committed"
        else:
            # merge/snapshot: going back to earlier content (A, B, A) is a real change.
            seen = self.state.latest_committed_sha(self.conf.name, info.path) == sha
        if seen:
            # The same name redelivered with identical content: already in the lake.
            self.state.mark_skipped(self.conf.name, entry)
            self.outcome.skipped += 1
            log.info("sync=%s file=%s skipped: identical content already committed",
                     self.conf.name, safe_display(info.path))
            return None
        return entry

    def _sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with self.store.open_read(path) as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def plan(self, entries: Iterable[FileEntry]) -> Iterator[list[FileEntry]]:
        """Group files into batches: a snapshot file or a big file alone, small ones together."""
        current: list[FileEntry] = []
        size = 0
        for e in entries:
            if current and (self.conf.mode == "snapshot"
                            or size + e.size > self.conf.batch_max_bytes
                            or len(current) >= self.conf.batch_max_files):
                yield current
                current, size = [], 0
            current.append(e)
            size += e.size
        if current:
            yield current

    def quarantine(self, entry: FileEntry, reason: str) -> None:
        """Move a bad file aside with a reason file, record it, and go on with the rest."""
        self.outcome.quarantined.append((entry.path, reason))
        self.state.mark_quarantined(self.conf.name, self.run_id, entry, reason)
        self._move_aside(entry, reason)
        log.warning("sync=%s file=%s quarantined: %s", self.conf.name,
                    safe_display(entry.path), reason)

    def _move_aside(self, entry: FileEntry, reason: str) -> None:
        """Reason file first, then the move: a crash between leaves both findable."""
        target = f"{QUARANTINE_DIR}/{entry.path}"
        if self.store.stat(target) is not None:
            target = f"{QUARANTINE_DIR}/{entry.path}.{entry.sha256[:12]}"
        try:
            note = (f"file: {entry.path}\nsync: {self.conf.name}\nrun: {self.run_id}\n"
                    f"sha256: {entry.sha256}\nwhen: {dt.datetime.now(dt.UTC).isoformat()}\n"
                    f"reason: {reason}\n")
            self.store.write_atomic(f"{target}.reason.txt", [note.encode()])
            self.store.move(entry.path, target)
        except SiltaError as e:
            # The ledger already refuses the file by its identity; moving it is a courtesy.
            log.warning("sync=%s file=%s could not be moved to quarantine: %s",
                        self.conf.name, safe_display(entry.path), e)

    def _fixed_types(self, schema: pa.Schema | None) -> dict[str, pa.DataType]:
        """Types that are not inferred: the table's columns, then config, then widenings."""
        fixed: dict[str, pa.DataType] = {}
        if schema is not None:
            fixed.update({f.name: f.type for f in schema if not f.name.startswith("_silta_")})
        if self.csv is not None:
            fixed.update({n: parse_type_name(t) for n, t in self.csv.column_types.items()})
        fixed.update(self.widened)
        return fixed

    def _probe(self, batch: list[FileEntry], fixed: dict[str, pa.DataType],
               table_schema: pa.Schema | None
               ) -> tuple[list[FileEntry], pa.Schema | None]:
        """Each file's schema; files that cannot be read or break the policy go aside."""
        good: list[FileEntry] = []
        schemas: list[pa.Schema] = []
        self.small.clear()
        budget = SMALL_CACHE_BYTES
        for entry in batch:
            try:
                whole = entry.size <= min(SMALL_FILE_BYTES, budget)
                schema, rows = probe(partial(self.store.open_read, entry.path), self.fmt,
                                     self.csv, fixed, whole=whole)
                if rows is not None:
                    self.small[entry.path] = rows
                    budget -= entry.size
                if self.conf.mode == "merge":
                    missing = [k for k in self.conf.key if k not in schema.names]
                    if missing:
                        raise SchemaMismatchError(
                            f"merge key column(s) {missing} are missing; every file of a "
                            "merge sync needs its key columns")
                if self.conf.schema_policy == "strict":
                    # Against the table, or for a new table the batch's first good file.
                    reference = table_schema if table_schema is not None else (
                        schemas[0] if schemas else None)
                    if reference is not None:
                        self._check_strict(schema, reference)
            except (ParseError, SchemaMismatchError) as e:
                self.quarantine(entry, str(e))
                continue
            good.append(entry)
            schemas.append(schema)
        if not good:
            return good, None
        unified = delta_schema(unify(schemas))
        if table_schema is not None:
            # Existing columns keep the table's types and order; new ones follow.
            ordered = [pa.field(f.name, f.type) for f in table_schema
                       if f.name in unified.names]
            ordered += [f for f in unified if f.name not in table_schema.names]
            unified = pa.schema(ordered)
        return good, unified

    def _check_strict(self, schema: pa.Schema, table_schema: pa.Schema) -> None:
        table_cols = {f.name: f.type for f in table_schema if not f.name.startswith("_silta_")}
        file_cols = {f.name: f.type for f in schema}
        added = sorted(set(file_cols) - set(table_cols))
        missing = sorted(set(table_cols) - set(file_cols))
        if added or missing:
            parts = ([f"new column(s) {added}"] if added else []) + (
                [f"missing column(s) {missing}"] if missing else [])
            raise SchemaMismatchError(
                f"schema changed ({'; '.join(parts)}) and the sync's schema policy is "
                "\"strict\"; set schema = \"merge\" to accept it, or fix the file")

    def commit(self, batch: list[FileEntry]) -> None:
        """Plan one batch in the ledger and commit it; bad files go aside, the rest land."""
        try:
            self._commit(batch)
        finally:
            self.small.clear()

    def _commit(self, batch: list[FileEntry]) -> None:
        table_schema = self.lake.schema(self.table)
        fixed = self._fixed_types(table_schema)
        files, schema = self._probe(batch, fixed, table_schema)
        if schema is None:
            return
        done = self.lake.committed_seq(self.table, self.app_id)
        seq = self.state.plan_batch(self.conf.name, self.run_id, files,
                                    min_seq=(done or 0) + 1)
        ingested_at = dt.datetime.now(dt.UTC)
        conflicts = 0
        for _attempt in range(MAX_ATTEMPTS):
            stream = _Stream(self, files, schema, seq, ingested_at)
            bytes_before, rows_before = self.progress.bytes_done, self.progress.rows
            try:
                result = self._write(stream, seq)
            except SiltaError as e:
                self.progress.bytes_done, self.progress.rows = bytes_before, rows_before
                failure = stream.failure or e
                bad = stream.failed_file
                if isinstance(failure, ParseError) and bad is not None:
                    wider = self._widen(failure, fixed, schema)
                    if wider is not None:
                        # An inferred type was too narrow for a later block: widen, retry.
                        schema = wider
                        continue
                    self._drop(seq, files, bad)
                    self.quarantine(bad, str(failure))
                elif isinstance(failure, CommitConflictError) and conflicts < CONFLICT_RETRIES:
                    # Another writer won the race for this version: the lake already
                    # re-checked our app transaction, so the batch is simply written again.
                    conflicts += 1
                    log.info("sync=%s batch=%d lost a commit race (%d); writing it again",
                             self.conf.name, seq, conflicts)
                    time.sleep(min(5.0, 0.1 * 2 ** conflicts) * random.uniform(0.5, 1.0))
                    continue
                elif isinstance(failure, SourceChangedError) and bad is not None:
                    self._drop(seq, files, bad)
                    self.outcome.waiting += 1
                    self.outcome.next_check = self.conf.settle_seconds
                    log.info("sync=%s file=%s changed during the copy; it is read again once "
                             "it settles", self.conf.name, safe_display(bad.path))
                elif isinstance(failure, CommitUnknownError):
                    # The commit may have landed with its reply lost: the batch stays
                    # pending (its files held), and the next run's recover() asks the table.
                    log.warning("sync=%s batch=%d: whether it committed is not known yet; "
                                "the next run asks the table", self.conf.name, seq)
                    raise failure from e
                else:
                    self.state.mark_batch_failed(self.conf.name, seq, str(failure))
                    raise failure from e
                if not files:
                    self.state.mark_batch_failed(self.conf.name, seq, "no readable files left")
                    return
                continue
            if result.already and not self._same_batch(seq, files):
                # Another writer used this seq for other files (two agents with separate
                # state on one table): ours did not land; free them for a new seq.
                self.state.mark_batch_failed(self.conf.name, seq, "seq taken by another "
                                             "writer")
                if conflicts >= CONFLICT_RETRIES:
                    raise StoreError(
                        f"table {self.table!r} already holds batch {seq} of sync "
                        f"{self.conf.name!r} with other files: is a second agent writing "
                        "this table? The files are retried with a new batch number",
                        retriable=True)
                # A commit race lost, as above: plan the files again after the winner's
                # seq now, not on a next run that may be an hour (a cron) away.
                conflicts, taken = conflicts + 1, seq
                self.progress.bytes_done, self.progress.rows = bytes_before, rows_before
                done = self.lake.committed_seq(self.table, self.app_id)
                seq = self.state.plan_batch(self.conf.name, self.run_id, files,
                                            min_seq=(done or 0) + 1)
                log.info("sync=%s batch=%d was taken by another writer (%d); its files are "
                         "written again as batch %d", self.conf.name, taken, conflicts, seq)
                time.sleep(min(5.0, 0.1 * 2 ** conflicts) * random.uniform(0.5, 1.0))
                continue
            self._settle(seq, files, stream, result)
            return
        self.state.mark_batch_failed(self.conf.name, seq, "too many attempts")
        raise StoreError(f"batch {seq} could not be committed after {MAX_ATTEMPTS} attempts")

    def _widen(self, failure: ParseError, fixed: dict[str, pa.DataType], schema: pa.Schema
               ) -> pa.Schema | None:
        """The schema with the failing inferred column(s) one step wider, or None."""
        columns = [failure.column] if failure.column else list(failure.candidates)
        changed = False
        for col in columns:
            if col in fixed or col not in schema.names:
                continue
            wider = widen(schema.field(col).type)
            if wider is None:
                continue
            self.widened[col] = wider
            schema = schema.set(schema.get_field_index(col), pa.field(col, wider))
            changed = True
        return schema if changed else None

    def _same_batch(self, seq: int, files: list[FileEntry]) -> bool:
        entry = self.lake.find_commit(self.table, self.app_id, seq)
        return entry is None or entry.get("silta.manifest_sha256") in (
            None, manifest_sha256(files))

    def _drop(self, seq: int, files: list[FileEntry], bad: FileEntry) -> None:
        files.remove(bad)
        self.state.drop_from_batch(self.conf.name, seq, [bad.path])

    def _write(self, stream: _Stream, seq: int) -> CommitResult:
        manifest = [{"path": f.path, "size": f.size, "sha256": f.sha256}
                    for f in stream.files[:100]]
        metadata = {
            "silta.sync": self.conf.name,
            "silta.source": f"{self.conf.connector}:{self.conf.pattern}",
            "silta.run_id": self.run_id,
            "silta.agent": self.engine.agent_name,
            "silta.file_count": str(len(stream.files)),
            "silta.files": json.dumps(manifest, separators=(",", ":")),
            "silta.manifest_sha256": manifest_sha256(stream.files),
        }
        merge = self.conf.schema_policy == "merge"
        if self.conf.mode == "merge":
            data = pa.Table.from_batches(list(stream.batches()), schema=stream.schema)
            return self.lake.merge_batch(self.table, data, keys=list(self.conf.key),
                                         app_id=self.app_id, seq=seq, schema_merge=merge,
                                         metadata=metadata)
        mode: Literal["append", "overwrite"] = (
            "overwrite" if self.conf.mode == "snapshot" else "append")
        return self.lake.commit_batch(self.table, stream.reader(), app_id=self.app_id,
                                      seq=seq, mode=mode, schema_merge=merge,
                                      metadata=metadata)

    def _settle(self, seq: int, files: list[FileEntry], stream: _Stream,
                result: CommitResult) -> None:
        rows: int | None = result.rows if result.rows is not None else stream.rows
        if result.already:
            entry = self.lake.find_commit(self.table, self.app_id, seq)
            rows = history_summary(entry)["rows_added"] if entry else None
        self.state.mark_committed(self.conf.name, seq, version=result.version, rows=rows)
        out = self.outcome
        if result.already:  # landed by an earlier attempt: nothing was read this time
            out.rows_read += rows or 0
            out.rows_checked += rows or 0
        else:
            written = rows if rows is not None else stream.rows
            out.rows_read += stream.rows
            out.rows_checked += written
            if self.conf.mode == "merge":
                # A key repeated within the batch keeps its last row (dedupe_last).
                out.rows_duplicate += stream.rows - written
            elif written != stream.rows:
                out.mismatches.append(f"batch {seq}: read {stream.rows} rows, the commit "
                                      f"holds {written}")
        self.outcome.batches += 1
        self.outcome.files += len(files)
        self.outcome.rows += rows or 0
        self.outcome.bytes += sum(f.size for f in files)
        self.outcome.table_version = result.version
        self.progress.batches += 1
        self.emit(force=True)
        log.info("sync=%s batch=%d committed: files=%d rows=%s table=%s version=%d%s",
                 self.conf.name, seq, len(files), rows, self.table, result.version,
                 " (already committed earlier)" if result.already else "")
        self.dispose_committed()


def manifest_sha256(files: list[FileEntry]) -> str:
    """One checksum over the batch's file identities (the manifest may be truncated)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return h.hexdigest()


class SyncEngine:
    """Runs syncs; one run of a given sync at a time."""

    def __init__(self, loaded: LoadedConfig, state: StateStore, lake: DeltaLake,
                 stores: Mapping[str, Store], agent_name: str) -> None:
        self.loaded = loaded
        self.state = state
        self.lake = lake
        self.stores = stores
        self.agent_name = agent_name
        self._locks = {s.name: threading.Lock() for s in loaded.config.syncs}
        #: (sync, path, size, mtime_ns) of files whose mtime was ahead of the clock: when
        #: this agent first saw them (time.monotonic), their age for the settle window
        self.ahead_seen: dict[tuple[str, str, int, int], float] = {}

    def store_for(self, connector: str) -> Store:
        store: Store = self.stores[connector]
        return store

    def run(self, name: str, *, trigger: str = "manual", cancel: threading.Event | None = None,
            on_progress: ProgressCallback | None = None) -> SyncOutcome:
        conf = self.loaded.config.sync(name)
        lock = self._locks[name]
        if not lock.acquire(blocking=False):
            return SyncOutcome(name, "", status="busy")
        try:
            return self._run(conf, trigger, cancel or threading.Event(), on_progress)
        finally:
            lock.release()

    def _runner(self, conf: SyncConfig, run_id: str, cancel: threading.Event,
                on_progress: ProgressCallback | None) -> SyncRunner:
        """The kind of run this sync needs: files in, table rows in, or a publish."""
        from agent.ingest_table import TableIngestRun
        from agent.publish import PublishRun

        if conf.publishes:
            return PublishRun(self, conf, run_id, cancel, on_progress)
        if isinstance(self.store_for(conf.connector), TableStore):
            return TableIngestRun(self, conf, run_id, cancel, on_progress)
        return _SyncRun(self, conf, run_id, cancel, on_progress)

    def _run(self, conf: SyncConfig, trigger: str, cancel: threading.Event,
             on_progress: ProgressCallback | None) -> SyncOutcome:
        kind = "publish" if conf.publishes else "sync"
        run_id = self.state.start_run(kind, conf.name, trigger, self.agent_name)
        started = now()
        run = self._runner(conf, run_id, cancel, on_progress)
        out = run.outcome
        try:
            run.execute()
            if out.quarantined:
                out.status = "partial"
        except SiltaError as e:
            out.status, out.error, out.retriable = "failed", str(e), e.retriable
            log.error("sync=%s failed%s: %s", conf.name,
                      " (retried on the next run)" if e.retriable else "", e)
        except Exception as e:  # a bug must not kill the agent; it is recorded and shown
            out.status, out.error = "failed", f"internal error: {type(e).__name__}: {e}"
            log.exception("sync=%s failed with an internal error", conf.name)
        if out.mismatches:
            log.error("sync=%s verification failed: %s", conf.name, "; ".join(out.mismatches))
            if out.status == "ok":
                out.status = "partial"
        run.emit(force=True)
        if out.table_version is None and not conf.publishes:
            try:
                table = self.lake.open(conf.table)
                out.table_version = table.version() if table is not None else None
            except CorruptTableError as e:
                # A run with nothing to do is no "good run" on a damaged table: reported
                # ok, it would resolve the alert while the next file must fail again.
                if out.status != "failed":
                    out.status, out.error, out.retriable = "failed", str(e), e.retriable
                    log.error("sync=%s failed: %s", conf.name, e)
            except SiltaError:
                pass  # already reported as the run's error, or the lake is briefly away
        # A refused name leaves the run ok (the file stays where it is; a partial run
        # every few seconds would add a lake record each time): the alert says it.
        error = out.error or ("; ".join(
            [f"{p}: {r}" for p, r in out.quarantined]
            + [f"not read: {p}: {r}" for p, r in out.refused]) or None)
        # Idle runs stay local: a sync every few seconds would add a lake commit each time.
        lake_row = (self._lake_row(conf, kind, trigger, started, out, error)
                    if out.batches or out.failed else None)
        self.state.finish_run(
            run_id, status=out.status, files=out.files, rows=out.rows, bytes_=out.bytes,
            batches=out.batches, failed=len(out.quarantined) + (out.status == "failed"),
            table_version=out.table_version, verified=out.verified, error=error,
            lake_row=lake_row)
        record_run(self.state, self.loaded.config.alerts, self.agent_name, kind=kind,
                   name=conf.name, run_id=run_id, status=out.status, error=error,
                   quarantined=len(out.quarantined), refused=[p for p, _ in out.refused])
        if lake_row is not None:
            flush_quietly(self.state, self.lake)
        if out.batches and not conf.publishes:
            maintain(self.loaded, self.lake, conf.table, self.agent_name)  # under our lock
        return out

    def _lake_row(self, conf: SyncConfig, kind: str, trigger: str, started: str,
                  out: SyncOutcome, error: str | None) -> dict[str, object]:
        """The run's ``_silta/runs`` record; the files themselves are in the commits."""
        lake_side = [{"table": conf.table, "version": out.table_version}]
        onprem = [{"connector": conf.connector, "path": conf.pattern or conf.query,
                   "files": out.files, "bytes": out.bytes}]
        record = RunRecord(
            run_id=out.run_id, kind=kind, name=conf.name, trigger=trigger, status=out.status,
            agent=self.agent_name, started_at=started, finished_at=now(),
            inputs=lake_side if conf.publishes else onprem,
            outputs=onprem if conf.publishes else lake_side,
            metrics={"rows": out.rows, "batches": out.batches, "files": out.files,
                     "bytes": out.bytes, "quarantined": len(out.quarantined)},
            error=error, detail={"verified": out.verified, "skipped": out.skipped},
            code_version=code_version())
        return record.as_row()
