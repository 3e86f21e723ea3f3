"""OpenSSH's sshd on loopback with its own config, for the SFTP connector (SERVICES.md).

``start_sshd(folder)`` is shared with ``bench/sftp_throughput.py``. The server gets its own
ed25519 host key and a client key in ``folder``; it serves SFTP (internal-sftp) to the
current user by key only. ``stop()`` ends the listener and every session it forked (each
session is its own process group, so they are found by parent pid), so a client sees the
connection drop; ``start()`` brings it back on the same port with the same host key.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port, wait_for_port

SSHD = "/usr/sbin/sshd"
INSTALL_HINT = ("run .ci/run (it installs every server the tests need) or "
                "`apt-get install openssh-server`")

__all__ = ["sftp_root", "sftp_server", "sftp_store"]


@dataclass
class SshServer:
    """A running sshd; ``root`` is a scratch folder to use as an SFTP root."""

    host: str
    port: int
    username: str
    key_file: Path
    known_hosts: Path
    root: Path
    folder: Path
    host_key: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def known_hosts_line(self, port: int | None = None) -> str:
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{port or self.port} {key_type} {key}\n"

    def known_hosts_for(self, port: int) -> Path:
        """A known_hosts file naming this server's key at ``port`` (a proxy in front)."""
        path = self.folder / f"known_hosts_{port}"
        path.write_text(self.known_hosts_line(port))
        return path

    def start(self) -> None:
        if self.running:
            return
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "MaxSessions 32",
            "MaxStartups 50",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
        ]) + "\n")
        self._log = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                log = (self.folder / "sshd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sshd exited with {code}:\n{log}")
            try:
                wait_for_port(self.port, timeout=0.5, host=self.host)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        """End the listener and all its sessions: clients see their connection drop."""
        if self._proc is None:
            return
        sessions = _descendants(self._proc.pid)
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def store(self, root: Path | str | None = None, *, port: int | None = None,
              **options: Any) -> Any:
        """An SftpStore logged in to this server (through ``port``, e.g. a proxy)."""
        from connectors.sftp import SftpStore

        kwargs: dict[str, Any] = {
            "username": self.username, "key_file": self.key_file,
            "known_hosts": (self.known_hosts if port is None
                            else self.known_hosts_for(port)),
            "root": str(Path(root if root is not None else self.root).absolute()),
            "timeout_seconds": 10.0, "retries": 1,
        }
        kwargs.update(options)
        store = SftpStore(self.host, port or self.port, **kwargs)
        store.backoff_seconds = 0.05  # the tests never wait for a real backoff
        return store


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's sessions call setsid, so not its group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "silta-test",
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL)


def start_sshd(folder: Path) -> SshServer:
    """Generate keys in ``folder`` and start sshd on a free port."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        raise RuntimeError(f"{SSHD} or ssh-keygen is missing: {INSTALL_HINT}")
    folder.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_ed25519", folder / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    root = folder / "root"
    root.mkdir()
    server = SshServer(host="127.0.0.1", port=free_port(), username=getpass.getuser(),
                       key_file=client_key, known_hosts=folder / "known_hosts", root=root,
                       folder=folder, host_key=host_key)
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server.port = free_port()  # taken since it was found free: another one
    server.known_hosts.write_text(server.known_hosts_line())
    return server


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """sshd serving SFTP on loopback for the whole session; never skipped."""
    if not os.access(SSHD, os.X_OK):
        pytest.fail(f"{SSHD} is missing: {INSTALL_HINT}", pytrace=False)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def sftp_root(sftp_server: SshServer, tmp_path: Path) -> Path:
    """An empty folder of this test's own, to use as the SFTP root; the server is up."""
    sftp_server.start()  # a test that stopped it may have failed before starting it again
    root = tmp_path / "sftp-root"
    root.mkdir()
    return root


@pytest.fixture
def sftp_store(sftp_server: SshServer, sftp_root: Path) -> Iterator[Any]:
    """An SftpStore on this test's own root."""
    store = sftp_server.store(sftp_root)
    yield store
    store.close()
