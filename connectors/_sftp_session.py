"""The paramiko plumbing under :mod:`connectors.sftp`: connections, leased channels, replies.

Kept apart from the store so that a reader of the connector sees what it does (the file
store API, the retry policy, connecting, the errors), not how SFTP packets are exchanged.
Everything here works on one leased channel (:class:`Session`) and knows nothing of the
store that owns it.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from typing import Any

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_HANDLE,
    CMD_INIT,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_VERSION,
    SFTP_NO_SUCH_FILE,
    SFTP_PERMISSION_DENIED,
    SFTPError,
)

log = logging.getLogger("silta.sftp")

# Errors of the network, not of a file: the connection is given up and the work retried.
_NET_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
               errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
               errno.EHOSTDOWN, errno.ENOTCONN, errno.ESHUTDOWN}


class RejectUnknownHost(paramiko.RejectPolicy):  # type: ignore[misc]
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    offered: Any = None

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        self.offered = key
        super().missing_host_key(client, hostname, key)


class Transport(paramiko.Transport):  # type: ignore[misc]
    # AES-GCM first: paramiko computes the MAC of the CTR ciphers in Python per packet,
    # which cost a third of the read throughput here (bench/sftp_throughput.py).
    _preferred_ciphers = (
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),
    )


class SftpClient(paramiko.SFTPClient):  # type: ignore[misc]
    """paramiko's client, keeping the extensions the server announces (fsync, limits)."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        msg = paramiko.Message()
        msg.add_int(3)
        self._send_packet(CMD_INIT, msg)
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        version: int = struct.unpack(">I", data[:4])[0]
        self.extensions = {}
        pos = 4
        while pos + 4 <= len(data):
            (n,) = struct.unpack(">I", data[pos:pos + 4])
            name = data[pos + 4:pos + 4 + n]
            pos += 4 + n
            if pos + 4 > len(data):
                break
            (m,) = struct.unpack(">I", data[pos:pos + 4])
            self.extensions[name.decode("utf-8", "replace")] = data[pos + 4:pos + 4 + m]
            pos += 4 + m
        return version

    def listdir_attr(self, path: str = ".") -> list[Any]:
        """paramiko's ``listdir_attr``, but a name that is not UTF-8 stays ``bytes``.

        paramiko decodes every name strictly: one such name on the server raised
        UnicodeDecodeError out of the whole listing (and left the handle open), so no
        file of the folder could be synced. The caller skips the ``bytes`` names.
        """
        t, msg = self._request(CMD_OPENDIR, self._adjust_cwd(path))
        if t != CMD_HANDLE:
            raise SFTPError("Expected handle")
        handle = msg.get_binary()
        found: list[Any] = []
        while True:
            try:
                t, msg = self._request(CMD_READDIR, handle)
            except EOFError:
                break  # the end of the folder
            if t != CMD_NAME:
                raise SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                raw = msg.get_binary()
                longname = msg.get_binary().decode("utf-8", "replace")
                try:
                    name: str | bytes = raw.decode("utf-8")
                except UnicodeDecodeError:
                    name = bytes(raw)
                attr = paramiko.SFTPAttributes._from_msg(msg, name, longname)
                if name not in (".", ".."):
                    found.append(attr)
        self._request(CMD_CLOSE, handle)
        return found


class Replies:
    """Receives replies to pipelined requests (paramiko hands them to ``_async_response``)."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, Any]] = {}
        self.ignored: set[int] = set()

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        if num in self.ignored:
            self.ignored.discard(num)
        else:
            self.done[num] = (t, msg)


class Connection:
    """One SSH connection; ``leases`` channels are out, ``stale`` once it was given up."""

    def __init__(self, client: Any, root: str = "") -> None:
        self.client = client
        self.transport = client.get_transport()
        self.banner: str = self.transport.remote_version
        self.root = root
        self.leases = 0
        self.stale = False
        self.limits: tuple[int, int] | None = None
        #: folders already seen to lie inside the root (symlinks resolved)
        self.inside: set[str] = set()

    def alive(self) -> bool:
        return not self.stale and bool(self.transport.is_active())


class Session:
    """A leased SFTP channel; ``broken`` when replies are outstanding or it failed."""

    def __init__(self, conn: Connection, sftp: Any, max_read: int, max_write: int) -> None:
        self.conn = conn
        self.sftp = sftp
        self.max_read = max_read
        self.max_write = max_write
        self.fsync = "fsync@openssh.com" in sftp.extensions
        self.posix_rename = "posix-rename@openssh.com" in sftp.extensions
        self.broken = False
        #: an error raised by the chunks a caller gave to write_atomic (not translated)
        self.caller_error: BaseException | None = None

    def usable(self) -> bool:
        return not self.broken and self.conn.alive() and not self.sftp.sock.closed

    def wait(self, replies: Replies, num: int) -> tuple[int, Any]:
        while num not in replies.done:
            self.sftp._read_response()
        return replies.done.pop(num)

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception as e:  # closing what is already gone
            log.debug("closing an SFTP channel: %s", e)


def connection_lost(e: BaseException, s: Session | None) -> bool:
    """Whether ``e`` means the connection (or the channel ``s``) is gone, not a file error."""
    if isinstance(e, (EOFError, paramiko.SSHException, SFTPError, TimeoutError,
                      ConnectionError, socket.gaierror,
                      paramiko.ssh_exception.NoValidConnectionsError)):
        return True
    if isinstance(e, OSError) and e.errno in _NET_ERRNOS:
        return True
    # paramiko raises a bare OSError("Socket is closed") on a channel that died.
    return s is not None and (not s.conn.transport.is_active() or s.sftp.sock.closed)


def status_error(code: int, text: str) -> OSError:
    """The OSError paramiko raises for an SFTP status reply."""
    if code == SFTP_NO_SUCH_FILE:
        return OSError(errno.ENOENT, text)
    if code == SFTP_PERMISSION_DENIED:
        return OSError(errno.EACCES, text)
    return OSError(text)


def open_handle(s: Session, remote: str, flags: int) -> bytes:
    # Raw handles, not paramiko's SFTPFile: its __del__ sends a CLOSE from whichever
    # thread collects it, on a channel that may by then be leased to another.
    t, msg = s.sftp._request(CMD_OPEN, remote, flags, paramiko.SFTPAttributes())
    if t != CMD_HANDLE:
        raise SFTPError(f"expected a handle, got reply type {t}")
    return bytes(msg.get_binary())


def mtime_ns(attr: Any) -> int:
    return int(attr.st_mtime or 0) * 1_000_000_000


def inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name
