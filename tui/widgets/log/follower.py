"""Follow a log file as ``tail -F`` does: its last lines first, then what is appended,
across rotation (``agent.log`` renamed to ``agent.log.1`` and a new file started) and
truncation. Headless and blocking: the log screen calls :meth:`LogFollower.poll` from a
worker thread about twice a second.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

#: bytes read per poll at most (a burst is caught up over a few polls)
READ_BYTES = 1 << 20
_BLOCK = 64 * 1024


@dataclass
class Chunk:
    """What one poll found."""

    lines: list[str] = field(default_factory=list)
    exists: bool = True
    """False while there is no file at the path (yet, or between rotation steps)."""
    error: str | None = None
    """Why the file could not be read (permissions...), or None."""


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")


class LogFollower:
    """New complete lines of ``path`` on each :meth:`poll`; the first poll gives the last
    ``backlog`` lines. A line still being written is held until its newline arrives."""

    def __init__(self, path: Path, *, backlog: int = 1000, read_bytes: int = READ_BYTES
                 ) -> None:
        self.path = path
        self.backlog = backlog
        self.read_bytes = read_bytes
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._partial = b""
        self._opened_before = False
        self._lock = threading.Lock()

    def poll(self) -> Chunk:
        with self._lock:
            try:
                return self._poll()
            except OSError as e:
                self.close()
                return Chunk(error=f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        """Close the file (the next poll opens it again)."""
        with self._lock:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._ident, self._partial = None, None, b""

    # -- the steps ----------------------------------------------------------------------
    def _poll(self) -> Chunk:
        try:
            st = os.stat(self.path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        lines: list[str] = []
        if self._file is not None and ident != self._ident:
            # rotated (or removed): what the old file got before it moved, then the new one
            lines += self._read(final=True)
            self.close()
        if ident is None:
            return Chunk(lines, exists=False)
        if self._file is None:
            lines += self._open()
            return Chunk(lines)
        assert self._file is not None
        if st.st_size < self._file.tell():  # truncated in place: read it from the start
            self._file.seek(0)
            self._partial = b""
        lines += self._read()
        return Chunk(lines)

    def _open(self) -> list[str]:
        """Open the file: its last lines the first time (or when a new file is already
        long), all of it after a rotation."""
        f = open(self.path, "rb")  # noqa: SIM115 - kept open between polls, closed by close()
        st = os.fstat(f.fileno())
        self._file, self._ident, self._partial = f, (st.st_dev, st.st_ino), b""
        first, self._opened_before = not self._opened_before, True
        if first or st.st_size > self.read_bytes:
            return self._tail(st.st_size)
        return self._read()

    def _tail(self, size: int) -> list[str]:
        """The last ``backlog`` complete lines; the file is left at its end."""
        assert self._file is not None
        start, newlines = size, 0
        while start > 0 and newlines <= self.backlog and size - start < 16 * self.read_bytes:
            step = min(_BLOCK, start)
            start -= step
            self._file.seek(start)
            newlines += self._file.read(step).count(b"\n")
        self._file.seek(start)
        data = self._file.read(size - start)
        parts = data.split(b"\n")
        if start > 0:
            parts = parts[1:]  # the first line began before what was read
        self._partial = parts.pop()
        return [_decode(p) for p in parts[-self.backlog:]]

    def _read(self, *, final: bool = False) -> list[str]:
        """Complete lines appended since the last read (``final``: the last line too)."""
        assert self._file is not None
        data = self._partial + self._file.read(self.read_bytes)
        parts = data.split(b"\n")
        self._partial = parts.pop()
        if final and self._partial:
            parts.append(self._partial)
            self._partial = b""
        return [_decode(p) for p in parts]
