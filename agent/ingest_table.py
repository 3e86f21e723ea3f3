"""A SQL table or query into one Delta table, exactly once, incrementally by watermark.

Units are watermark windows. Each Delta commit carries ``Transaction("silta/<sync>", seq)``
and, in its commit metadata, the highest watermark it holds; the next run reads rows at
or above that watermark (less the ``overlap``), so the table, not the ledger, says where
to go on. Rows read again (the overlap, and rows that share the boundary watermark) are
dropped when the table already holds the same key and watermark, so late rows are not
lost and re-read rows are not doubled. Without a watermark a run reads everything:
``snapshot`` replaces the table in one commit, ``merge`` upserts on the key.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from agent.config import SyncConfig
from agent.outcome import ProgressCallback
from agent.runner import SyncRunner
from agent.sync import LINEAGE
from connectors.abc import TableStore
from connectors.errors import SchemaMismatchError, SiltaError, StoreError
from connectors.formats import delta_schema
from connectors.lake import CommitResult, history_summary

if TYPE_CHECKING:
    from agent.sync import SyncEngine

log = logging.getLogger("silta.sync")

WATERMARK_KEY = "silta.watermark"


def encode_watermark(value: Any) -> str:
    """A watermark value as JSON with its kind, so it reads back as the same type."""
    if isinstance(value, dt.datetime):
        return json.dumps({"kind": "timestamp", "value": value.isoformat()})
    if isinstance(value, dt.date):
        return json.dumps({"kind": "date", "value": value.isoformat()})
    if isinstance(value, decimal.Decimal):
        return json.dumps({"kind": "decimal", "value": str(value)})
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SchemaMismatchError(f"a watermark must be a time, date, number or text, not "
                                  f"{type(value).__name__}")
    return json.dumps({"kind": type(value).__name__, "value": value})


def decode_watermark(text: str) -> Any:
    data = json.loads(text)
    kind, value = data["kind"], data["value"]
    if kind == "timestamp":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    return value


def lower_by(value: Any, overlap: float) -> Any:
    """``value`` moved back by the overlap (seconds for times, days for dates, units else)."""
    if not overlap:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=overlap)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=max(1, round(overlap / 86400)))
    if isinstance(value, decimal.Decimal):
        return value - decimal.Decimal(str(overlap))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value - (int(overlap) if isinstance(value, int) else overlap)
    return value  # text: only the boundary value itself is read again


class TableIngestRun(SyncRunner):
    """One run of a SQL -> lake sync."""

    def __init__(self, engine: SyncEngine, conf: SyncConfig, run_id: str,
                 cancel: threading.Event, on_progress: ProgressCallback | None) -> None:
        super().__init__(engine, conf, run_id, cancel, on_progress)
        store = engine.store_for(conf.connector)
        assert isinstance(store, TableStore)
        self.store = store
        self.source = (f"{conf.connector}:{conf.pattern}" if conf.pattern
                       else f"{conf.connector}:(query)")

    # -- the run ----------------------------------------------------------------------
    def execute(self) -> None:
        self.recover()
        conf = self.conf
        since = self._committed_watermark() if conf.watermark else None
        low = lower_by(since, conf.overlap) if since is not None else None
        reader = self.store.read(table=conf.pattern or None, query=conf.query,
                                 watermark=conf.watermark, since=low,
                                 batch_rows=min(conf.batch_rows, 65_536), cancel=self.cancel)
        if conf.watermark is not None and conf.watermark not in reader.schema.names:
            raise SchemaMismatchError(f"watermark column {conf.watermark!r} is not in "
                                      f"{self.source}")
        missing = [k for k in conf.key if k not in reader.schema.names]
        if missing:
            raise SchemaMismatchError(f"key column(s) {missing} are not in {self.source}; "
                                      f"its columns: {', '.join(reader.schema.names)}")
        if conf.mode == "snapshot" and conf.watermark is None:
            self._commit(self._counted(reader, whole=True), reader.schema, hi=None,
                         overwrite=True)
        else:
            seen = self._seen(low, since) if since is not None else None
            self._commit_windows(reader, seen, since)
        self.outcome.summarize_verification()

    def _counted(self, reader: pa.RecordBatchReader, whole: bool = False
                 ) -> Iterator[pa.RecordBatch]:
        for batch in reader:
            if self.cancel.is_set():
                if whole:  # a snapshot cut short must not replace the table
                    raise StoreError("stopped before the snapshot was read whole; it is "
                                     "taken again on the next run", retriable=True)
                return
            self.outcome.rows_read += batch.num_rows
            self.progress.rows += batch.num_rows
            self.emit()
            yield batch

    def _committed_watermark(self) -> Any:
        """The highest watermark in the table: from the last commit of this sync."""
        done = self.lake.committed_seq(self.table, self.app_id)
        if done is None:
            return None
        entry = self.lake.find_commit(self.table, self.app_id, done, depth=1000)
        if entry is not None and entry.get(WATERMARK_KEY):
            return decode_watermark(str(entry[WATERMARK_KEY]))
        found = self.state.last_committed_unit(self.conf.name)
        if found is not None and found[1].get("watermark"):
            return decode_watermark(found[1]["watermark"])
        # Commit metadata out of reach (history trimmed): the table's own maximum.
        assert self.conf.watermark is not None
        rows = self.lake.read(self.table, columns=[self.conf.watermark])
        top = pc.max(rows.column(self.conf.watermark)).as_py()
        return top

    def _identity(self, names: list[str]) -> list[str]:
        """Columns that tell a re-read row from a new one: key + watermark, else all."""
        if self.conf.key:
            return [*self.conf.key, *([self.conf.watermark] if self.conf.watermark else [])]
        return [n for n in names if not n.startswith("_silta_")]

    def _seen(self, low: Any, since: Any) -> pa.Table | None:
        """Identities already in the table with a watermark in ``[low, since]``."""
        table = self.lake.open(self.table)
        if table is None or self.conf.watermark is None:
            return None
        names = list(pa.schema(table.schema().to_arrow()).names)
        cols = [c for c in self._identity(names) if c in names]
        wm = self.conf.watermark
        dataset = table.to_pyarrow_dataset()
        import pyarrow.dataset as ds

        return dataset.to_table(columns=cols, filter=(ds.field(wm) >= pa.scalar(low)))

    def _drop_seen(self, batch: pa.RecordBatch, seen: pa.Table | None, since: Any
                   ) -> pa.Table:
        data = pa.Table.from_batches([batch])
        if seen is None or seen.num_rows == 0 or self.conf.watermark is None:
            return data
        wm = data.column(self.conf.watermark)
        old = data.filter(pc.less_equal(wm, pa.scalar(since, wm.type)))
        if old.num_rows == 0:
            return data
        new = data.filter(pc.invert(pc.less_equal(wm, pa.scalar(since, wm.type))))
        keys = [c for c in seen.column_names if c in data.column_names]
        right = seen.select(keys).cast(pa.schema([data.schema.field(k) for k in keys]))
        marked = right.append_column("__silta_seen", pa.repeat(True, right.num_rows))
        joined = old.join(marked, keys=keys, join_type="left anti")
        joined = joined.select(data.column_names)
        return pa.concat_tables([joined, new]) if new.num_rows else joined

    def _commit_windows(self, reader: pa.RecordBatchReader, seen: pa.Table | None,
                        since: Any) -> None:
        """Stream the rows into commits of about ``batch_rows``, cut where the watermark
        changes when it can be (a cut inside one value is safe too: re-read rows at the
        boundary are dropped by identity)."""
        buffer: list[pa.Table] = []
        count = 0
        wm = self.conf.watermark
        for batch in self._counted(reader):
            if wm is not None and batch.column(wm).null_count:
                # A row without a watermark value can never be told apart on a later run:
                # leave it out (and say so) rather than land it again every time.
                keep = pc.is_valid(batch.column(wm))
                self.outcome.rows_invalid += batch.num_rows - pc.sum(keep).as_py()
                batch = batch.filter(keep)
            table = self._drop_seen(batch, seen, since)
            self.outcome.rows_skipped += batch.num_rows - table.num_rows
            if table.num_rows == 0:
                continue
            buffer.append(table)
            count += table.num_rows
            if count >= self.conf.batch_rows:
                data = pa.concat_tables(buffer)
                cut = data.num_rows
                if wm is not None:
                    col = data.column(wm)
                    last = col[-1]
                    equal = pc.equal(col, last)
                    first_equal = pc.index(equal, True).as_py()
                    if first_equal > 0:
                        cut = first_equal
                self._commit_table(data.slice(0, cut))
                rest = data.slice(cut)
                buffer, count = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        if buffer and not self.cancel.is_set():
            self._commit_table(pa.concat_tables(buffer))
        if self.outcome.rows_invalid:
            log.warning("sync=%s %d row(s) have no %s value and were not landed; give them "
                        "one (or use a sync without a watermark)", self.conf.name,
                        self.outcome.rows_invalid, wm)
        if self.cancel.is_set():
            # Read but not committed: the next run reads them again from the watermark.
            self.outcome.rows_left += sum(t.num_rows for t in buffer)
            log.info("sync=%s stopping between batches (shutdown)", self.conf.name)

    def _commit_table(self, data: pa.Table) -> None:
        hi = None
        if self.conf.watermark is not None and data.num_rows:
            hi = pc.max(data.column(self.conf.watermark)).as_py()
        self._commit(data.to_batches(), data.schema, hi=hi, overwrite=False, rows=data.num_rows)

    def _commit(self, batches: Any, schema: pa.Schema, *, hi: Any, overwrite: bool,
                rows: int | None = None) -> None:
        done = self.lake.committed_seq(self.table, self.app_id)
        detail: dict[str, Any] = {"kind": "table", "source": self.source,
                                  "watermark": encode_watermark(hi) if hi is not None else None}
        seq = self.state.plan_unit(self.conf.name, self.run_id, detail,
                                   min_seq=(done or 0) + 1)
        data_schema = delta_schema(schema)
        lineage = self.conf.lineage_columns
        target_schema = (pa.schema(list(data_schema) + list(LINEAGE)) if lineage
                         else data_schema)
        ingested_at = dt.datetime.now(dt.UTC)
        metadata = {
            "silta.sync": self.conf.name, "silta.source": self.source,
            "silta.run_id": self.run_id, "silta.agent": self.engine.agent_name,
        }
        if hi is not None:
            metadata[WATERMARK_KEY] = encode_watermark(hi)
        merge_schema = self.conf.schema_policy == "merge"
        written = 0
        source_failure: list[SiltaError] = []

        def conformed() -> Iterator[pa.RecordBatch]:
            nonlocal written
            try:
                for b in batches:
                    out = b.cast(data_schema) if b.schema != data_schema else b
                    if lineage:
                        n = out.num_rows
                        out = pa.RecordBatch.from_arrays(
                            [*out.columns, pa.repeat(self.source, n),
                             pa.repeat(pa.scalar(seq, pa.int64()), n),
                             pa.repeat(pa.scalar(ingested_at, LINEAGE.field(2).type), n)],
                            schema=target_schema)
                    written += out.num_rows
                    yield out
            except SiltaError as e:
                # Raised inside the Delta writer's stream it would come back as an Arrow
                # error with a traceback in its text: keep the source's own error.
                source_failure.append(e)
                raise

        try:
            if self.conf.mode == "merge":
                table = pa.Table.from_batches(list(conformed()), schema=target_schema)
                result: CommitResult = self.lake.merge_batch(
                    self.table, table, keys=list(self.conf.key), app_id=self.app_id, seq=seq,
                    schema_merge=merge_schema, metadata=metadata)
            else:
                mode: Literal["append", "overwrite"] = "overwrite" if overwrite else "append"
                result = self.lake.commit_batch(
                    self.table, pa.RecordBatchReader.from_batches(target_schema, conformed()),
                    app_id=self.app_id, seq=seq, mode=mode, schema_merge=merge_schema,
                    metadata=metadata)
        except SiltaError as e:
            failure = source_failure[0] if source_failure else e
            self.state.update_unit(self.conf.name, seq, status="failed", detail=detail,
                                   error=str(failure))
            if failure is e:
                raise
            raise failure from e
        rows_added = rows if rows is not None else written
        if result.already:
            entry = self.lake.find_commit(self.table, self.app_id, seq)
            rows_added = history_summary(entry)["rows_added"] if entry else rows_added
        self.outcome.rows_checked += written
        if rows is not None and written != rows:
            self.outcome.mismatches.append(f"batch {seq}: {rows} rows read, {written} written")
        self.state.update_unit(self.conf.name, seq, status="committed", detail=detail,
                               rows=rows_added, version=result.version)
        self.outcome.batches += 1
        self.outcome.rows += rows_added or 0
        self.outcome.table_version = result.version
        self.progress.batches += 1
        self.emit(force=True)
        log.info("sync=%s batch=%d committed: rows=%s table=%s version=%d watermark=%s",
                 self.conf.name, seq, rows_added, self.table, result.version, hi)

    # -- recovery ---------------------------------------------------------------------
    def recover(self) -> None:
        """Units a crash left pending: the table's app transaction decides."""
        for seq, _status, detail in self.state.open_units(self.conf.name):
            done = self.lake.committed_seq(self.table, self.app_id)
            if done is not None and done >= seq:
                entry = self.lake.find_commit(self.table, self.app_id, seq)
                summary = history_summary(entry) if entry else {}
                self.state.update_unit(self.conf.name, seq, status="committed", detail=detail,
                                       rows=summary.get("rows_added"),
                                       version=summary.get("version"))
            else:
                self.state.update_unit(self.conf.name, seq, status="abandoned", detail=detail,
                                       error="the agent stopped before the commit")


__all__ = ["TableIngestRun", "decode_watermark", "encode_watermark", "lower_by"]


