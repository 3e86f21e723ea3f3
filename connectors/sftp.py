"""An SFTP server (OpenSSH or any SFTP v3 server) as an on-prem file store, over paramiko.

- One SSH connection per store, opened on first use (the agent starts while the server is
  down) and opened again after it drops.
- paramiko's ``SFTPClient`` must not be shared between threads: a thread waiting for its
  reply reads whatever packet arrives next and drops replies meant for the others. So each
  operation leases an SFTP channel of its own over the one SSH connection (a channel costs
  one round trip; idle ones are pooled), and a stream being read holds its channel until
  it is closed. The sync engine hashes from two threads while a third reads; each gets
  its own channel.
- Host keys come from ``known_hosts`` only: an unknown or changed key is refused with an
  :class:`AuthError` that says what to do; nothing is ever added, system keys are not read.
- One retry policy (:meth:`SftpStore._call`): transient failures (dropped connection,
  timeout, refused connection) are retried ``retries`` times with backoff, on a fresh
  connection. A read stream that loses its connection fails (retriable); it never resumes
  silently.
- Reads and writes pipeline their own SFTP requests over raw handles: paramiko's file
  object joins large reads quadratically, its prefetch thread keeps requesting the whole
  file after an early close (the probe reads 1 MiB), and its pipelined writes can lose a
  write's error reply.
- Names are untrusted both ways: paths given to the store are checked, and names the server
  lists that carry control characters or backslashes are skipped with a warning; symlinks
  leading outside ``root`` are never listed, read through or written through.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import io
import logging
import posixpath
import socket
import stat as st
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar, cast

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
    SFTPError,
    int64,
)

from connectors.abc import FileInfo, FileStore, Option
from connectors.errors import AuthError, NotFoundError, SiltaError, StoreError, UnsafeNameError
from connectors.names import check_relative_path, safe_display

log = logging.getLogger("silta.sftp")

T = TypeVar("T")

# Errors of the network, not of a file: the connection is given up and the work retried.
_NET_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
               errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
               errno.EHOSTDOWN, errno.ENOTCONN, errno.ESHUTDOWN}
_BACKOFF_MAX = 30.0
_MAX_IDLE_CHANNELS = 4
#: the SFTP v3 draft's minimum; servers announce more through limits@openssh.com
_MIN_REQUEST = 32_768


class _RejectUnknownHost(paramiko.RejectPolicy):  # type: ignore[misc]
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    offered: Any = None

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        self.offered = key
        super().missing_host_key(client, hostname, key)


class _Transport(paramiko.Transport):  # type: ignore[misc]
    # AES-GCM first: paramiko computes the MAC of the CTR ciphers in Python per packet,
    # which cost a third of the read throughput here (bench/sftp_throughput.py).
    _preferred_ciphers = (
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),
    )


class _SftpClient(paramiko.SFTPClient):  # type: ignore[misc]
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


class _Replies:
    """Receives replies to pipelined requests (paramiko hands them to ``_async_response``)."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, Any]] = {}
        self.ignored: set[int] = set()

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        if num in self.ignored:
            self.ignored.discard(num)
        else:
            self.done[num] = (t, msg)


class _Connection:
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


class _Session:
    """A leased SFTP channel; ``broken`` when replies are outstanding or it failed."""

    def __init__(self, conn: _Connection, sftp: Any, max_read: int, max_write: int) -> None:
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

    def wait(self, replies: _Replies, num: int) -> tuple[int, Any]:
        while num not in replies.done:
            self.sftp._read_response()
        return replies.done.pop(num)

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception as e:  # closing what is already gone
            log.debug("closing an SFTP channel: %s", e)


def _status_error(code: int, text: str) -> OSError:
    """The OSError paramiko raises for an SFTP status reply."""
    if code == SFTP_NO_SUCH_FILE:
        return OSError(errno.ENOENT, text)
    if code == SFTP_PERMISSION_DENIED:
        return OSError(errno.EACCES, text)
    return OSError(text)


def _mtime_ns(attr: Any) -> int:
    return int(attr.st_mtime or 0) * 1_000_000_000


def _inside(root: str, real: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


class SftpStore(FileStore):
    """Files under ``root`` on an SFTP server; writes go to a temporary name, then a rename."""

    type_name = "sftp"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("host", str, required=True, help="host name or address of the server"),
        Option("port", int, default=22, help="TCP port"),
        Option("username", str, required=True, help="user to log in as"),
        Option("key_file", Path, help="private key file (OpenSSH format)"),
        Option("password", str, secret=True,
               help="password, or the key file's passphrase when key_file is set"),
        Option("known_hosts", Path, required=True,
               help="known_hosts file with the server's key; unknown or changed keys are "
                    "refused"),
        Option("root", str, default=".",
               help="folder on the server that paths are relative to"),
        Option("timeout_seconds", float, default=30.0, help="connect and read timeout"),
        Option("retries", int, default=3,
               help="attempts after a transient failure, with backoff"),
    )

    #: SSH channel window and packet size, SFTP request size and read-ahead per stream:
    #: tuned with bench/sftp_throughput.py (paramiko spends its time per packet, not per byte)
    WINDOW_SIZE = 8 << 20
    MAX_PACKET = 256 << 10
    REQUEST_SIZE = 255 << 10
    READ_AHEAD = 8 << 20

    def __init__(self, host: str, port: int = 22, *, username: str,
                 key_file: Path | None = None, password: str | None = None,
                 known_hosts: Path, root: str = ".", timeout_seconds: float = 30.0,
                 retries: int = 3) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        self.key_file = Path(key_file) if key_file is not None else None
        self._password = password
        self.known_hosts = Path(known_hosts)
        self.root = root
        self.timeout_seconds = float(timeout_seconds)
        self.retries = int(retries)
        #: first delay of the exponential backoff (the first retry is immediate)
        self.backoff_seconds = 0.5
        self._lock = threading.Lock()  # guards the connection and the channel pool
        self._conn: _Connection | None = None
        self._idle: list[_Session] = []

    def __repr__(self) -> str:
        return f"SftpStore({self._where!r}, root={self.root!r})"

    @property
    def _where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    # -- the file store API (same order as FolderStore) ------------------------------------
    def list(self, pattern: str) -> Iterator[FileInfo]:
        check_relative_path(pattern, what="glob")
        parts = pattern.split("/")
        found = self._call("listing", pattern, lambda s, _: self._glob(s, parts))
        for _, info in sorted(found.items(), key=lambda kv: kv[0].split("/")):
            yield info

    def stat(self, path: str) -> FileInfo | None:
        check_relative_path(path)

        def stat(s: _Session, _: int) -> FileInfo | None:
            try:
                self._folders(s, path)
                attr = self._follow(s, path, s.sftp.lstat(self._remote(s, path)))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None
                raise
            except UnsafeNameError as e:
                log.warning("sftp %s: %s", self._where, e.msg)
                return None  # not a file of this store (never listed either)
            if attr is None or not st.S_ISREG(attr.st_mode or 0):
                return None
            return FileInfo(path, attr.st_size or 0, _mtime_ns(attr))

        return self._call("stat", path, stat)

    def open_read(self, path: str) -> BinaryIO:
        check_relative_path(path)

        def open_(s: _Session, _: int) -> _ReadStream:
            self._folders(s, path)
            remote = self._remote(s, path)
            attr = self._follow(s, path, s.sftp.lstat(remote))
            if attr is None or not st.S_ISREG(attr.st_mode or 0):
                raise NotFoundError("file", path, "it is not a regular file")
            handle = _open_handle(s, remote, SFTP_FLAG_READ)
            return _ReadStream(self, s, handle, attr.st_size or 0, path)

        # The stream keeps the channel until it is closed.
        raw = self._call("opening", path, open_, keep=True)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=256 << 10))

    def write_atomic(self, path: str, chunks: Iterable[bytes], *, tmp_name: str | None = None,
                     on_staged: Callable[[FileInfo], None] | None = None) -> FileInfo:
        check_relative_path(path)
        folder, base = posixpath.split(path)
        tmp_rel = (check_relative_path(tmp_name, what="temporary name") if tmp_name is not None
                   else _join(folder, f".{base}.{uuid.uuid4().hex[:8]}.silta.tmp"))
        started = False
        leftover = False

        def upload(s: _Session, _: int) -> FileInfo:
            nonlocal started, leftover
            self._folders(s, path, create=True)
            self._folders(s, tmp_rel, create=True)
            remote_tmp = self._remote(s, tmp_rel)
            handle = self._create(s, remote_tmp)
            started = True  # the chunks are being consumed: no retry from here on
            try:
                self._write_handle(s, handle, chunks)
                if s.fsync:
                    s.sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle)
                s.sftp._request(CMD_CLOSE, handle)
                attr = s.sftp.stat(remote_tmp)
            except BaseException as e:
                leftover = not self._abort_upload(s, handle, remote_tmp, e)
                raise
            return FileInfo(tmp_rel, attr.st_size or 0, _mtime_ns(attr))

        try:
            staged = self._call("writing", path, upload, retry=lambda: not started)
        except BaseException:
            if leftover:
                self._remove_quietly(tmp_rel)
            raise
        if on_staged is not None:
            # From here the temporary file belongs to the caller's recovery (publish).
            on_staged(staged)
        try:
            self._call("renaming", path, lambda s, attempt: self._rename(
                s, tmp_rel, path, attempt))
        except SiltaError:
            if on_staged is None:
                self._remove_quietly(tmp_rel)
            raise
        # A rename keeps size and mtime; the file may already be taken by a consumer.
        return FileInfo(path, staged.size, staged.mtime_ns)

    def move(self, src: str, dst: str) -> None:
        check_relative_path(src)
        check_relative_path(dst)

        def move(s: _Session, attempt: int) -> None:
            self._folders(s, src)
            self._folders(s, dst, create=True)
            self._rename(s, src, dst, attempt)

        self._call("moving", src, move)

    def delete(self, path: str) -> None:
        check_relative_path(path)

        def delete(s: _Session, _: int) -> None:
            self._folders(s, path)
            try:
                s.sftp.remove(self._remote(s, path))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise

        self._call("deleting", path, delete)

    def check(self) -> str:
        def ping(s: _Session, _: int) -> tuple[str, str, float]:
            started = time.perf_counter()
            s.sftp.stat(s.conn.root)
            return s.conn.banner, s.conn.root, time.perf_counter() - started

        banner, root, rtt = self._call("checking", "", ping)
        files = super().check()
        return (f"{files} in {root} on {self.host}:{self.port} ({banner}); "
                f"round trip {rtt * 1000:.1f} ms")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._retire_locked(self._conn)
            for s in self._idle:
                s.close()
            self._idle.clear()

    # -- the one retry policy ------------------------------------------------------------
    def _call(self, action: str, path: str, fn: Callable[[_Session, int], T], *,
              retry: bool | Callable[[], bool] = True, keep: bool = False) -> T:
        """Run ``fn`` on a leased channel; transient failures are retried with backoff.

        ``fn`` gets the attempt number (0 first) so that a rename can tell "already done"
        from "missing". With ``keep`` a successful ``fn`` keeps the channel (a stream).
        """
        attempt = 0
        while True:
            try:
                return self._attempt(action, path, fn, attempt, keep)
            except StoreError as e:
                allowed = retry() if callable(retry) else retry
                if not e.retriable or not allowed or attempt >= self.retries:
                    raise
                delay = 0.0 if attempt == 0 else min(
                    self.backoff_seconds * 2 ** (attempt - 1), _BACKOFF_MAX)
                log.warning("%s; retry %d of %d in %.1f s", e.msg, attempt + 1,
                            self.retries, delay)
                time.sleep(delay)
                attempt += 1

    def _attempt(self, action: str, path: str, fn: Callable[[_Session, int], T],
                 attempt: int, keep: bool) -> T:
        s = self._acquire()
        done = False
        try:
            result = fn(s, attempt)
            done = True
            return result
        except SiltaError:
            raise
        except BaseException as e:
            if e is s.caller_error:
                raise  # raised by the caller's own chunks: passed on as it is
            if isinstance(e, (OSError, EOFError, paramiko.SSHException, SFTPError)):
                raise self._translate(action, path, e, s) from e
            s.broken = True  # interrupted (KeyboardInterrupt): replies may be due
            raise
        finally:
            if not (keep and done):
                self._release(s, reusable=not s.broken)

    # -- connection and channel pool -------------------------------------------------------
    def _acquire(self) -> _Session:
        with self._lock:
            conn = self._conn
            if conn is None or not conn.alive():
                if conn is not None:
                    self._retire_locked(conn)
                conn = self._conn = self._connect()  # leaves its first channel idle
            while self._idle:
                s = self._idle.pop()
                if s.usable() and s.conn is conn:
                    conn.leases += 1
                    return s
                s.close()
            try:
                s = self._open_channel(conn)
            except Exception as e:
                if not isinstance(e, paramiko.ChannelException):  # not just "too many"
                    self._retire_locked(conn)
                raise StoreError(f"SFTP {self._where}: opening an SFTP channel: "
                                 f"{self._text(e)}; transient: the work is retried",
                                 retriable=True) from e
            conn.leases += 1
            return s

    def _release(self, s: _Session, *, reusable: bool) -> None:
        with self._lock:
            s.conn.leases -= 1
            if reusable and s.usable() and s.conn is self._conn and (
                    len(self._idle) < _MAX_IDLE_CHANNELS):
                self._idle.append(s)
            else:
                s.close()
                if not reusable and s.conn is self._conn and not s.conn.alive():
                    self._retire_locked(s.conn)
            if s.conn.stale and s.conn.leases <= 0:
                s.conn.client.close()

    def _retire(self, conn: _Connection) -> None:
        with self._lock:
            self._retire_locked(conn)

    def _retire_locked(self, conn: _Connection) -> None:
        """Give a connection up; it is closed once its last channel comes back."""
        conn.stale = True
        if self._conn is conn:
            self._conn = None
        keep = []
        for s in self._idle:
            if s.conn is conn:
                s.close()
            else:
                keep.append(s)
        self._idle[:] = keep
        if conn.leases <= 0:
            conn.client.close()

    def _connect(self) -> _Connection:
        """Log in, check the host key, resolve the root. Called with the lock held."""
        pkey = self._load_key()
        client = paramiko.SSHClient()
        try:
            # Only this file: no system host keys, and RejectPolicy never adds a key.
            client.get_host_keys().load(str(self.known_hosts))
        except FileNotFoundError as e:
            raise AuthError(
                f"known_hosts file {str(self.known_hosts)!r} does not exist; create it "
                f"with the server's key: ssh-keyscan -p {self.port} {self.host} >> "
                f"{self.known_hosts} (compare the fingerprint with the server's admin "
                "first)") from e
        except (OSError, paramiko.SSHException) as e:
            raise AuthError(f"known_hosts file {str(self.known_hosts)!r} cannot be read: "
                            f"{self._text(e)}") from e
        policy = _RejectUnknownHost()
        client.set_missing_host_key_policy(policy)
        t = self.timeout_seconds
        try:
            client.connect(
                self.host, port=self.port, username=self.username, pkey=pkey,
                # With a key file the password is its passphrase: never send it to the
                # server as a login password.
                password=None if self.key_file is not None else self._password,
                timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
                allow_agent=self.key_file is None and self._password is None,
                look_for_keys=False, transport_factory=_Transport)
            conn = _Connection(client)
            conn.transport.set_keepalive(30)
            s = self._open_channel(conn)
            try:
                conn.root = self._resolve_root(s)
            except BaseException:
                s.close()
                raise
        except BaseException as e:
            client.close()
            if isinstance(e, SiltaError):
                raise
            if isinstance(e, Exception):
                raise self._connect_error(e, policy.offered) from e
            raise
        self._idle.append(s)
        log.info("sftp %s connected (%s), root %s", self._where, conn.banner,
                 safe_display(conn.root))
        return conn

    def _load_key(self) -> Any:
        if self.key_file is None:
            return None
        where = f"key file {str(self.key_file)!r}"
        try:
            try:
                return paramiko.PKey.from_path(self.key_file)
            except TypeError:  # encrypted: the password is its passphrase
                if self._password is None:
                    raise AuthError(f"{where} is encrypted; set the connector's password "
                                    "to its passphrase") from None
                return paramiko.PKey.from_path(self.key_file,
                                               password=self._password.encode())
        except FileNotFoundError as e:
            raise AuthError(f"{where} does not exist") from e
        except (OSError, ValueError, TypeError, paramiko.SSHException) as e:
            raise AuthError(f"{where} cannot be read (wrong passphrase, or not an OpenSSH "
                            f"or PEM private key): {self._text(e)}") from e

    def _open_channel(self, conn: _Connection) -> _Session:
        t = self.timeout_seconds
        chan = conn.transport.open_session(window_size=self.WINDOW_SIZE,
                                           max_packet_size=self.MAX_PACKET, timeout=t)
        chan.settimeout(t)
        # paramiko waits for the subsystem's answer without a timeout: a connection that
        # stalls right then is closed after timeout_seconds, which ends the wait.
        watchdog = threading.Timer(t, conn.transport.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.invoke_subsystem("sftp")
            watchdog.cancel()
            sftp = _SftpClient(chan)  # the version exchange is bounded by the timeout
            limits = conn.limits
            if limits is None:
                limits = (_MIN_REQUEST, _MIN_REQUEST)
                if "limits@openssh.com" in sftp.extensions:
                    _, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
                    msg.get_int64()  # max packet length
                    max_read, max_write = msg.get_int64(), msg.get_int64()
                    limits = (max_read or _MIN_REQUEST, max_write or _MIN_REQUEST)
                conn.limits = limits
        except BaseException:
            watchdog.cancel()
            chan.close()
            raise
        max_read = max(_MIN_REQUEST, min(self.REQUEST_SIZE, limits[0]))
        max_write = max(_MIN_REQUEST, min(self.REQUEST_SIZE, limits[1]))
        return _Session(conn, sftp, max_read, max_write)

    def _resolve_root(self, s: _Session) -> str:
        try:
            root: str = s.sftp.normalize(self.root)
            attr = s.sftp.stat(root)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise StoreError(f"SFTP {self._where}: root folder {self.root!r} does not "
                                 "exist on the server; create it or fix the connector's "
                                 "root", retriable=True) from e
            raise
        if not st.S_ISDIR(attr.st_mode or 0):
            raise StoreError(f"SFTP {self._where}: root {self.root!r} is not a folder")
        return root

    # -- errors ------------------------------------------------------------------------------
    def _text(self, e: BaseException) -> str:
        """An exception's text, never with the password in it."""
        text = str(e) or type(e).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _connect_error(self, e: Exception, unknown_key: Any) -> SiltaError:
        where = f"{self.host}:{self.port}"
        if unknown_key is not None:
            return AuthError(
                f"the host key of {where} is not in known_hosts {str(self.known_hosts)!r}; "
                f"the server offered {unknown_key.get_name()} {unknown_key.fingerprint}. If the "
                "server's admin confirms that fingerprint, add the key: ssh-keyscan -p "
                f"{self.port} {self.host} >> {self.known_hosts}")
        if isinstance(e, paramiko.BadHostKeyException):
            return AuthError(
                f"the host key of {where} has CHANGED: known_hosts "
                f"{str(self.known_hosts)!r} has {e.expected_key.get_name()} "
                f"{e.expected_key.fingerprint}, the server offered "
                f"{e.key.get_name()} {e.key.fingerprint}. Someone may be intercepting the "
                "connection; verify the new key with the server's admin before replacing "
                f"the line (ssh-keygen -R '[{self.host}]:{self.port}' -f "
                f"{self.known_hosts})")
        if isinstance(e, paramiko.AuthenticationException):
            how = (f"key file {str(self.key_file)!r}" if self.key_file is not None
                   else "password" if self._password is not None else "SSH agent keys")
            return AuthError(f"{self._where} refused the login with the {how}: "
                             f"{self._text(e)}; check the username and credentials")
        if isinstance(e, paramiko.SSHException) and "No authentication methods" in str(e):
            return AuthError(f"{self._where}: no credentials to log in with; set key_file "
                             "or password (no SSH agent key was offered)")
        return self._translate("connecting", "", e)

    def _connection_lost(self, e: BaseException, s: _Session | None) -> bool:
        if isinstance(e, (EOFError, paramiko.SSHException, SFTPError, TimeoutError,
                          ConnectionError, socket.gaierror,
                          paramiko.ssh_exception.NoValidConnectionsError)):
            return True
        if isinstance(e, OSError) and e.errno in _NET_ERRNOS:
            return True
        # paramiko raises a bare OSError("Socket is closed") on a channel that died.
        return s is not None and (not s.conn.transport.is_active() or s.sftp.sock.closed)

    def _translate(self, action: str, path: str, e: BaseException,
                   s: _Session | None = None) -> SiltaError:
        what = f"{action} {path!r}" if path else action
        if self._connection_lost(e, s):
            if s is not None:
                s.broken = True
                self._retire(s.conn)
            if isinstance(e, TimeoutError):
                why = f"no answer within {self.timeout_seconds:g} s"
            elif isinstance(e, ConnectionRefusedError) or (
                    isinstance(e, paramiko.ssh_exception.NoValidConnectionsError)
                    and all(isinstance(x, ConnectionRefusedError) for x in e.errors.values())):
                why = "connection refused (is the SFTP server running?)"
            elif isinstance(e, socket.gaierror):
                why = f"cannot resolve {self.host!r}: {self._text(e)}"
            else:
                why = f"connection lost ({self._text(e)})"
            return StoreError(f"SFTP {self._where}: {what}: {why}; transient: the work is "
                              "retried", retriable=True)
        if isinstance(e, OSError) and e.errno == errno.ENOENT:
            return NotFoundError("file", path, "it was moved or deleted")
        if isinstance(e, OSError) and e.errno == errno.EACCES:
            return StoreError(f"SFTP {self._where}: {what}: permission denied on the server")
        text = e.strerror if isinstance(e, OSError) and e.strerror else self._text(e)
        return StoreError(f"SFTP {self._where}: {what}: the server refused: {text}")

    # -- paths ---------------------------------------------------------------------------------
    def _remote(self, s: _Session, rel: str) -> str:
        root = s.conn.root
        return f"{root.rstrip('/')}/{rel}" if rel else root

    def _follow(self, s: _Session, rel: str, attr: Any) -> Any:
        """``attr`` of ``rel``, or of its target when it is a link that stays inside root.

        None for a dangling link; UnsafeNameError for a link that leads outside the root.
        """
        if not st.S_ISLNK(attr.st_mode or 0):
            return attr
        try:
            real = s.sftp.normalize(self._remote(s, rel))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None  # a dangling link
            raise
        if not _inside(s.conn.root, real):
            raise UnsafeNameError(f"{safe_display(rel)!r} is a symlink that leads outside "
                                  "the SFTP root; refused")
        try:
            return s.sftp.stat(real)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def _folders(self, s: _Session, path: str, *, create: bool = False) -> None:
        """Check (and with ``create``: make) each folder of ``path``, one part at a time.

        A folder that is a symlink must lead to a folder inside the root (resolved by the
        server); a real folder inside a checked one is inside. Checked folders are
        remembered for the connection. Without ``create`` a missing folder ends the check:
        there is nothing to follow.
        """
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in s.conn.inside:
                continue
            remote = self._remote(s, sub)
            try:
                attr = s.sftp.lstat(remote)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                if not create:
                    return
                try:
                    s.sftp.mkdir(remote)
                except OSError:
                    attr = s.sftp.lstat(remote)  # made meanwhile by someone else
                else:
                    s.conn.inside.add(sub)
                    continue
            if st.S_ISLNK(attr.st_mode or 0):
                real = s.sftp.normalize(remote)
                if not _inside(s.conn.root, real):
                    raise UnsafeNameError(f"folder {sub!r} of {path!r} is a symlink that "
                                          "leads outside the SFTP root; refused")
                attr = s.sftp.stat(real)
            if not st.S_ISDIR(attr.st_mode or 0):
                if not create:
                    return
                raise StoreError(f"SFTP {self._where}: cannot write {path!r}: {sub!r} exists "
                                 "and is not a folder")
            s.conn.inside.add(sub)

    # -- listing -------------------------------------------------------------------------------
    def _glob(self, s: _Session, parts: builtins.list[str]) -> dict[str, FileInfo]:
        found: dict[str, FileInfo] = {}
        listings: dict[str, builtins.list[tuple[str, Any]]] = {}

        def entries(folder: str) -> builtins.list[tuple[str, Any]]:
            if folder not in listings:
                listings[folder] = self._entries(s, folder)
            return listings[folder]

        def walk(folder: str, i: int) -> None:
            part, last = parts[i], i == len(parts) - 1
            if part == "**":
                if last:
                    return  # '**' alone names folders, and only files are listed
                walk(folder, i + 1)
                for name, attr in entries(folder):
                    if st.S_ISDIR(attr.st_mode or 0):
                        walk(_join(folder, name), i)
                return
            for name, attr in entries(folder):
                if not fnmatch.fnmatchcase(name, part):
                    continue
                rel = _join(folder, name)
                if not last:
                    if st.S_ISDIR(attr.st_mode or 0):  # links to folders are not followed
                        walk(rel, i + 1)
                    continue
                try:
                    target = self._follow(s, rel, attr)
                except UnsafeNameError as e:
                    log.warning("sftp %s: skipped: %s", self._where, e.msg)
                    continue
                if target is not None and st.S_ISREG(target.st_mode or 0):
                    found[rel] = FileInfo(rel, target.st_size or 0, _mtime_ns(target))

        walk("", 0)
        return found

    def _entries(self, s: _Session, folder: str) -> builtins.list[tuple[str, Any]]:
        """A folder's safe, visible entries; the server's names are untrusted."""
        try:
            attrs = s.sftp.listdir_attr(self._remote(s, folder))
        except OSError as e:
            if e.errno == errno.ENOENT and folder:
                return []  # removed since its parent was listed
            if e.errno == errno.ENOENT:
                raise StoreError(f"SFTP {self._where}: root folder {s.conn.root!r} does not "
                                 "exist (any more); create it or fix the connector's root",
                                 retriable=True) from e
            raise
        out = []
        for attr in attrs:
            name = attr.filename
            if isinstance(name, bytes):
                log.warning("sftp %s: skipping a name in %s that is not UTF-8: %s",
                            self._where, safe_display(folder or "."), repr(name[:80]))
                continue
            if name in (".", ".."):
                continue
            try:
                check_relative_path(name, what="name")
                if "/" in name:
                    raise UnsafeNameError(f"name {name!r} contains a slash")
            except UnsafeNameError:
                log.warning("sftp %s: skipping unsafe name '%s' in %s", self._where,
                            safe_display(name), safe_display(folder or "."))
                continue
            if name.startswith("."):
                continue  # hidden files and Silta's own .silta-* folders
            out.append((name, attr))
        return out

    # -- writing -------------------------------------------------------------------------------
    def _create(self, s: _Session, remote: str) -> bytes:
        """Open ``remote`` for writing, new: O_EXCL never follows a planted symlink."""
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC | SFTP_FLAG_EXCL
        try:
            return _open_handle(s, remote, flags)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EACCES):
                raise
            # A leftover of an earlier attempt (or a link): remove the entry, then again.
            try:
                s.sftp.remove(remote)
            except OSError:
                raise e from None
            return _open_handle(s, remote, flags)

    def _write_handle(self, s: _Session, handle: bytes, chunks: Iterable[bytes]) -> None:
        """Pipelined WRITE requests; every reply is checked (paramiko's pipelining drops
        some), and errors from ``chunks`` itself pass through unchanged."""
        replies = _Replies()
        pending: deque[int] = deque()
        depth = max(1, self.READ_AHEAD // s.max_write)
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
                        self._check_written(s, replies, pending.popleft())
            while pending:
                self._check_written(s, replies, pending.popleft())
        except BaseException as e:
            # Collect the replies still due, so the channel can remove the temporary
            # file; not when the connection is what failed.
            if pending and e is not s.caller_error and self._connection_lost(e, s):
                s.broken = True
            else:
                try:
                    for num in pending:
                        s.wait(replies, num)
                except Exception:
                    s.broken = True
            raise

    def _check_written(self, s: _Session, replies: _Replies, num: int) -> None:
        t, msg = s.wait(replies, num)
        if t != CMD_STATUS:
            raise SFTPError(f"expected a status reply to a write, got {t}")
        code, text = msg.get_int(), msg.get_text()
        if code != SFTP_OK:
            raise _status_error(code, text)

    def _abort_upload(self, s: _Session, handle: bytes, remote_tmp: str,
                      e: BaseException) -> bool:
        """Close and remove the temporary file on the same channel; False if it cannot."""
        if s.broken or (e is not s.caller_error and self._connection_lost(e, s)):
            s.broken = True
            return False
        try:
            s.sftp._request(CMD_CLOSE, handle)
            s.sftp.remove(remote_tmp)
            return True
        except Exception:
            s.broken = True
            return False

    def _remove_quietly(self, rel: str) -> None:
        def remove(s: _Session, _: int) -> None:
            try:
                s.sftp.remove(self._remote(s, rel))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise

        try:
            self._call("removing", rel, remove, retry=False)
        except SiltaError as e:
            log.warning("sftp %s: could not remove the temporary file %s (%s); it is hidden "
                        "and never read", self._where, safe_display(rel), e)

    def _rename(self, s: _Session, src: str, dst: str, attempt: int) -> None:
        old, new = self._remote(s, src), self._remote(s, dst)
        try:
            if s.posix_rename:
                s.sftp.posix_rename(old, new)
            else:
                self._rename_plain(s, old, new)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            if attempt > 0 and self._exists(s, new) and not self._exists(s, old):
                return  # the lost reply of an earlier attempt: the rename had happened
            raise NotFoundError("file", src) from e

    def _rename_plain(self, s: _Session, old: str, new: str) -> None:
        # SFTP v3 rename refuses an existing target; without posix-rename the swap cannot
        # be atomic, so say so.
        try:
            s.sftp.rename(old, new)
        except OSError as e:
            if e.errno == errno.ENOENT or not self._exists(s, new):
                raise
            log.warning("sftp %s: the server has no posix-rename: replacing %s is not atomic",
                        self._where, safe_display(new))
            s.sftp.remove(new)
            s.sftp.rename(old, new)

    @staticmethod
    def _exists(s: _Session, remote: str) -> bool:
        try:
            s.sftp.lstat(remote)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True


def _open_handle(s: _Session, remote: str, flags: int) -> bytes:
    # Raw handles, not paramiko's SFTPFile: its __del__ sends a CLOSE from whichever
    # thread collects it, on a channel that may by then be leased to another.
    t, msg = s.sftp._request(CMD_OPEN, remote, flags, paramiko.SFTPAttributes())
    if t != CMD_HANDLE:
        raise SFTPError(f"expected a handle, got reply type {t}")
    return bytes(msg.get_binary())


class _ReadStream(io.RawIOBase):
    """A file on the server, read through a window of pipelined READ requests.

    It holds its channel until closed. Losing the connection fails the read with a
    retriable StoreError; it never resumes on another connection.
    """

    def __init__(self, store: SftpStore, s: _Session, handle: bytes, size: int,
                 path: str) -> None:
        super().__init__()
        self._store = store
        self._s = s
        self._handle = handle
        self._size = size  # at open: the file may still grow; EOF comes from the server
        self._path = path
        self._replies = _Replies()
        self._pending: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        self._request = s.max_read
        self._depth = max(1, store.READ_AHEAD // s.max_read)
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
                        raise _status_error(code, text)
                else:
                    raise SFTPError(f"expected data, got reply type {t}")
                self._eof = True  # EOF status or an empty reply
                self._abandon()
                return None
        except SiltaError:
            raise
        except Exception as e:
            self._s.broken = True
            self._error = self._store._translate("reading", self._path, e, self._s)
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
            self._store._release(s, reusable=reusable)
            super().close()


__all__ = ["SftpStore"]
