"""sd_notify: READY=1 after recovery, WATCHDOG=1 from the main loop, STATUS=, STOPPING=1.

No systemd here (SERVICES.md): the tests bind a notify socket of their own (a path, or an
abstract ``@name``), hand it to the real `silta agent run` in $NOTIFY_SOCKET, and read
what arrives.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sdnotify import SystemdNotify, one_line
from agent.state import StateStore
from tests.conftest import write_config
from tests.e2e._cli import SILTA, cli_env, ledger, write_csv

pytestmark = pytest.mark.timeout(120)

KEYS = {"READY", "MAINPID", "STATUS", "WATCHDOG", "STOPPING", "EXTEND_TIMEOUT_USEC"}


@dataclass
class Message:
    at: float  # time.monotonic() when it arrived
    text: str
    seen: dict[str, Any]  # what the test's hook recorded the moment it arrived

    @property
    def fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.text.split("\n"):
            key, eq, value = line.partition("=")
            assert eq and key in KEYS, f"not a KEY=VALUE line of sd_notify: {self.text!r}"
            out[key] = value
        return out


class Receiver:
    """A notify socket of the test's own; a thread collects every datagram."""

    def __init__(self, address: str,
                 hook: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.hook = hook
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8")
            seen = self.hook(text) if self.hook else {}
            with self._lock:
                self._messages.append(Message(time.monotonic(), text, seen))

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, what: str, match: Callable[[Message], bool], timeout: float = 60
                 ) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if match(m):
                    return m
            time.sleep(0.02)
        raise AssertionError(f"no {what} within {timeout} s; got "
                             f"{[m.text for m in self.messages]}")

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self.sock.close()
        if not self.address.startswith("\0"):
            Path(self.address).unlink(missing_ok=True)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short folder for socket paths (sun_path holds ~107 bytes; tmp_path can be longer)."""
    folder = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def receiver(address: str, hook: Callable[[str], dict[str, Any]] | None = None
             ) -> Iterator[Receiver]:
    r = Receiver(address, hook)
    try:
        yield r
    finally:
        r.close()


@contextmanager
def agent_process(root: Path, config: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The real `silta agent run`, with only the systemd variables given here."""
    environ = cli_env()
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        environ.pop(key, None)
    environ.update(env)
    with open(root / "agent.stdout", "wb") as out, open(root / "agent.stderr", "wb") as err:
        proc = subprocess.Popen([*SILTA, "agent", "run", "--config", str(config)], cwd=root,
                                env=environ, stdout=out, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def stderr_of(root: Path) -> str:
    return (root / "agent.stderr").read_text(encoding="utf-8", errors="replace")


def is_ready(m: Message) -> bool:
    return m.fields.get("READY") == "1"


def is_stopping(m: Message) -> bool:
    return m.fields.get("STOPPING") == "1"


def stop(proc: subprocess.Popen[bytes], root: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within 30 s of SIGTERM\n{stderr_of(root)}") from None


def assert_well_formed(messages: list[Message]) -> None:
    for m in messages:
        status = m.fields.get("STATUS")  # .fields refuses a line that is not KEY=VALUE
        if status is not None:
            assert status and status == one_line(status), m.text


# -- the real agent under a notify socket of ours ------------------------------------------
def test_ready_comes_after_recovery_then_watchdog_status_and_stopping(
        tmp_path: Path, sockdir: Path) -> None:
    config = write_config(tmp_path, [{"name": "w", "target": "lake:raw/w", "watch": True}],
                          agent={"heartbeat_seconds": 1})
    state_dir = tmp_path / "state"
    store = StateStore(state_dir)  # an agent that died left this run 'running'
    stale = store.start_run("sync", "w", "schedule", "test-agent")
    store.close()

    def at_arrival(text: str) -> dict[str, Any]:
        if "READY=1" not in text.split("\n"):
            return {}
        return {"run": ledger(state_dir, "SELECT status FROM runs WHERE id=?", (stale,)),
                "beats": ledger(state_dir, "SELECT pid, state FROM heartbeats")}

    with receiver(str(sockdir / "notify"), at_arrival) as notify, \
            agent_process(tmp_path, config, NOTIFY_SOCKET=str(sockdir / "notify"),
                          WATCHDOG_USEC="400000") as proc:
        ready = notify.wait_for("READY=1", is_ready)
        fields = ready.fields
        assert fields["MAINPID"] == str(proc.pid)
        assert fields["STATUS"] == "running: 1 syncs, 1 jobs; watching 1 folders"
        # when READY came, recovery had run and the heartbeat said 'running'
        assert ready.seen["run"] == [{"status": "interrupted"}]
        assert ready.seen["beats"] == [{"pid": proc.pid, "state": "running"}]

        time.sleep(3)
        pings = [m for m in notify.messages if m.text == "WATCHDOG=1"]
        # about 15 arrive (one per 0.2 s); 6 is lenient, yet more than a loop that slept
        # its usual second could send (systemd would have killed that one at 0.4 s)
        assert len([m for m in pings if m.at - ready.at <= 3]) >= 6, \
            [round(m.at - ready.at, 2) for m in pings]
        assert all(m.at > ready.at for m in pings)  # not before READY=1

        write_csv(tmp_path / "inbox" / "a.csv", "id,n", ["1,1", "2,2"])
        notify.wait_for("a STATUS with the finished run", lambda m: m.fields.get(
            "STATUS", "").startswith("running: 0 jobs in flight, last: sync:w ok "), 30)

        assert stop(proc, tmp_path) == 0, stderr_of(tmp_path)
        messages = notify.messages
    stopping = [m for m in messages if is_stopping(m)]
    assert [m.fields for m in stopping] == [
        {"STOPPING": "1", "STATUS": "stopping: finishing in-flight work"}]
    after = messages[messages.index(stopping[0]) + 1:]
    assert not [m.text for m in after if "STATUS" not in m.fields], "pings after STOPPING=1"
    assert len([m for m in messages if is_ready(m)]) == 1
    assert_well_formed(messages)
    log = stderr_of(tmp_path)
    assert "Traceback" not in log and "systemd:" not in log


def test_abstract_socket_and_a_watchdog_meant_for_another_process(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}], agent={"heartbeat_seconds": 1})
    name = f"silta-test-{uuid.uuid4().hex[:12]}"
    with receiver("\0" + name) as notify, \
            agent_process(tmp_path, config, NOTIFY_SOCKET="@" + name,
                          WATCHDOG_USEC="400000", WATCHDOG_PID="1") as proc:
        ready = notify.wait_for("READY=1", is_ready)
        assert ready.fields["MAINPID"] == str(proc.pid)
        assert ready.fields["STATUS"] == "running: 1 syncs, 1 jobs; watching 0 folders"
        # heartbeats go on (STATUS), but WATCHDOG_PID names another process: no pings
        notify.wait_for("a heartbeat STATUS", lambda m: m.fields.get("STATUS", "").startswith(
            "running: 0 jobs in flight"), 10)
        time.sleep(1)
        assert stop(proc, tmp_path) == 0, stderr_of(tmp_path)
        messages = notify.messages
    assert not [m for m in messages if "WATCHDOG" in m.fields]
    assert [m for m in messages if is_stopping(m)]
    assert_well_formed(messages)


def test_no_ready_while_the_lake_root_cannot_be_read(tmp_path: Path, sockdir: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    lake = tmp_path / "lake"
    lake.write_text("a file where the lake's folder should be\n", encoding="utf-8")
    with receiver(str(sockdir / "n")) as notify, \
            agent_process(tmp_path, config, NOTIFY_SOCKET=str(sockdir / "n"),
                          WATCHDOG_USEC="400000") as proc:
        waiting = notify.wait_for("STATUS=waiting for the lake", lambda m: m.fields.get(
            "STATUS", "").startswith("waiting for the lake: "))
        assert waiting.fields == {
            "STATUS": f"waiting for the lake: the lake root {lake} is not a folder"}
        time.sleep(2)
        assert proc.poll() is None, stderr_of(tmp_path)
        assert not [m for m in notify.messages if is_ready(m) or "WATCHDOG" in m.fields]
        # each attempt gives systemd's start timeout the next attempt plus 60 s
        extends = [m.fields for m in notify.messages if "EXTEND_TIMEOUT_USEC" in m.fields]
        assert extends
        assert all(e == {"EXTEND_TIMEOUT_USEC": "65000000"} for e in extends), extends

        lake.unlink()  # the lake is back (its folder is made by the first commit)
        ready = notify.wait_for("READY=1", is_ready, timeout=20)
        assert ready.fields["STATUS"] == "running: 1 syncs, 1 jobs; watching 0 folders"
        assert stop(proc, tmp_path) == 0, stderr_of(tmp_path)
    log = stderr_of(tmp_path)
    assert log.count("waiting for the lake before starting") == 1, log
    assert "the lake answers again after" in log


def test_sigterm_while_waiting_for_the_lake_stops_without_ready(tmp_path: Path,
                                                                sockdir: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    (tmp_path / "lake").write_text("not a folder\n", encoding="utf-8")
    with receiver(str(sockdir / "n")) as notify, \
            agent_process(tmp_path, config, NOTIFY_SOCKET=str(sockdir / "n")) as proc:
        notify.wait_for("STATUS=waiting for the lake", lambda m: m.fields.get(
            "STATUS", "").startswith("waiting for the lake: "))
        started = time.monotonic()
        assert stop(proc, tmp_path) == 0, stderr_of(tmp_path)
        assert time.monotonic() - started < 10
        messages = notify.messages
    assert not [m for m in messages if is_ready(m)]
    assert [m.fields for m in messages if is_stopping(m)] == [
        {"STOPPING": "1", "STATUS": "stopping: stopped before the lake answered"}]


def test_an_unreadable_table_is_named_and_the_agent_still_gets_ready(
        tmp_path: Path, sockdir: Path) -> None:
    config = write_config(tmp_path, [{"name": "good", "target": "lake:raw/good"},
                                     {"name": "bad", "target": "lake:raw/bad"}],
                          agent={"heartbeat_seconds": 1})
    log_dir = tmp_path / "lake" / "raw" / "bad" / "_delta_log"
    log_dir.mkdir(parents=True)
    (log_dir / "00000000000000000000.json").write_text("garbage\n", encoding="utf-8")
    with receiver(str(sockdir / "n")) as notify, \
            agent_process(tmp_path, config, NOTIFY_SOCKET=str(sockdir / "n")) as proc:
        ready = notify.wait_for("READY=1", is_ready)
        assert ready.fields["STATUS"] == ("running: 2 syncs, 2 jobs; watching 0 folders; "
                                          "tables unreadable: sync:bad")
        beat = notify.wait_for("a heartbeat STATUS", lambda m: m.fields.get(
            "STATUS", "").startswith("running: 0 jobs"), 10)
        assert beat.fields["STATUS"].endswith("; tables unreadable at start: sync:bad")
        assert stop(proc, tmp_path) == 0, stderr_of(tmp_path)
        messages = notify.messages
    assert_well_formed(messages)
    log = stderr_of(tmp_path)
    assert "sync bad: its table 'raw/bad' cannot be read" in log
    assert "sync good:" not in log


# -- SystemdNotify on its own ---------------------------------------------------------------
def recv_all(sock: socket.socket, wait: float = 0.2) -> list[str]:
    sock.settimeout(wait)
    got: list[str] = []
    while True:
        try:
            got.append(sock.recv(65536).decode("utf-8"))
        except TimeoutError:
            return got


@contextmanager
def bound(address: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    try:
        yield sock
    finally:
        sock.close()
        if not address.startswith("\0"):
            Path(address).unlink(missing_ok=True)


def test_without_notify_socket_nothing_is_opened_or_sent(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    def no_socket(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened without NOTIFY_SOCKET")

    monkeypatch.setattr(socket, "socket", no_socket)  # the module agent.sdnotify uses
    for env in ({}, {"WATCHDOG_USEC": "400000"}, {"NOTIFY_SOCKET": ""}):
        sd = SystemdNotify(env)
        assert not sd.enabled and sd.watchdog_seconds is None
        assert sd.loop_seconds(1.0) == 1.0
        sd.ready("running")
        sd.status("x")
        sd.watchdog()
        sd.stopping()


def test_the_messages_on_a_path_socket(sockdir: Path) -> None:
    path = str(sockdir / "n")
    with bound(path) as sock:
        sd = SystemdNotify({"NOTIFY_SOCKET": path})
        assert sd.enabled and sd.watchdog_seconds is None
        sd.ready("running: 1 syncs")
        sd.status("running: 1 syncs")  # unchanged: not sent again
        sd.status("two\nlines\r\tand\x1b[31m colour")
        sd.watchdog()  # no WATCHDOG_USEC: no pings
        sd.stopping()
        assert recv_all(sock) == [
            f"READY=1\nMAINPID={os.getpid()}\nSTATUS=running: 1 syncs",
            "STATUS=two lines and [31m colour",
            "STOPPING=1\nSTATUS=stopping: finishing in-flight work",
        ]


def test_an_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"silta-unit-{uuid.uuid4().hex[:12]}"
    with bound("\0" + name) as sock:
        SystemdNotify({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert recv_all(sock) == ["STATUS=hello"]


@pytest.mark.parametrize(("usec", "pid", "seconds"), [
    ("400000", None, 0.2),
    ("400000", "self", 0.2),
    ("400000", "other", None),  # inherited by a child: not ours to ping
    ("0", None, None),
    ("soon", None, None),
    ("400000", "one", None),
])
def test_watchdog_is_on_only_as_sd_watchdog_enabled_says(
        sockdir: Path, usec: str, pid: str | None, seconds: float | None) -> None:
    path = str(sockdir / "n")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(
            pid, pid)
    with bound(path) as sock:
        sd = SystemdNotify(env)
        assert sd.watchdog_seconds == seconds
        sd.watchdog()
        assert recv_all(sock) == ([] if seconds is None else ["WATCHDOG=1"])


def test_watchdog_is_sent_at_most_every_half_interval_and_never_after_stopping(
        sockdir: Path) -> None:
    path = str(sockdir / "n")
    with bound(path) as sock:
        sd = SystemdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"})
        assert sd.watchdog_seconds == 0.3
        assert sd.loop_seconds(1.0) == 0.15  # the loop wakes twice per ping interval
        assert SystemdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"}
                             ).loop_seconds(1.0) == 1.0
        sd.watchdog()
        sd.watchdog()
        assert recv_all(sock, 0.1) == ["WATCHDOG=1"]
        time.sleep(0.3)
        sd.watchdog()
        sd.watchdog()
        assert recv_all(sock, 0.1) == ["WATCHDOG=1"]
        sd.stopping()
        time.sleep(0.35)
        sd.watchdog()
        assert recv_all(sock, 0.1) == ["STOPPING=1\nSTATUS=stopping: finishing in-flight work"]


def test_a_vanished_socket_is_logged_once_and_never_raises(
        sockdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(sockdir / "n")
    with bound(path):
        sd = SystemdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2"})
    assert not Path(path).exists()  # the receiver went away
    with caplog.at_level(logging.INFO, logger="silta.agent"):
        sd.ready("running")
        for i in range(5):
            sd.status(f"running {i}")
            sd.watchdog()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("systemd: cannot send READY to NOTIFY_SOCKET: ")
        with bound(path) as sock:  # back (systemd re-executed): one line says so
            sd.status("back")
            assert recv_all(sock) == ["STATUS=back"]
        assert [r.getMessage() for r in caplog.records][-1] == \
            "systemd: notifications get through again"


def test_status_text_is_one_short_line() -> None:
    assert one_line("a\n\nb\x00c\u0085d   e") == "a b c d e"
    long = one_line("x" * 500)
    assert len(long) == 200 and long.endswith("...")
