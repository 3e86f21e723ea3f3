"""Contracts every connector fulfils (see STYLE.md: a small ABC, options as data)."""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import pyarrow as pa


@dataclass(frozen=True)
class Option:
    """One connector option, declared as data so config, CLI help and forms agree."""

    name: str
    type: type
    default: object = None
    required: bool = False
    secret: bool = False
    help: str = ""


@dataclass(frozen=True)
class FileInfo:
    """A file in a store: ``path`` is relative to the store's root, with ``/`` separators."""

    path: str
    size: int
    mtime_ns: int
    #: set for a file the store will not read, and why (an unsafe name): ``path`` is then
    #: its name made safe to show, and the sync records and alerts it instead of reading
    refused: str | None = None


class FileStore(abc.ABC):
    """A store of files: an on-prem folder, an SFTP server.

    Paths are always relative to the store's root and checked with
    :func:`connectors.names.check_relative_path`; nothing is read or written outside it.
    """

    type_name: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    #: the store can report file arrivals (watchdog) through :meth:`local_root`
    CAN_WATCH: ClassVar[bool] = False

    @abc.abstractmethod
    def list(self, pattern: str) -> Iterator[FileInfo]:
        """Files matching the glob ``pattern`` (``**`` allowed), hidden parts skipped.

        Raises: StoreError.
        """

    @abc.abstractmethod
    def stat(self, path: str) -> FileInfo | None:
        """The file's current size and mtime, or None when it is gone. Raises: StoreError."""

    @abc.abstractmethod
    def open_read(self, path: str) -> BinaryIO:
        """A binary stream of the file. Raises: StoreError, NotFoundError."""

    @abc.abstractmethod
    def write_atomic(self, path: str, chunks: Iterable[bytes], *, tmp_name: str | None = None,
                     on_staged: Callable[[FileInfo], None] | None = None) -> FileInfo:
        """Write under a temporary name, make it durable, then rename onto ``path``.

        Readers never see a half-written file under its final name. ``tmp_name`` (a
        relative path in the same folder) replaces the store's own random temporary name,
        so a caller that recorded it can finish or undo the write after a crash;
        ``on_staged`` is called with the temporary file's info once it is complete and
        durable, just before the rename. Raises: StoreError.
        """

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (parents created). Raises: StoreError."""

    @abc.abstractmethod
    def delete(self, path: str) -> None:
        """Remove the file; a missing file is not an error. Raises: StoreError."""

    def local_root(self) -> Path | None:
        """The local folder behind the store when it can be watched, else None."""
        return None

    def check(self) -> str:
        """Connect and describe what is there (``silta connectors test``). Raises: StoreError."""
        listed = (f for f in self.list("*") if f.refused is None)
        count = sum(1 for _ in zip(range(1000), listed, strict=False))
        return f"{count if count < 1000 else '1000+'} file(s) at the top level"

    def close(self) -> None:  # noqa: B027 - optional hook with a safe default
        """Release connections; the default has nothing to release."""


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`TableStore.write` did; ``already``: the idempotency record was there."""

    rows: int
    already: bool


class TableStore(abc.ABC):
    """A store of tables: SQLite, PostgreSQL.

    Table and column names come from config and are untrusted: each is checked against
    the database's catalogue and quoted; values always travel as bound parameters.
    Tables are named ``schema.table`` or ``table`` (the default schema).
    """

    type_name: ClassVar[str]
    OPTIONS: ClassVar[tuple[Option, ...]] = ()

    @abc.abstractmethod
    def list_tables(self) -> list[str]:
        """Tables and views, sorted (``schema.table`` outside the default schema).

        Raises: StoreError.
        """

    @abc.abstractmethod
    def table_schema(self, table: str) -> pa.Schema:
        """The table's columns as Arrow types, from the catalogue.

        Raises: NotFoundError, StoreError.
        """

    @abc.abstractmethod
    def read(self, *, table: str | None = None, query: str | None = None,
             watermark: str | None = None, since: Any = None, batch_rows: int = 65_536,
             cancel: threading.Event | None = None) -> pa.RecordBatchReader:
        """Rows of ``table`` or of the SELECT ``query``, streamed in batches of ``batch_rows``.

        With ``watermark``: only rows whose watermark column is ``>= since`` (every row when
        ``since`` is None), ordered by it. Memory is bounded by ``batch_rows``, not the
        table. Raises: NotFoundError (table or column), UnsafeNameError, StoreError
        (retriable when the connection was lost).
        """

    @abc.abstractmethod
    def write(self, table: str, data: pa.RecordBatchReader, *,
              mode: Literal["append", "merge", "snapshot"], key: Sequence[str] = (),
              idempotency: tuple[str, int] | None = None) -> WriteResult:
        """Write every batch of ``data`` in one transaction.

        append: insert; merge: upsert on ``key``; snapshot: replace the table's rows. A
        missing table (and schema) is created with types mapped from the Arrow schema and
        ``key`` as its primary key. ``idempotency = (name, version)`` is recorded in the same
        transaction; when it is already recorded nothing is written (``already=True``).
        Raises: SchemaMismatchError, StoreError.
        """

    @abc.abstractmethod
    def applied_version(self, name: str) -> int | None:
        """The highest version recorded for ``name`` by :meth:`write`, or None."""

    def check(self) -> str:
        """Connect and describe what is there (``silta connectors test``). Raises: StoreError."""
        return f"{len(self.list_tables())} table(s)"

    def close(self) -> None:  # noqa: B027 - optional hook with a safe default
        """Release connections; the default has nothing to release."""


def iter_chunks(stream: BinaryIO, size: int = 1 << 20, cancel: threading.Event | None = None
                ) -> Iterator[bytes]:
    """Read ``stream`` in chunks, stopping early when ``cancel`` is set."""
    while True:
        if cancel is not None and cancel.is_set():
            return
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk
