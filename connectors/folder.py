"""A local folder (local disk, NFS or SMB mount) as an on-prem file store."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, ClassVar, cast

import pyarrow as pa

from connectors.abc import FileInfo, FileStore, Option
from connectors.errors import NotFoundError, StoreError, UnsafeNameError
from connectors.names import check_relative_path, safe_display

log = logging.getLogger("silta.folder")

# Errors that can pass (a mount that hiccups); the rest need a person.
_RETRIABLE_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE,
                     errno.EIO}


def _store_error(action: str, path: str, e: OSError) -> StoreError:
    retriable = e.errno in _RETRIABLE_ERRNOS
    if e.errno == errno.ENOSPC:
        return StoreError(f"{action} {path!r}: disk full ({e.strerror}); free space and "
                          "the work is retried", retriable=True)
    return StoreError(f"{action} {path!r}: {e.strerror or e}", retriable=retriable)


class FolderStore(FileStore):
    """Files under ``path``; writes go to a temporary name, then an atomic rename."""

    type_name = "folder"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("path", Path, required=True, help="the folder; relative to the config file"),
    )
    CAN_WATCH = True

    def __init__(self, path: Path | str) -> None:
        self.root = Path(path).absolute()

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def _abs(self, path: str) -> Path:
        check_relative_path(path)
        return self.root / path

    def list(self, pattern: str) -> Iterator[FileInfo]:
        check_relative_path(pattern, what="glob")
        if not self.root.is_dir():
            raise StoreError(f"folder {str(self.root)!r} does not exist; create it or fix "
                             "the connector's path", retriable=True)
        root_real = os.path.realpath(self.root)
        try:
            matches = sorted(self.root.glob(pattern))
        except OSError as e:
            raise _store_error("listing", str(self.root), e) from e
        for p in matches:
            rel = p.relative_to(self.root).as_posix()
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # hidden files and Silta's own .silta-* folders
            try:
                check_relative_path(rel)
            except UnsafeNameError as e:
                # Control characters, backslashes or bytes that are not UTF-8 in a name:
                # never let it reach the lake (or the operator's terminal).
                log.warning("skipping %s: its name is unsafe (%s); rename the file to sync it",
                            safe_display(rel), e.msg)
                yield FileInfo(safe_display(rel), 0, 0, refused=e.msg)
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _store_error("stat", rel, e) from e
            if not p.is_file():
                continue
            # A symlink that points outside the root would leak other files into the lake.
            real = os.path.realpath(p)
            if os.path.commonpath([root_real, real]) != root_real:
                continue
            yield FileInfo(rel, st.st_size, st.st_mtime_ns)

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = self._abs(path).stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _store_error("stat", path, e) from e
        return FileInfo(path, st.st_size, st.st_mtime_ns)

    def open_read(self, path: str) -> BinaryIO:
        try:
            # Arrow's own file: the CSV reader's read-ahead then runs without the GIL.
            return cast(BinaryIO, pa.OSFile(str(self._abs(path)), "r"))
        except FileNotFoundError as e:
            raise NotFoundError("file", path, "it was moved or deleted") from e
        except OSError as e:
            raise _store_error("opening", path, e) from e

    def write_atomic(self, path: str, chunks: Iterable[bytes], *, tmp_name: str | None = None,
                     on_staged: Callable[[FileInfo], None] | None = None) -> FileInfo:
        final = self._abs(path)
        tmp = (self._abs(tmp_name) if tmp_name is not None
               else final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.silta.tmp"))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if on_staged is not None:
                st = tmp.stat()
                on_staged(FileInfo(tmp.relative_to(self.root).as_posix(), st.st_size,
                                   st.st_mtime_ns))
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as e:
            # Cleaning up can fail the same way (ENAMETOOLONG, EACCES): the write's own
            # error is the one to report, as a StoreError the caller can handle.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _store_error("writing", path, e) from e
        st = final.stat()
        return FileInfo(path, st.st_size, st.st_mtime_ns)

    def move(self, src: str, dst: str) -> None:
        source, target = self._abs(src), self._abs(dst)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            _fsync_dir(target.parent)
        except FileNotFoundError as e:
            raise NotFoundError("file", src) from e
        except OSError as e:
            raise _store_error("moving", src, e) from e

    def delete(self, path: str) -> None:
        try:
            self._abs(path).unlink(missing_ok=True)
        except OSError as e:
            raise _store_error("deleting", path, e) from e

    def local_root(self) -> Path | None:
        return self.root


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds the entry."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["FolderStore", "UnsafeNameError"]
