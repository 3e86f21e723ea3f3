"""Pipelined reads and writes for :mod:`connectors.sftp`, over raw SFTP handles.

paramiko's file object joins large reads quadratically, its prefetch thread keeps
requesting the whole file after an early close, and its pipelined writes can lose a
write's error reply; so the connector keeps a window of its own requests in flight.
Kept apart from the store because it is protocol bookkeeping (request numbers, offsets,
replies due), not what the store does. Nothing here knows the store: a stream is given
what it needs (the read-ahead, how to report an error, how to give its channel back).
"""

from __future__ import annotations

import errno
import io
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_READ,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    SFTPError,
    int64,
)

from connectors._sftp_session import Replies, Session, connection_lost, open_handle, status_error
from connectors.errors import SiltaError
from connectors.names import safe_display

log = logging.getLogger("silta.sftp")


class ReadStream(io.RawIOBase):
    """A file on the server, read through a window of pipelined READ requests.

    It holds its channel until closed. Losing the connection fails the read with a
    retriable StoreError (made by ``fail``); it never resumes on another connection.
    ``release(reusable)`` gives the channel back when the stream is closed.
    """

    def __init__(self, s: Session, handle: bytes, size: int, path: str, *,
                 read_ahead: int, fail: Callable[[BaseException], SiltaError],
                 release: Callable[[bool], None]) -> None:
        super().__init__()
        self._s = s
        self._handle = handle
        self._size = size  # at open: the file may still grow; EOF comes from the server
        self._path = path
        self._fail = fail
        self._release = release
        self._replies = Replies()
        self._pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        self._request = s.max_read
        self._depth = max(1, read_ahead // s.max_read)
        self._next = 0  # offset of the next request
        self._pos = 0  # offset of the next byte handed out
        self._chunk = memoryview(b"")
        self._eof = False
        self._error: SiltaError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += self._size
        if offset < 0:
            raise ValueError("negative seek position")
        if offset != self._pos:
            self._abandon()
            self._chunk = memoryview(b"")
            self._next = self._pos = offset
            self._eof = False
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(buffer).cast("B")
        if not self._chunk:
            chunk = self._take()
            if chunk is None:
                return 0
            self._chunk = chunk
        n = min(len(out), len(self._chunk))
        out[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        self._pos += n
        return n

    def readall(self) -> bytes:
        parts = []
        if self._chunk:
            parts.append(bytes(self._chunk))
            self._pos += len(self._chunk)
            self._chunk = memoryview(b"")
        while (chunk := self._take()) is not None:
            parts.append(bytes(chunk))
            self._pos += len(chunk)
        return b"".join(parts)

    def _abandon(self) -> None:
        """Forget requests in flight; their replies are dropped when they arrive."""
        self._replies.ignored.update(num for num, _, _ in self._pending)
        self._pending.clear()

    def _issue(self) -> None:
        sftp = self._s.sftp
        while len(self._pending) < self._depth:
            if self._next >= self._size and self._pending:
                break  # past the size seen at open: one request at a time until EOF
            n = (min(self._request, self._size - self._next) if self._next < self._size
                 else self._request)
            num = sftp._async_request(self._replies, CMD_READ, self._handle,
                                      int64(self._next), int(n))
            self._pending.append((num, self._next, n))
            self._next += n

    def _take(self) -> memoryview | None:
        """The next piece of the file in order, or None at its end."""
        if self._error is not None:
            raise self._error
        if self._eof:
            return None
        try:
            while True:
                if not self._pending:
                    self._issue()
                num, offset, length = self._pending.popleft()
                t, msg = self._s.wait(self._replies, num)
                if t == CMD_DATA:
                    data: bytes = msg.get_binary()
                    if data:
                        if len(data) < length:
                            # Short: the server caps reads (ask for less from now on), or
                            # the file changed size. Either way the rest of this piece
                            # comes before anything already requested.
                            if offset + len(data) < self._size:
                                self._request = len(data)
                            self._abandon()
                            self._next = offset + len(data)
                        self._issue()
                        return memoryview(data)
                elif t == CMD_STATUS:
                    code, text = msg.get_int(), msg.get_text()
                    if code != SFTP_EOF:
                        raise status_error(code, text)
                else:
                    raise SFTPError(f"expected data, got reply type {t}")
                self._eof = True  # EOF status or an empty reply
                self._abandon()
                return None
        except SiltaError:
            raise
        except Exception as e:
            self._s.broken = True
            self._error = self._fail(e)
            raise self._error from e

    def close(self) -> None:
        if self.closed:
            return
        s = self._s
        reusable = not s.broken and not self._pending and not self._replies.ignored
        try:
            if reusable:
                try:
                    s.sftp._request(CMD_CLOSE, self._handle)
                except Exception as e:
                    log.debug("closing %s: %s", safe_display(self._path), e)
                    reusable = False
        finally:
            self._release(reusable)
            super().close()


# -- writing -------------------------------------------------------------------------------
def create_file(s: Session, remote: str) -> bytes:
    """Open ``remote`` for writing, new: O_EXCL never follows a planted symlink."""
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC | SFTP_FLAG_EXCL
    try:
        return open_handle(s, remote, flags)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EACCES):
            raise
        # A leftover of an earlier attempt (or a link): remove the entry, then again.
        try:
            s.sftp.remove(remote)
        except OSError:
            raise e from None
        return open_handle(s, remote, flags)


def write_handle(s: Session, handle: bytes, chunks: Iterable[bytes], *,
                 read_ahead: int) -> None:
    """Pipelined WRITE requests, ``read_ahead`` bytes in flight; every reply is checked
    (paramiko's pipelining drops some), and errors from ``chunks`` itself pass through
    unchanged (kept in ``s.caller_error``)."""
    replies = Replies()
    pending: deque[int] = deque()
    depth = max(1, read_ahead // s.max_write)
    offset = 0
    s.caller_error = None
    it = iter(chunks)
    try:
        while True:
            try:
                chunk = next(it)
            except StopIteration:
                break
            except BaseException as e:
                s.caller_error = e
                raise
            for i in range(0, len(chunk), s.max_write):
                piece = chunk if len(chunk) <= s.max_write else chunk[i:i + s.max_write]
                pending.append(s.sftp._async_request(replies, CMD_WRITE, handle,
                                                     int64(offset), bytes(piece)))
                offset += len(piece)
                while len(pending) > depth:
                    _check_written(s, replies, pending.popleft())
        while pending:
            _check_written(s, replies, pending.popleft())
    except BaseException as e:
        # Collect the replies still due, so the channel can remove the temporary
        # file; not when the connection is what failed.
        if pending and e is not s.caller_error and connection_lost(e, s):
            s.broken = True
        else:
            try:
                for num in pending:
                    s.wait(replies, num)
            except Exception:
                s.broken = True
        raise


def _check_written(s: Session, replies: Replies, num: int) -> None:
    t, msg = s.wait(replies, num)
    if t != CMD_STATUS:
        raise SFTPError(f"expected a status reply to a write, got {t}")
    code, text = msg.get_int(), msg.get_text()
    if code != SFTP_OK:
        raise status_error(code, text)


def abort_upload(s: Session, handle: bytes, remote_tmp: str, e: BaseException) -> bool:
    """Close and remove the temporary file on the same channel; False if it cannot."""
    if s.broken or (e is not s.caller_error and connection_lost(e, s)):
        s.broken = True
        return False
    try:
        s.sftp._request(CMD_CLOSE, handle)
        s.sftp.remove(remote_tmp)
        return True
    except Exception:
        s.broken = True
        return False
