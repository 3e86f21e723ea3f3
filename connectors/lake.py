"""The Delta lake: tables under one root URI, written exactly once per batch.

Every batch commit carries ``Transaction(app_id, seq)``. Before writing, the table's
last committed ``seq`` for the app id is read on the same snapshot that is written
with, so a batch that already landed is never written again (deltalake does not refuse
a repeated version by itself). A write that raised may still have committed, so after
an error the app id is looked up again before the error is believed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake import exceptions as dlx

from connectors.errors import (
    NotFoundError,
    SchemaMismatchError,
    SiltaError,
    StoreError,
    UsageError,
)
from connectors.names import check_relative_path

# delta-rs buffers a whole row group before encoding it; its default (1M rows) costs
# 100-130 MiB more than this on wide rows, for no gain in speed.
WRITER = WriterProperties(max_row_group_size=262_144)
INTERNAL_PREFIX = "_silta"
TAGS_TABLE = f"{INTERNAL_PREFIX}/tags"
COMMIT_RETRIES = 20


@dataclass(frozen=True)
class CommitResult:
    """Where a batch landed; ``already`` is True when an earlier attempt had committed it."""

    version: int
    already: bool
    rows: int | None = None


def _translate(e: Exception, table: str) -> SiltaError:
    if isinstance(e, SiltaError):
        return e
    if isinstance(e, dlx.SchemaMismatchError):
        return SchemaMismatchError(f"table {table!r}: {e}")
    if isinstance(e, dlx.CommitFailedError):
        return StoreError(f"table {table!r}: commit conflict: {e}", retriable=True)
    if isinstance(e, dlx.TableNotFoundError):
        return NotFoundError("table", table, "list tables with `silta tables list`")
    if isinstance(e, OSError | dlx.DeltaError):
        return StoreError(f"table {table!r}: {e}", retriable=True)
    return StoreError(f"table {table!r}: {type(e).__name__}: {e}")


class DeltaLake:
    """Delta tables below ``uri`` (a local folder now; object stores by URI scheme)."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.is_local = "://" not in uri or uri.startswith("file://")

    def __repr__(self) -> str:
        return f"DeltaLake({self.uri!r})"

    # -- addressing -------------------------------------------------------------------
    def table_uri(self, name: str) -> str:
        check_relative_path(name, what="table name")
        return f"{self.uri}/{name}"

    def open(self, name: str, version: int | None = None) -> DeltaTable | None:
        """The table at its latest (or given) version, or None when it does not exist."""
        uri = self.table_uri(name)
        try:
            if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
                return None
            return DeltaTable(uri, version=version, storage_options=self.storage_options)
        except Exception as e:
            if version is not None and isinstance(e, dlx.DeltaError | OSError):
                raise NotFoundError("version", f"{name}@{version}",
                                    "see `silta tables history` for the versions") from e
            raise _translate(e, name) from e

    def require(self, name: str, version: int | None = None) -> DeltaTable:
        table = self.open(name, version)
        if table is None:
            raise NotFoundError("table", name, "list tables with `silta tables list`")
        return table

    def list_tables(self, include_internal: bool = False) -> list[str]:
        """Names of the Delta tables below the root, sorted."""
        if not self.is_local:
            raise UsageError(f"listing tables is not supported yet for {self.uri!r}")
        root = Path(self.uri.removeprefix("file://"))
        found: list[str] = []
        if not root.is_dir():
            return found
        for dirpath, dirnames, _ in os.walk(root):
            if "_delta_log" in dirnames:
                rel = Path(dirpath).relative_to(root).as_posix()
                if include_internal or not rel.startswith(INTERNAL_PREFIX):
                    found.append(rel)
                dirnames.clear()
                continue
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        return sorted(found)

    # -- writing ----------------------------------------------------------------------
    def committed_seq(self, name: str, app_id: str) -> int | None:
        table = self.open(name)
        return None if table is None else table.transaction_version(app_id)

    def find_commit(self, name: str, app_id: str, seq: int, depth: int = 200
                    ) -> dict[str, Any] | None:
        """The history entry of the commit that carried ``(app_id, seq)``, if recent."""
        table = self.open(name)
        if table is None:
            return None
        for entry in table.history(limit=depth):
            if entry.get("silta.app_id") == app_id and str(entry.get("silta.seq")) == str(seq):
                return entry
        return None

    def commit_batch(self, name: str, data: pa.RecordBatchReader, *, app_id: str, seq: int,
                     mode: Literal["append", "overwrite"], schema_merge: bool,
                     metadata: Mapping[str, str]) -> CommitResult:
        """Append (or overwrite with) ``data`` as one commit, exactly once per ``seq``."""
        props = self._props(app_id, seq, metadata)
        table = self.open(name)
        if table is not None:
            done = table.transaction_version(app_id)
            if done is not None and done >= seq:
                return CommitResult(self._version_of(name, app_id, seq, table), already=True)
        try:
            write_deltalake(table if table is not None else self.table_uri(name), data,
                            mode=mode, schema_mode="merge" if schema_merge else None,
                            storage_options=None if table is not None else self.storage_options,
                            writer_properties=WRITER, commit_properties=props)
        except Exception as e:
            return self._after_error(e, name, app_id, seq)
        if table is not None:  # the write moved this object to the version it committed
            return CommitResult(table.version(), already=False)
        return self._landed(name, app_id, seq)

    def merge_batch(self, name: str, data: pa.Table, *, keys: list[str], app_id: str,
                    seq: int, schema_merge: bool, metadata: Mapping[str, str]) -> CommitResult:
        """Upsert ``data`` on ``keys`` as one commit, exactly once per ``seq``.

        Rows of ``data`` that repeat a key keep the last one (source order).
        """
        data = dedupe_last(data, keys)
        table = self.open(name)
        if table is None:
            return self.commit_batch(name, data.to_reader(), app_id=app_id, seq=seq,
                                     mode="append", schema_merge=schema_merge, metadata=metadata)
        done = table.transaction_version(app_id)
        if done is not None and done >= seq:
            return CommitResult(self._version_of(name, app_id, seq, table), already=True)
        predicate = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
        try:
            (table.merge(data, predicate, source_alias="s", target_alias="t",
                         merge_schema=schema_merge, streamed_exec=False,
                         writer_properties=WRITER,
                         commit_properties=self._props(app_id, seq, metadata))
             .when_matched_update_all()
             .when_not_matched_insert_all()
             .execute())
        except Exception as e:
            return self._after_error(e, name, app_id, seq)
        # The merge moved ``table`` to the version it committed: no history lookup needed.
        return CommitResult(table.version(), already=False, rows=data.num_rows)

    def _props(self, app_id: str, seq: int, metadata: Mapping[str, str]) -> CommitProperties:
        meta = {"silta.app_id": app_id, "silta.seq": str(seq), **metadata}
        return CommitProperties(custom_metadata=meta, max_commit_retries=COMMIT_RETRIES,
                                app_transactions=[Transaction(app_id, seq)])

    def _landed(self, name: str, app_id: str, seq: int) -> CommitResult:
        table = self.require(name)
        return CommitResult(self._version_of(name, app_id, seq, table), already=False)

    def _version_of(self, name: str, app_id: str, seq: int, table: DeltaTable) -> int:
        entry = self.find_commit(name, app_id, seq)
        return int(entry["version"]) if entry else table.version()

    def _after_error(self, e: Exception, name: str, app_id: str, seq: int) -> CommitResult:
        # delta-rs can raise after the commit landed (issues 2279, 2609): believe the log.
        try:
            done = self.committed_seq(name, app_id)
        except SiltaError:
            done = None
        if done is not None and done >= seq:
            return self._landed(name, app_id, seq)
        cause = e.__cause__ if isinstance(e, pa.ArrowException) and e.__cause__ else e
        raise _translate(cause, name) from e

    # -- reading ----------------------------------------------------------------------
    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        try:
            return self.require(name).history(limit=limit)
        except SiltaError:
            raise
        except Exception as e:
            raise _translate(e, name) from e

    def schema(self, name: str, version: int | None = None) -> pa.Schema | None:
        table = self.open(name, version)
        if table is None:
            return None
        return pa.schema(table.schema().to_arrow())

    def read(self, name: str, version: int | None = None, limit: int | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Rows of the table at ``version`` (time travel), at most ``limit``."""
        table = self.require(name, version)
        try:
            # to_pyarrow_dataset, not to_pyarrow_table: the latter aborts the process at exit
            # with deltalake 1.6.6 + pyarrow 26 ("terminate called without an active exception").
            dataset = table.to_pyarrow_dataset()
            if limit is not None:
                return dataset.head(limit, columns=columns)
            return dataset.to_table(columns=columns)
        except FileNotFoundError as e:
            raise NotFoundError("version", f"{name}@{version}",
                                "its files were removed by vacuum") from e
        except Exception as e:
            raise _translate(e, name) from e

    def count_rows(self, name: str, version: int | None = None) -> int:
        table = self.require(name, version)
        return int(table.to_pyarrow_dataset().count_rows())

    # -- tags (named snapshots), kept in a Delta table any engine can read ---------------
    def add_tag(self, table: str, tag: str, version: int, *, by: str, note: str = "") -> None:
        check_relative_path(tag, what="tag name")
        if "/" in tag:
            raise UsageError(f"tag name {tag!r} must not contain '/'")
        current = self.require(table)
        if version < 0 or version > current.version():
            raise NotFoundError("version", f"{table}@{version}",
                                f"the table's versions are 0..{current.version()}")
        if any(t["tag"] == tag for t in self.list_tags(table)):
            raise UsageError(f"table {table!r} already has a tag {tag!r}; choose another name")
        row = pa.table({
            "table": [table], "tag": [tag], "version": pa.array([version], pa.int64()),
            "created_at": pa.array([dt.datetime.now(dt.UTC)], pa.timestamp("us", tz="UTC")),
            "created_by": [by], "note": [note],
        })
        try:
            write_deltalake(self.table_uri(TAGS_TABLE), row, mode="append",
                            storage_options=self.storage_options,
                            commit_properties=CommitProperties(max_commit_retries=COMMIT_RETRIES))
        except Exception as e:
            raise _translate(e, TAGS_TABLE) from e

    def list_tags(self, table: str | None = None) -> list[dict[str, Any]]:
        if self.open(TAGS_TABLE) is None:
            return []
        rows = self.read(TAGS_TABLE)
        if table is not None:
            rows = rows.filter(pc.equal(rows["table"], table))
        return sorted(rows.to_pylist(), key=lambda r: (r["table"], r["version"], r["tag"]))


def dedupe_last(data: pa.Table, keys: list[str]) -> pa.Table:
    """Keep the last row for each key (a later row in a batch is the newer fact)."""
    missing = [k for k in keys if k not in data.column_names]
    if missing:
        raise SchemaMismatchError(f"merge key column(s) {missing} are not in the data")
    if data.num_rows == 0:
        return data
    indexed = data.append_column("__silta_row", pa.array(range(data.num_rows), pa.int64()))
    last = indexed.group_by(keys, use_threads=False).aggregate([("__silta_row", "max")])
    keep = pc.sort_indices(last["__silta_row_max"])
    rows = pc.take(last["__silta_row_max"], keep)
    return data.take(rows)


def history_summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The operator-facing fields of one history entry (stable keys for --json)."""
    metrics = entry.get("operationMetrics") or {}
    ts = entry.get("timestamp")
    when = (dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat(timespec="seconds")
            if isinstance(ts, int | float) else None)
    rows = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted",
                                                     metrics.get("num_inserted_rows")))
    source = entry.get("silta.source")
    return {
        "version": entry.get("version"),
        "timestamp": when,
        "operation": entry.get("operation"),
        "rows_added": rows,
        "rows_updated": metrics.get("num_target_rows_updated"),
        "source": source,
        "sync": entry.get("silta.sync"),
        "batch": int(entry["silta.seq"]) if entry.get("silta.seq") is not None else None,
        "run_id": entry.get("silta.run_id"),
        "files": json.loads(entry["silta.files"]) if entry.get("silta.files") else None,
    }
