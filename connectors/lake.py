"""The Delta lake: tables under one root URI, written exactly once per batch.

Every batch commit carries ``Transaction(app_id, seq)``. Before writing, the table's
last committed ``seq`` for the app id is read on the same snapshot that is written
with, so a batch that already landed is never written again (deltalake does not refuse
a repeated version by itself). A write that raised may still have committed, so after
an error the app id is looked up again before the error is believed. Each attempt also
writes a commit id of its own into the commit's metadata: when the app id shows the
batch as committed after an error, the id tells this attempt's commit from another
writer's with the same ``(app_id, seq)`` (``already=True`` then).

Several writers (agents, processes) may append to one table at once: delta-rs retries a
commit that lost the race for a version (``COMMIT_RETRIES`` times); one that still
conflicts becomes a retriable ``CommitConflictError``, raised only after the app
transaction was looked up again. Data that can be replayed (a ``pa.Table``) is written
again here a few times first; a stream is the caller's to replay.

Object stores (``az://``, ``abfs://``, ``abfss://``, ``s3://``, ``gs://``) take deltalake's
``storage_options``. Their failures are told apart by what the store answered: a missing
container or bucket is a ``StoreError`` that names the command to create it, refused
credentials an ``AuthError``, an endpoint that cannot be reached (refused, timed out,
5xx) a retriable ``StoreError``. Messages name the lake URI, never a secret's value.

A damaged log is refused, never written on top of: opening a table's latest version
checks its newest commit (delta-rs reads an empty one, or one cut at a line break, without
a word), and when delta-rs refuses a table the damaged commit or checkpoint is named
(connectors/lake_integrity.py). Both are a ``CorruptTableError``, not retriable.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import random
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
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
from deltalake.fs import DeltaStorageHandler
from pyarrow.fs import FileSelector, FileType

from connectors.errors import (
    AuthError,
    CommitConflictError,
    CommitUnknownError,
    CorruptTableError,
    NotFoundError,
    SchemaMismatchError,
    SiltaError,
    StoreError,
    UsageError,
)
from connectors.lake_integrity import (
    LOG,
    LogAccess,
    commit_name,
    diagnose,
    latest_commit_problem,
)
from connectors.names import check_relative_path

# delta-rs buffers a whole row group before encoding it; its default (1M rows) costs
# 100-130 MiB more than this on wide rows, for no gain in speed.
WRITER = WriterProperties(max_row_group_size=262_144)
INTERNAL_PREFIX = "_silta"
TAGS_TABLE = f"{INTERNAL_PREFIX}/tags"
COMMIT_RETRIES = 20
#: writes of a replayable batch (a pa.Table) when its commit conflicts even so
REPLAYS = 4
COMMIT_ID_KEY = "silta.commit_id"
_HEAD_BYTES = 64 * 1024  # enough for the commitInfo line of a commit
#: properties of the tables Silta creates: the change data feed lets a publish send exactly
#: the rows a commit changed (connectors/lake_changes.py)
NEW_TABLE_CONFIGURATION: dict[str, str | None] = {"delta.enableChangeDataFeed": "true"}

# Option names whose values are secrets: never shown in a message.
_SECRET_WORDS = ("key", "secret", "token", "password", "sas", "signature", "credential",
                 "connection_string")
# What object stores answer, lower-cased; checked in this order.
_MISSING_ROOT = ("containernotfound", "nosuchbucket", "the specified bucket does not exist")
_REFUSED = ("authenticationfailed", "authorizationfailure", "authorizationpermissionmismatch",
            "invalidauthenticationinfo", "signaturedoesnotmatch", "invalidaccesskeyid",
            "accessdenied", "expiredtoken", "invalidtoken", "lacked the necessary privileges",
            "403 forbidden", "401 unauthorized", "unauthenticated", "invalid access key")
_UNREACHABLE = ("connection refused", "tcp connect error", "error sending request",
                "error trying to connect", "dns error", "failed to lookup address",
                "timed out", "deadline has elapsed", "connection reset",
                "connection closed before message completed", "broken pipe",
                "500 internal server error", "502 bad gateway", "503 service unavailable",
                "504 gateway", "serverbusy", "slowdown", "internalerror")
_CREATE_ROOT = {
    "az": ("container", "`az storage container create --name {name} --account-name {account}`"),
    "s3": ("bucket", "`aws s3 mb s3://{name}`"),
    "gs": ("bucket", "`gcloud storage buckets create gs://{name}`"),
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: a local lake's disk full, as the OS (ENOSPC) and delta-rs ("os error 28") say it
_DISK_FULL = re.compile(r"no space left on device|os error 28\b", re.IGNORECASE)
#: where a Rust backtrace starts in delta-rs's messages (RUST_BACKTRACE=1): not for operators
_BACKTRACE = re.compile(r"\n\s+0: ")
_STATUS = re.compile(r"\b([45]\d\d) ([A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*)")
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_HOST = re.compile(r"\bhttps?://[^/\s?#]+")


class _Unconditional(enum.Enum):
    TOKEN = 0


#: ``commit_batch(follows=...)``'s default: no condition on the app id's last seq
UNCONDITIONAL = _Unconditional.TOKEN


@dataclass(frozen=True)
class CommitResult:
    """Where a batch landed; ``already`` is True when an earlier attempt had committed it."""

    version: int
    already: bool
    rows: int | None = None


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


class DeltaLake:
    """Delta tables below ``uri``: a local folder, or an object store by URI scheme."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.is_local = "://" not in uri or uri.startswith("file://")
        #: table -> (version, size) of its newest commit, last found sound
        self._sound: dict[str, tuple[int, int]] = {}
        self._secrets = sorted(
            {v for k, v in self.storage_options.items()
             if len(v) >= 4 and any(w in k.lower() for w in _SECRET_WORDS)},
            key=len, reverse=True)

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
                if not self.is_local:
                    self._probe(name)
                return None
            table = DeltaTable(uri, version=version, storage_options=self.storage_options)
        except Exception as e:
            if isinstance(e, dlx.DeltaError) and self._store_error(e, name) is None:
                self._refuse_if_damaged(name, e)
            if (version is not None and isinstance(e, dlx.DeltaError | OSError)
                    and self._store_error(e, name) is None):
                raise NotFoundError("version", f"{name}@{version}",
                                    "see `silta tables history` for the versions") from e
            raise self._translate(e, name) from e
        if version is None:
            self._check_latest(name, table.version())
        return table

    # -- a damaged log is refused, never written on top of (connectors/lake_integrity.py) --
    def _log_access(self, name: str) -> tuple[LogAccess, Callable[[str], int]]:
        """Reading ``name``'s ``_delta_log`` files, and a file's size (one stat or HEAD)."""
        if self.is_local:
            folder = Path(self.table_uri(name).removeprefix("file://"))
            local = LogAccess(lambda rel: (folder / rel).read_bytes(),
                              lambda: os.listdir(folder / LOG))
            return local, lambda rel: (folder / rel).stat().st_size
        handler = DeltaStorageHandler(self.table_uri(name), self.storage_options)

        def read(rel: str) -> bytes:
            f = handler.open_input_file(rel)
            data: bytes = f.read(f.size())
            return data

        def names() -> list[str]:
            infos = handler.get_file_info_selector(FileSelector(LOG, allow_not_found=True))
            return [i.base_name for i in infos if i.type == FileType.File]

        def size(rel: str) -> int:
            info = handler.get_file_info([rel])[0]
            if info.type == FileType.NotFound:
                raise FileNotFoundError(rel)
            return int(info.size)

        return LogAccess(read, names), size

    def _check_latest(self, name: str, version: int) -> None:
        """Raise CorruptTableError when the newest commit is damaged in a way delta-rs
        reads without a word (empty, cut at a line break). A commit already found sound
        is not read again while its size stays the same."""
        rel = commit_name(version)
        try:
            access, size_of = self._log_access(name)
            size = size_of(rel)
            if self._sound.get(name) == (version, size):
                return
            problem = latest_commit_problem(access.read(rel), version)
        except FileNotFoundError:
            return  # a version known from a checkpoint only: its commit was cleaned up
        except Exception as e:
            raise self._translate(e, name) from e
        if problem is not None:
            self._sound.pop(name, None)
            raise CorruptTableError(self._redact(f"table {name!r} is damaged: {problem}"))
        self._sound[name] = (version, size)

    def _refuse_if_damaged(self, name: str, e: Exception) -> None:
        """After delta-rs refused to open ``name``: a CorruptTableError naming the damaged
        file, when a file of the log is damaged (else return, and ``e`` is reported)."""
        try:
            access, _ = self._log_access(name)
            problem = diagnose(access)
        except Exception:  # the store itself failing: ``e`` says so
            return
        if problem is not None:
            self._sound.pop(name, None)
            raise CorruptTableError(
                self._redact(f"table {name!r} is damaged: {problem}")) from e

    def _probe(self, name: str) -> None:
        """Raise when the store refuses us; return when the table is simply not there.

        ``is_deltatable`` answers False for a missing table, and some deltalake versions
        also for refused credentials: one listing of the table's prefix tells them apart.
        """
        try:
            DeltaStorageHandler(self.uri, self.storage_options).get_file_info([name])
        except Exception as e:
            raise self._translate(e, name) from e

    def require(self, name: str, version: int | None = None) -> DeltaTable:
        table = self.open(name, version)
        if table is None:
            raise NotFoundError("table", name, "list tables with `silta tables list`")
        return table

    def list_tables(self, include_internal: bool = False) -> list[str]:
        """Names of the Delta tables below the root, sorted."""
        if not self.is_local:
            return self._list_remote(include_internal)
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

    def _list_remote(self, include_internal: bool) -> list[str]:
        """Folders below the root that hold ``_delta_log/``, one listing per folder.

        Listings use the delimiter, so a table's own files are listed once and its
        ``_delta_log`` and partition folders are never entered.
        """
        found: list[str] = []
        try:
            fs = DeltaStorageHandler(self.uri, self.storage_options)
            pending = [""]
            while pending:
                base = pending.pop()
                infos = fs.get_file_info_selector(
                    FileSelector(base, allow_not_found=True, recursive=False))
                folders = [i for i in infos if i.type == FileType.Directory]
                if any(i.base_name == "_delta_log" for i in folders):
                    if base:  # a table at the root itself has no name to address it by
                        found.append(base)
                    continue
                for i in folders:
                    if i.base_name.startswith("."):
                        continue
                    if not include_internal and i.path.startswith(INTERNAL_PREFIX):
                        continue
                    pending.append(i.path)
        except Exception as e:
            raise self._translate(e, None) from e
        return sorted(found)

    # -- writing ----------------------------------------------------------------------
    def committed_seq(self, name: str, app_id: str) -> int | None:
        table = self.open(name)
        return None if table is None else table.transaction_version(app_id)

    def find_commit(self, name: str, app_id: str, seq: int, depth: int = 200,
                    table: DeltaTable | None = None) -> dict[str, Any] | None:
        """The history entry of the commit that carried ``(app_id, seq)``, if recent.

        ``table``: a snapshot already open, searched from its version down.
        """
        table = table if table is not None else self.open(name)
        if table is None:
            return None
        try:
            for entry in self._commit_infos(name, table.version(), depth):
                if (entry.get("silta.app_id") == app_id
                        and str(entry.get("silta.seq")) == str(seq)):
                    return entry
        except Exception as e:
            raise self._translate(e, name) from e
        return None

    def _commit_infos(self, name: str, latest: int, depth: int | None
                      ) -> list[dict[str, Any]]:
        """The commitInfo of versions ``latest``, ``latest - 1``, ... with their true numbers.

        Not ``DeltaTable.history()``: it numbers commits down from the snapshot's version
        but lists the log as it is when called, so a commit by another writer in between
        shifts every number by one (seen with four writers: -1, and two batches both at
        "version 0"). A commit file's name is its version.
        """
        if self.is_local:
            folder = Path(self.table_uri(name).removeprefix("file://"))

            def read(rel: str, size: int) -> bytes:
                with open(folder / rel, "rb") as f:
                    return f.read(size)
        else:
            handler = DeltaStorageHandler(self.table_uri(name), self.storage_options)

            def read(rel: str, size: int) -> bytes:
                f = handler.open_input_file(rel)
                data: bytes = f.read(f.size() if size < 0 else min(size, f.size()))
                return data

        out: list[dict[str, Any]] = []
        version = latest
        while version >= 0 and (depth is None or len(out) < depth):
            rel = f"_delta_log/{version:020d}.json"
            try:
                # commitInfo is the first line of delta-rs's commits: a commit that adds
                # thousands of files need not be fetched whole for it.
                info = _commit_info(read(rel, _HEAD_BYTES), whole=False)
                if info is None:
                    info = _commit_info(read(rel, -1), whole=True) or {}
            except FileNotFoundError:
                break  # removed behind a checkpoint: the older history is gone
            out.append({**info, "version": version})
            version -= 1
        return out

    def commit_batch(self, name: str, data: pa.RecordBatchReader | pa.Table, *, app_id: str,
                     seq: int, mode: Literal["append", "overwrite"], schema_merge: bool,
                     metadata: Mapping[str, str],
                     follows: int | _Unconditional | None = UNCONDITIONAL) -> CommitResult:
        """Append (or overwrite with) ``data`` as one commit, exactly once per ``seq``.

        A ``pa.Table`` is written again when its commit conflicts (up to ``REPLAYS``
        times); a ``RecordBatchReader`` is read once, so a conflict raises
        ``CommitConflictError`` for the caller to retry with a fresh stream.

        ``follows`` (an int, or None for "no commit of ``app_id`` yet") makes the commit
        conditional: it is written only on a snapshot whose last seq of ``app_id`` is that
        one, else a retriable StoreError says another writer came between. With delta-rs
        refusing concurrent commits of one app id, this is a compare-and-swap: units whose
        seq is not consecutive (a Delta version range, say) cannot overlap.
        """
        for attempt in range(REPLAYS):
            try:
                return self._commit_once(name, data, app_id=app_id, seq=seq, mode=mode,
                                         schema_merge=schema_merge, metadata=metadata,
                                         follows=follows)
            except CommitConflictError:
                if not isinstance(data, pa.Table) or attempt + 1 == REPLAYS:
                    raise
                _pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _commit_once(self, name: str, data: pa.RecordBatchReader | pa.Table, *, app_id: str,
                     seq: int, mode: Literal["append", "overwrite"], schema_merge: bool,
                     metadata: Mapping[str, str],
                     follows: int | _Unconditional | None = UNCONDITIONAL) -> CommitResult:
        commit_id = uuid.uuid4().hex
        table = self.open(name)
        try:
            if table is None:
                if follows is not UNCONDITIONAL and follows is not None:
                    raise StoreError(f"table {name!r} is gone, though {app_id} had committed "
                                     f"up to {follows}; it is not written again blindly",
                                     retriable=False)
                # Create the table with this batch as version 0, or fail. A write by URI
                # to a table that appeared meanwhile would append on a snapshot nobody
                # checked the app id on (a second copy of the batch), and a creation that
                # lost the race for version 0 and retried would land unchecked as well:
                # mode "error" and no retries make both fail; the retry then goes
                # through the snapshot path below.
                write_deltalake(self.table_uri(name), data, mode="error",
                                storage_options=self.storage_options,
                                configuration=NEW_TABLE_CONFIGURATION,
                                writer_properties=WRITER,
                                commit_properties=self._props(app_id, seq, metadata, commit_id,
                                                              retries=0))
                landed = self._landed(name, app_id, seq)
                return CommitResult(landed.version, already=False,
                                    rows=self._rows_added(name, landed.version))
            done = table.transaction_version(app_id)
            if done is not None and done >= seq:
                return CommitResult(self._version_of(name, app_id, seq, table), already=True)
            if follows is not UNCONDITIONAL and done != follows:
                raise StoreError(f"table {name!r}: {app_id} committed up to {done} while this "
                                 f"unit was planned after {follows}; it is planned again",
                                 retriable=True)
            write_deltalake(table, data, mode=mode,
                            schema_mode="merge" if schema_merge else None,
                            writer_properties=WRITER,
                            commit_properties=self._props(app_id, seq, metadata, commit_id))
        except SiltaError:
            raise
        except Exception as e:
            return self._after_error(e, name, app_id, seq, commit_id, creating=table is None)
        # The write moved ``table`` to the version it committed: no history lookup needed.
        version = table.version()
        return CommitResult(version, already=False, rows=self._rows_added(name, version))

    def _rows_added(self, name: str, version: int) -> int | None:
        """The rows a commit reports it added (its own metrics), for the caller's check."""
        try:
            infos = self._commit_infos(name, version, 1)
        except Exception:  # the check is a courtesy; the commit itself stands
            return None
        rows = history_summary(infos[0])["rows_added"] if infos else None
        return int(rows) if isinstance(rows, int | float) else None

    def merge_batch(self, name: str, data: pa.Table, *, keys: list[str], app_id: str,
                    seq: int, schema_merge: bool, metadata: Mapping[str, str]) -> CommitResult:
        """Upsert ``data`` on ``keys`` as one commit, exactly once per ``seq``.

        Rows of ``data`` that repeat a key keep the last one (source order). A merge that
        conflicts with another writer is done again on the new snapshot (``REPLAYS``).
        """
        data = dedupe_last(data, keys)
        for attempt in range(REPLAYS):
            try:
                return self._merge_once(name, data, keys=keys, app_id=app_id, seq=seq,
                                        schema_merge=schema_merge, metadata=metadata)
            except CommitConflictError:
                if attempt + 1 == REPLAYS:
                    raise
                _pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _merge_once(self, name: str, data: pa.Table, *, keys: list[str], app_id: str,
                    seq: int, schema_merge: bool, metadata: Mapping[str, str]) -> CommitResult:
        table = self.open(name)
        if table is None:
            # Replays are this loop's business: one attempt at creating the table.
            return self._commit_once(name, data, app_id=app_id, seq=seq, mode="append",
                                     schema_merge=schema_merge, metadata=metadata)
        done = table.transaction_version(app_id)
        if done is not None and done >= seq:
            return CommitResult(self._version_of(name, app_id, seq, table), already=True)
        commit_id = uuid.uuid4().hex
        predicate = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
        try:
            (table.merge(data, predicate, source_alias="s", target_alias="t",
                         merge_schema=schema_merge, streamed_exec=False,
                         writer_properties=WRITER,
                         commit_properties=self._props(app_id, seq, metadata, commit_id))
             .when_matched_update_all()
             .when_not_matched_insert_all()
             .execute())
        except Exception as e:
            return self._after_error(e, name, app_id, seq, commit_id)
        # The merge moved ``table`` to the version it committed: no history lookup needed.
        return CommitResult(table.version(), already=False, rows=data.num_rows)

    def _props(self, app_id: str, seq: int, metadata: Mapping[str, str], commit_id: str,
               retries: int = COMMIT_RETRIES) -> CommitProperties:
        meta = {"silta.app_id": app_id, "silta.seq": str(seq), **metadata,
                COMMIT_ID_KEY: commit_id}
        return CommitProperties(custom_metadata=meta, max_commit_retries=retries,
                                app_transactions=[Transaction(app_id, seq)])

    def _landed(self, name: str, app_id: str, seq: int) -> CommitResult:
        table = self.require(name)
        return CommitResult(self._version_of(name, app_id, seq, table), already=False)

    def _version_of(self, name: str, app_id: str, seq: int, table: DeltaTable) -> int:
        entry = self.find_commit(name, app_id, seq, table=table)
        return int(entry["version"]) if entry else table.version()

    def _after_error(self, e: Exception, name: str, app_id: str, seq: int, commit_id: str,
                     *, creating: bool = False) -> CommitResult:
        # delta-rs can raise after the commit landed (issues 2279, 2609), and another
        # writer may have committed the same (app_id, seq) meanwhile: believe the log.
        entry: dict[str, Any] | None = None
        unknown = False
        try:
            done = self.committed_seq(name, app_id)
            if done is not None and done >= seq:
                entry = self.find_commit(name, app_id, seq)
        except SiltaError:
            done, unknown = None, True  # the lake did not answer: it may have landed
        if done is not None and done >= seq:
            if entry is None:  # beyond the history searched: cannot tell whose it was
                return self._landed(name, app_id, seq)
            return CommitResult(int(entry["version"]),
                                already=entry.get(COMMIT_ID_KEY) != commit_id)
        cause = e.__cause__ if isinstance(e, pa.ArrowException) and e.__cause__ else e
        if (creating and isinstance(cause, dlx.DeltaError)
                and "table already exists" in str(cause).lower()):
            # mode "error": another writer created the table after our open().
            raise CommitConflictError(
                f"table {name!r} was created by another writer at the same time; the batch "
                "is written again") from e
        error = self._translate(cause, name)
        if unknown and error.retriable:
            # Not "failed": a caller that freed the unit would write it a second time.
            raise CommitUnknownError(error.msg, retriable=True) from e
        raise error from e

    # -- reading ----------------------------------------------------------------------
    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit infos, newest first, each with its ``version`` (see ``_commit_infos``)."""
        table = self.require(name)
        try:
            return self._commit_infos(name, table.version(), limit)
        except Exception as e:
            raise self._translate(e, name) from e

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
            raise self._translate(e, name) from e

    def count_rows(self, name: str, version: int | None = None) -> int:
        table = self.require(name, version)
        try:
            return int(table.to_pyarrow_dataset().count_rows())
        except Exception as e:
            raise self._translate(e, name) from e

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
            raise self._translate(e, TAGS_TABLE) from e

    def list_tags(self, table: str | None = None) -> list[dict[str, Any]]:
        if self.open(TAGS_TABLE) is None:
            return []
        rows = self.read(TAGS_TABLE)
        if table is not None:
            rows = rows.filter(pc.equal(rows["table"], table))
        return sorted(rows.to_pylist(), key=lambda r: (r["table"], r["version"], r["tag"]))


    # -- errors -----------------------------------------------------------------------
    def _translate(self, e: Exception, table: str | None) -> SiltaError:
        """Silta's error for ``e``, retriable or not; the message names no secret."""
        if isinstance(e, SiltaError):
            return e
        where = f"table {table!r}" if table is not None else f"lake {self.uri!r}"
        if isinstance(e, dlx.SchemaMismatchError):
            return SchemaMismatchError(self._redact(f"{where}: {e}"))
        # Before the conflict: delta-rs reports a store failure during the commit step
        # as CommitFailedError too.
        store = self._store_error(e, table)
        if store is not None:
            return store
        if _DISK_FULL.search(str(e)):
            # delta-rs words ENOSPC as "Failed to parse parquet: External: ... (os error 28)"
            return StoreError(f"{where}: the lake's disk is full (no space left on device); "
                              "free space on it and the work is retried", retriable=True)
        if isinstance(e, dlx.CommitFailedError):
            return CommitConflictError(self._redact(
                f"{where}: another writer committed first and the commit still conflicted "
                f"after {COMMIT_RETRIES} retries ({e}); the batch is written again"))
        if isinstance(e, dlx.TableNotFoundError) and table is not None:
            return NotFoundError("table", table, "list tables with `silta tables list`")
        text = _BACKTRACE.split(str(e), maxsplit=1)[0].rstrip()
        if isinstance(e, OSError | dlx.DeltaError):
            return StoreError(self._redact(f"{where}: {text}"), retriable=True)
        return StoreError(self._redact(f"{where}: {type(e).__name__}: {text}"))

    def _store_error(self, e: BaseException, table: str | None) -> SiltaError | None:
        """The object store's own failure behind ``e`` (by what it answered), or None."""
        if self.is_local:
            return None
        text = _ANSI.sub("", " ".join(str(x) for x in _chain(e)))
        low = text.lower()
        where = (f"table {table!r} in lake {self.uri!r}" if table is not None
                 else f"lake {self.uri!r}")
        detail = self._redact(_detail(text))
        if any(p in low for p in _MISSING_ROOT):
            kind, command = _CREATE_ROOT.get(_root_kind(self.uri), _CREATE_ROOT["s3"])
            name = _root_name(self.uri)
            command = command.format(name=name, account=self._account() or "ACCOUNT")
            return StoreError(
                f"{where}: the {kind} {name!r} does not exist ({detail}); create it first, "
                f"e.g. {command}", retriable=False)
        if any(p in low for p in _REFUSED):
            return AuthError(
                f"{where}: the object store refused the credentials ({detail}); check the "
                "account key, access key or token in [lake].storage_options", retriable=False)
        if any(p in low for p in _UNREACHABLE):
            host = _HOST.search(text)
            at = f" at {host.group(0)}" if host else ""
            return StoreError(f"{where}: cannot reach the object store{at} ({detail}); "
                              "it is tried again later", retriable=True)
        return None

    def _account(self) -> str | None:
        """The Azure storage account: from the options, or ``abfss://c@ACCOUNT.dfs...``."""
        for key in ("azure_storage_account_name", "account_name", "azure_storage_account"):
            for k, v in self.storage_options.items():
                if k.lower() == key and v:
                    return v
        netloc = urllib.parse.urlsplit(self.uri).netloc
        return netloc.split("@", 1)[1].split(".", 1)[0] if "@" in netloc else None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            for form in {secret, urllib.parse.quote(secret, safe=""),
                         urllib.parse.quote_plus(secret), urllib.parse.unquote(secret)}:
                text = text.replace(form, "***")
        return text


def _commit_info(data: bytes, *, whole: bool) -> dict[str, Any] | None:
    """The ``commitInfo`` action in (the start of) one commit file.

    With ``whole=False`` only complete lines count, and None means "read the whole file".
    """
    lines = data.split(b"\n")
    if not whole:
        lines = lines[:-1]  # the last piece may be cut short
    for line in lines:
        if line.lstrip().startswith(b'{"commitInfo"'):
            info = json.loads(line)["commitInfo"]
            return dict(info) if isinstance(info, dict) else {}
    return None if not whole else {}


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and its causes (deltalake and pyarrow wrap the store's error)."""
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in out and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _detail(text: str) -> str:
    """The store's answer in a few words: HTTP status and error code, or the network error."""
    parts = []
    status = _STATUS.search(text)
    if status:
        parts.append(f"{status.group(1)} {status.group(2)}")
    code = _CODE.search(text)
    if code:
        parts.append(code.group(1))
    if parts:
        return ", ".join(parts)
    # The innermost line of object_store's error chain ("Connection refused (os error 111)").
    lines = [ln.strip(" \t↳") for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("<")]
    return (lines[-1] if lines else text.strip())[:200]


def _root_kind(uri: str) -> str:
    scheme = _scheme(uri)
    if scheme in ("az", "abfs", "abfss", "adl", "azure"):
        return "az"
    if scheme in ("gs", "gcs"):
        return "gs"
    return "s3"


def _root_name(uri: str) -> str:
    """The container or bucket of a lake URI (``abfss://container@account...``)."""
    netloc = urllib.parse.urlsplit(uri).netloc
    return netloc.split("@", 1)[0] if "@" in netloc else netloc


def _pause(attempt: int) -> None:
    """A short random wait before writing a conflicting batch again (writers spread out)."""
    time.sleep(min(2.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))


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
