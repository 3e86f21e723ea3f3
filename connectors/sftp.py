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

This module is what a reader of the connector needs: the store, its retry policy,
connecting and the translation of errors. The paramiko plumbing (connections, leased
channels, replies) is in :mod:`connectors._sftp_session`; the pipelined read stream and
upload in :mod:`connectors._sftp_stream`.
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
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar, cast

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    SFTP_FLAG_READ,
    SFTPError,
)

from connectors._sftp_session import (
    Connection,
    RejectUnknownHost,
    Session,
    SftpClient,
    Transport,
    connection_lost,
    inside,
    join,
    mtime_ns,
    open_handle,
)
from connectors._sftp_stream import ReadStream, abort_upload, create_file, write_handle
from connectors.abc import FileInfo, FileStore, Option
from connectors.errors import AuthError, NotFoundError, SiltaError, StoreError, UnsafeNameError
from connectors.names import check_relative_path, safe_display

log = logging.getLogger("silta.sftp")

T = TypeVar("T")

_BACKOFF_MAX = 30.0
_MAX_IDLE_CHANNELS = 4
#: the SFTP v3 draft's minimum; servers announce more through limits@openssh.com
_MIN_REQUEST = 32_768


@dataclass(frozen=True)
class Refused:
    """A listed name the store will not read, and why (it is reported, not skipped)."""

    reason: str
    raw: str


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
        self._conn: Connection | None = None
        self._idle: list[Session] = []

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

        def stat(s: Session, _: int) -> FileInfo | None:
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
            return FileInfo(path, attr.st_size or 0, mtime_ns(attr))

        return self._call("stat", path, stat)

    def open_read(self, path: str) -> BinaryIO:
        check_relative_path(path)

        def open_(s: Session, _: int) -> ReadStream:
            self._folders(s, path)
            remote = self._remote(s, path)
            attr = self._follow(s, path, s.sftp.lstat(remote))
            if attr is None or not st.S_ISREG(attr.st_mode or 0):
                raise NotFoundError("file", path, "it is not a regular file")
            handle = open_handle(s, remote, SFTP_FLAG_READ)
            return ReadStream(
                s, handle, attr.st_size or 0, path, read_ahead=self.READ_AHEAD,
                fail=lambda e: self._translate("reading", path, e, s),
                release=lambda reusable: self._release(s, reusable=reusable))

        # The stream keeps the channel until it is closed.
        raw = self._call("opening", path, open_, keep=True)
        return cast(BinaryIO, io.BufferedReader(raw, buffer_size=256 << 10))

    def write_atomic(self, path: str, chunks: Iterable[bytes], *, tmp_name: str | None = None,
                     on_staged: Callable[[FileInfo], None] | None = None) -> FileInfo:
        check_relative_path(path)
        folder, base = posixpath.split(path)
        tmp_rel = (check_relative_path(tmp_name, what="temporary name") if tmp_name is not None
                   else join(folder, f".{base}.{uuid.uuid4().hex[:8]}.silta.tmp"))
        started = False
        leftover = False

        def upload(s: Session, _: int) -> FileInfo:
            nonlocal started, leftover
            self._folders(s, path, create=True)
            self._folders(s, tmp_rel, create=True)
            remote_tmp = self._remote(s, tmp_rel)
            handle = create_file(s, remote_tmp)
            started = True  # the chunks are being consumed: no retry from here on
            try:
                write_handle(s, handle, chunks, read_ahead=self.READ_AHEAD)
                if s.fsync:
                    s.sftp._request(CMD_EXTENDED, "fsync@openssh.com", handle)
                s.sftp._request(CMD_CLOSE, handle)
                attr = s.sftp.stat(remote_tmp)
            except BaseException as e:
                leftover = not abort_upload(s, handle, remote_tmp, e)
                raise
            return FileInfo(tmp_rel, attr.st_size or 0, mtime_ns(attr))

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

        def move(s: Session, attempt: int) -> None:
            self._folders(s, src)
            self._folders(s, dst, create=True)
            self._rename(s, src, dst, attempt)

        self._call("moving", src, move)

    def delete(self, path: str) -> None:
        check_relative_path(path)

        def delete(s: Session, _: int) -> None:
            self._folders(s, path)
            try:
                s.sftp.remove(self._remote(s, path))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise

        self._call("deleting", path, delete)

    def check(self) -> str:
        def ping(s: Session, _: int) -> tuple[str, str, float]:
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
    def _call(self, action: str, path: str, fn: Callable[[Session, int], T], *,
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

    def _attempt(self, action: str, path: str, fn: Callable[[Session, int], T],
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
    def _acquire(self) -> Session:
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

    def _release(self, s: Session, *, reusable: bool) -> None:
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

    def _retire(self, conn: Connection) -> None:
        with self._lock:
            self._retire_locked(conn)

    def _retire_locked(self, conn: Connection) -> None:
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

    def _connect(self) -> Connection:
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
        policy = RejectUnknownHost()
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
                look_for_keys=False, transport_factory=Transport)
            conn = Connection(client)
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

    def _open_channel(self, conn: Connection) -> Session:
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
            sftp = SftpClient(chan)  # the version exchange is bounded by the timeout
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
        return Session(conn, sftp, max_read, max_write)

    def _resolve_root(self, s: Session) -> str:
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

    def _translate(self, action: str, path: str, e: BaseException,
                   s: Session | None = None) -> SiltaError:
        what = f"{action} {path!r}" if path else action
        if connection_lost(e, s):
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
    def _remote(self, s: Session, rel: str) -> str:
        root = s.conn.root
        return f"{root.rstrip('/')}/{rel}" if rel else root

    def _follow(self, s: Session, rel: str, attr: Any) -> Any:
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
        if not inside(s.conn.root, real):
            raise UnsafeNameError(f"{safe_display(rel)!r} is a symlink that leads outside "
                                  "the SFTP root; refused")
        try:
            return s.sftp.stat(real)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise

    def _folders(self, s: Session, path: str, *, create: bool = False) -> None:
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
                if not inside(s.conn.root, real):
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
    def _glob(self, s: Session, parts: builtins.list[str]) -> dict[str, FileInfo]:
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
                    if not isinstance(attr, Refused) and st.S_ISDIR(attr.st_mode or 0):
                        walk(join(folder, name), i)
                return
            for name, attr in entries(folder):
                if isinstance(attr, Refused):
                    if last and fnmatch.fnmatchcase(attr.raw, part):
                        rel = join(safe_display(folder), name)  # shown, never opened
                        found[rel] = FileInfo(rel, 0, 0, refused=attr.reason)
                    continue
                if not fnmatch.fnmatchcase(name, part):
                    continue
                rel = join(folder, name)
                if not last:
                    if st.S_ISDIR(attr.st_mode or 0):  # links to folders are not followed
                        walk(rel, i + 1)
                    continue
                try:
                    target = self._follow(s, rel, attr)
                except UnsafeNameError as e:
                    log.warning("sftp %s: skipped: %s", self._where, e.msg)
                    found[rel] = FileInfo(safe_display(rel), 0, 0, refused=e.msg)
                    continue
                if target is not None and st.S_ISREG(target.st_mode or 0):
                    found[rel] = FileInfo(rel, target.st_size or 0, mtime_ns(target))

        walk("", 0)
        return found

    def _entries(self, s: Session, folder: str) -> builtins.list[tuple[str, Any]]:
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
                out.append((repr(name[:80]), Refused(
                    "its name is not UTF-8", name.decode("utf-8", "surrogateescape"))))
                continue
            if name in (".", ".."):
                continue
            try:
                check_relative_path(name, what="name")
                if "/" in name:
                    raise UnsafeNameError(f"name {name!r} contains a slash")
            except UnsafeNameError as e:
                log.warning("sftp %s: skipping unsafe name '%s' in %s", self._where,
                            safe_display(name), safe_display(folder or "."))
                out.append((safe_display(name), Refused(e.msg, name)))
                continue
            if name.startswith("."):
                continue  # hidden files and Silta's own .silta-* folders
            out.append((name, attr))
        return out

    # -- removing and renaming ---------------------------------------------------------------
    def _remove_quietly(self, rel: str) -> None:
        def remove(s: Session, _: int) -> None:
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

    def _rename(self, s: Session, src: str, dst: str, attempt: int) -> None:
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

    def _rename_plain(self, s: Session, old: str, new: str) -> None:
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
    def _exists(s: Session, remote: str) -> bool:
        try:
            s.sftp.lstat(remote)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True


__all__ = ["SftpStore"]
