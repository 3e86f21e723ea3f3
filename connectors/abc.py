"""Contracts every connector fulfils (see STYLE.md: a small ABC, options as data)."""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar


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
    def write_atomic(self, path: str, chunks: Iterable[bytes]) -> FileInfo:
        """Write under a temporary name, make it durable, then rename onto ``path``.

        Readers never see a half-written file under its final name. Raises: StoreError.
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
