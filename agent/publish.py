"""Publish: a Delta table's new rows out to an on-prem folder, SFTP server or SQL table.

Each run publishes the Delta versions after the last published one, as one unit:

* to files: one file per version range, written under a temporary name recorded in the
  ledger, then renamed. The ledger goes pending -> staged (the temporary file is
  complete and durable) -> committed. After a crash: a pending unit's temporary file is
  removed and the range is written again; a staged unit is renamed if its temporary
  file is still there, otherwise the rename had happened. A consumer that takes files
  away as they arrive therefore sees each range exactly once.
* to SQL: one transaction holding the rows and an idempotency record (sync, version);
  the database, not the ledger, says what is published, so a retry never writes twice.

After the transfer the result is verified: a file by its size and sha256 read back from
the target, a SQL write by its row count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
import posixpath
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from agent.config import SyncConfig
from agent.outcome import ProgressCallback
from agent.runner import SyncRunner
from connectors.abc import FileInfo, FileStore, TableStore
from connectors.errors import SiltaError, StoreError
from connectors.formats import write_chunks
from connectors.lake_changes import added_rows
from connectors.names import check_relative_path, safe_display

if TYPE_CHECKING:
    from agent.sync import SyncEngine

log = logging.getLogger("silta.publish")

LINEAGE_PREFIX = "_silta_"
VERIFY_CHUNK = 4 << 20


class PublishRun(SyncRunner):
    """One run of one publish sync (lake -> on-prem)."""

    def __init__(self, engine: SyncEngine, conf: SyncConfig, run_id: str,
                 cancel: threading.Event, on_progress: ProgressCallback | None) -> None:
        super().__init__(engine, conf, run_id, cancel, on_progress)
        self.store = engine.store_for(conf.connector)

    # -- the run ----------------------------------------------------------------------
    def execute(self) -> None:
        self.recover()
        table = self.lake.open(self.conf.table)
        if table is None:
            log.info("sync=%s nothing to publish yet: table %s does not exist", self.conf.name,
                     self.conf.table)
            self.outcome.summarize_verification()
            return
        current = table.version()
        last = self._last_published()
        if last is not None and last >= current:
            log.info("sync=%s nothing to publish: %s is at version %d, published up to %d",
                     self.conf.name, self.conf.table, current, last)
            self.outcome.table_version = current
            self.outcome.summarize_verification()
            if self.outcome.verified is None:
                self.outcome.verified = f"ok: up to date (published to version {last})"
            return
        after = None if self.conf.mode == "snapshot" else last
        columns = self._columns(table)
        detail: dict[str, Any] = {
            "kind": "publish", "after": after, "from_version": 0 if after is None else after + 1,
            "to_version": current, "mode": self.conf.mode, "columns": columns,
        }
        if isinstance(self.store, FileStore):
            final = self._file_name(detail)
            detail |= {"target": final, "tmp": self._tmp_name(final, current)}
        seq = self.state.plan_unit(self.conf.name, self.run_id, detail)
        try:
            if isinstance(self.store, FileStore):
                self._publish_file(seq, detail)
            else:
                self._publish_rows(seq, detail)
        except SiltaError as e:
            if isinstance(self.store, TableStore):
                self.state.update_unit(self.conf.name, seq, status="failed", detail=detail,
                                       error=str(e))
            # A file unit stays pending/staged: the next run finishes or undoes it.
            raise
        self.outcome.table_version = current
        self.outcome.summarize_verification()

    def _columns(self, table: Any) -> list[str]:
        names = list(pa.schema(table.schema().to_arrow()).names)
        if self.conf.columns is not None:
            missing = [c for c in self.conf.columns if c not in names]
            if missing:
                raise StoreError(f"sync {self.conf.name!r}: column(s) {missing} are not in "
                                 f"table {self.conf.table!r}; its columns: {', '.join(names)}")
            return list(self.conf.columns)
        return [n for n in names if not n.startswith(LINEAGE_PREFIX)]

    def _last_published(self) -> int | None:
        found = self.state.last_committed_unit(self.conf.name)
        last = found[1].get("to_version") if found else None
        if isinstance(self.store, TableStore):
            # The target's own record wins: it is written in the same transaction as the rows.
            applied = self.store.applied_version(self.conf.name)
            if applied is not None and (last is None or applied > last):
                last = applied
        return None if last is None else int(last)

    def _rows(self, detail: dict[str, Any]) -> pa.RecordBatchReader:
        source = added_rows(self.lake, self.conf.table, detail["after"], detail["to_version"],
                            columns=detail["columns"])
        schema = source.schema

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in source:
                if self.cancel.is_set():
                    raise StoreError("stopped before the publish was complete; it is "
                                     "written again on the next run", retriable=True)
                self.outcome.rows_read += batch.num_rows
                self.progress.rows += batch.num_rows
                self.emit()
                yield batch

        return pa.RecordBatchReader.from_batches(schema, counted())

    # -- SQL targets ------------------------------------------------------------------
    def _publish_rows(self, seq: int, detail: dict[str, Any]) -> None:
        assert isinstance(self.store, TableStore)
        result = self.store.write(self.conf.pattern, self._rows(detail), mode=self.conf.mode,
                                  key=list(self.conf.key),
                                  idempotency=(self.conf.name, int(detail["to_version"])))
        if result.already:
            log.info("sync=%s versions %s..%s were already published to %s", self.conf.name,
                     detail["from_version"], detail["to_version"], self.conf.pattern)
            self.outcome.rows_read = 0
        elif result.rows != self.outcome.rows_read:
            self.outcome.mismatches.append(
                f"{self.conf.pattern}: read {self.outcome.rows_read} rows, wrote {result.rows}")
        self.outcome.rows_checked += result.rows
        self._committed(seq, detail, rows=result.rows, bytes_=0)

    # -- file targets -----------------------------------------------------------------
    def _file_name(self, detail: dict[str, Any]) -> str:
        values = {"version": detail["to_version"], "to_version": detail["to_version"],
                  "from_version": detail["from_version"],
                  "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")}
        name = self.conf.pattern.format(**values)
        return check_relative_path(name, what="published file name")

    @staticmethod
    def _tmp_name(final: str, version: int) -> str:
        folder, base = posixpath.split(final)
        tmp = f".{base}.silta-{version}.tmp"
        return posixpath.join(folder, tmp) if folder else tmp

    def _publish_file(self, seq: int, detail: dict[str, Any]) -> None:
        assert isinstance(self.store, FileStore)
        store = self.store
        reader = self._rows(detail)
        first = _first_rows(reader)
        if first is None:
            log.info("sync=%s versions %s..%s added no rows: no file written", self.conf.name,
                     detail["from_version"], detail["to_version"])
            self._committed(seq, detail | {"empty": True}, rows=0, bytes_=0)
            return
        digest = hashlib.sha256()
        size = 0

        def chunks() -> Iterator[bytes]:
            nonlocal size
            fmt = self.conf.file_format
            csv = self.conf.csv.to_format() if fmt == "csv" else None
            for chunk in write_chunks(first, fmt, csv):
                digest.update(chunk)
                size += len(chunk)
                self.progress.bytes_done = size
                yield chunk

        def staged(info: FileInfo) -> None:
            detail.update(staged_size=info.size, sha256=digest.hexdigest(),
                          rows=self.outcome.rows_read)
            self.state.update_unit(self.conf.name, seq, status="staged", detail=detail)

        store.delete(detail["tmp"])  # leftovers of an attempt that did not finish
        store.write_atomic(detail["target"], chunks(), tmp_name=detail["tmp"], on_staged=staged)
        self._verify_file(detail)
        self.outcome.rows_checked += self.outcome.rows_read
        self._committed(seq, detail, rows=self.outcome.rows_read, bytes_=size)

    def _verify_file(self, detail: dict[str, Any]) -> None:
        """Read the file back from the target: size and sha256 as written, else say so."""
        assert isinstance(self.store, FileStore)
        target = detail["target"]
        info = self.store.stat(target)
        if info is None:
            # A consumer may take a file the moment it appears; the rename was atomic.
            log.info("sync=%s %s was taken from the target before it could be read back",
                     self.conf.name, safe_display(target))
            return
        h = hashlib.sha256()
        with self.store.open_read(target) as f:
            while chunk := f.read(VERIFY_CHUNK):
                h.update(chunk)
        if info.size != detail.get("staged_size") or h.hexdigest() != detail.get("sha256"):
            self.outcome.mismatches.append(
                f"{safe_display(target)}: wrote {detail.get('staged_size')} bytes sha256 "
                f"{str(detail.get('sha256'))[:12]}, target has {info.size} bytes sha256 "
                f"{h.hexdigest()[:12]}")
        detail["verified"] = not self.outcome.mismatches

    def _committed(self, seq: int, detail: dict[str, Any], *, rows: int, bytes_: int) -> None:
        wrote_file = "target" in detail and not detail.get("empty")
        self.state.update_unit(self.conf.name, seq, status="committed", detail=detail,
                               rows=rows, bytes_=bytes_, version=int(detail["to_version"]),
                               files=1 if wrote_file else 0)
        self.outcome.batches += 1
        self.outcome.rows += rows
        self.outcome.bytes += bytes_
        self.outcome.files += 1 if wrote_file else 0
        self.progress.batches += 1
        self.emit(force=True)
        log.info("sync=%s published versions %s..%s of %s: rows=%d%s", self.conf.name,
                 detail["from_version"], detail["to_version"], self.conf.table, rows,
                 f" file={safe_display(detail['target'])}" if "target" in detail else
                 f" table={self.conf.pattern}")

    # -- recovery ---------------------------------------------------------------------
    def recover(self) -> None:
        """Finish or undo units a crash left open (see the module docstring)."""
        for seq, status, detail in self.state.open_units(self.conf.name):
            if isinstance(self.store, TableStore):
                applied = self.store.applied_version(self.conf.name)
                if applied is not None and applied >= int(detail["to_version"]):
                    self.state.update_unit(self.conf.name, seq, status="committed",
                                           detail=detail, version=int(detail["to_version"]))
                else:
                    self.state.update_unit(self.conf.name, seq, status="abandoned",
                                           detail=detail, error="the agent stopped before "
                                           "the transaction committed")
                continue
            tmp = self.store.stat(detail["tmp"])
            if status == "pending":
                if tmp is not None:
                    self.store.delete(detail["tmp"])
                self.state.update_unit(self.conf.name, seq, status="abandoned", detail=detail,
                                       error="the agent stopped while writing; the range is "
                                       "written again")
                log.info("sync=%s unit %d abandoned (not staged); versions %s..%s are "
                         "published again", self.conf.name, seq, detail["from_version"],
                         detail["to_version"])
                continue
            if tmp is not None:
                if tmp.size != detail.get("staged_size"):
                    raise StoreError(f"staged file {safe_display(detail['tmp'])} has "
                                     f"{tmp.size} bytes, {detail.get('staged_size')} were "
                                     "written; leaving it for an operator to inspect")
                self.store.move(detail["tmp"], detail["target"])
                log.info("sync=%s unit %d: finished the rename of %s after a restart",
                         self.conf.name, seq, safe_display(detail["target"]))
            self._verify_file(detail)
            self.state.update_unit(self.conf.name, seq, status="committed", detail=detail,
                                   bytes_=detail.get("staged_size"), rows=detail.get("rows"),
                                   files=1, version=int(detail["to_version"]))


def _first_rows(reader: pa.RecordBatchReader) -> pa.RecordBatchReader | None:
    """``reader`` again if it holds at least one row, else None (reads ahead one batch)."""
    it: Iterator[pa.RecordBatch] = iter(reader)
    for batch in it:
        if batch.num_rows:
            return pa.RecordBatchReader.from_batches(reader.schema,
                                                     itertools.chain([batch], it))
    return None
