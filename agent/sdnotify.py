"""Telling systemd how the agent is doing (``sd_notify(3)``), and what READY=1 waits for.

The protocol, without python-systemd: each message is one datagram of ``KEY=VALUE`` lines
sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract
namespace). No ``$NOTIFY_SOCKET``: the agent was not started by systemd (or not with
``Type=notify``), and every call here does nothing. A message that cannot be sent is logged
(once, until a send works again) and never stops the agent.

What the service sends, and when (``agent/service.py``):

- ``STATUS=waiting for the lake: <error>`` while the lake root does not answer at start-up
  (no READY yet, see :func:`wait_for_lake`);
- ``READY=1`` + ``MAINPID=`` + ``STATUS=running: ...`` once recovery is done (stale runs
  interrupted, ML recovery, the lake answers, the sync tables opened) and the loop starts;
- ``WATCHDOG=1`` from the main loop itself, at most every ``WATCHDOG_USEC / 2``: a stuck
  loop stops it, and systemd (``WatchdogSec=``) restarts the agent;
- ``STATUS=running: N jobs in flight, last: ...`` with each heartbeat;
- ``STOPPING=1`` + ``STATUS=stopping: ...`` first thing on shutdown.

STATUS text is one line of counts, job names and, while waiting, the lake's error (which
names the lake but no secret: :class:`connectors.lake.DeltaLake` redacts its errors).
Only the main thread uses a :class:`SystemdNotify`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from agent.config import SyncConfig
from agent.outcome import JobOutcome, SyncOutcome
from connectors.errors import SiltaError
from connectors.lake import INTERNAL_PREFIX, DeltaLake

log = logging.getLogger("silta.agent")

#: how often the start-up waits to ask the lake again
LAKE_RETRY_SECONDS = 5.0
#: how long past the next attempt systemd waits for READY=1 while the lake is away
START_GRACE = 60.0
#: a table name that never exists: opening it asks an object store for one listing
_PROBE = f"{INTERNAL_PREFIX}/readiness-probe"
_STATUS_MAX = 200
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SEND_TIMEOUT = 2.0


def one_line(text: str, limit: int = _STATUS_MAX) -> str:
    """``text`` as one printable line (control characters and newlines become spaces)."""
    line = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _address(value: str) -> str | None:
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # the abstract namespace
    if value.startswith("/"):
        return value
    return None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 (half of WATCHDOG_USEC), or None when it is off for us.

    Like ``sd_watchdog_enabled``: WATCHDOG_USEC must be a positive integer, and a
    WATCHDOG_PID that is set must be this process (a child that inherited the variables
    is not watched).
    """
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        if usec or pid:
            log.warning("systemd: ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r (not numbers)",
                        one_line(usec, 40), one_line(pid, 40))
        return None
    return value / 2e6 if value > 0 else None


class SystemdNotify:
    """``sd_notify`` for the agent's main process; a no-op outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw)
        if raw and self.address is None:
            log.warning("systemd: NOTIFY_SOCKET=%r is not a socket path or @name; not "
                        "notifying", one_line(raw, 80))
        #: seconds between two WATCHDOG=1, or None when systemd does not watch us
        self.watchdog_seconds = _watchdog_seconds(env) if self.address else None
        self._last_watchdog: float | None = None
        self._last_status: str | None = None
        self._stopping = False
        self._failing = False  # the last send failed (and that was logged)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def loop_seconds(self, default: float) -> float:
        """How long the main loop may sleep: ``default``, or less when the watchdog needs
        it (half the WATCHDOG=1 interval, so a send is never late by a whole interval)."""
        if self.watchdog_seconds is None:
            return default
        return min(default, self.watchdog_seconds / 2)

    def ready(self, status: str) -> None:
        self._last_status = one_line(status)
        self._send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={self._last_status}")

    def status(self, text: str) -> None:
        """STATUS=, when it differs from the last one sent."""
        line = one_line(text)
        if line != self._last_status:
            self._last_status = line
            self._send(f"STATUS={line}")

    def extend_start(self, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC=: systemd's start timeout runs ``seconds`` from now."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> None:
        """WATCHDOG=1, unless one went out less than ``watchdog_seconds`` ago."""
        if self.watchdog_seconds is None or self._stopping:
            return  # after STOPPING=1 systemd no longer watches; a ping would arm it again
        clock = time.monotonic()
        if self._last_watchdog is not None and \
                clock - self._last_watchdog < self.watchdog_seconds:
            return
        self._last_watchdog = clock
        self._send("WATCHDOG=1")

    def stopping(self, status: str = "stopping: finishing in-flight work") -> None:
        self._stopping = True
        self._last_status = one_line(status)
        self._send(f"STOPPING=1\nSTATUS={self._last_status}")

    def _send(self, message: str) -> None:
        # One socket per message, like libsystemd: nothing stays open between messages.
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.settimeout(_SEND_TIMEOUT)  # a receiver that stopped reading: 2 s at most
                s.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError as e:
            if not self._failing:
                log.warning("systemd: cannot send %s to NOTIFY_SOCKET: %s (the agent goes on; "
                            "not logged again until a message gets through)",
                            message.partition("=")[0], e.strerror or type(e).__name__)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            log.info("systemd: notifications get through again")


# -- what READY=1 waits for ------------------------------------------------------------------
def lake_root_error(lake: DeltaLake) -> str | None:
    """Why the lake's root does not answer, or None when it does.

    A local root that does not exist yet is fine (the first commit creates it); one that
    is not a folder, or cannot be listed, is not. An object store is asked for one
    listing (opening a table that is never there), which fails when it cannot be reached,
    refuses the credentials, or its bucket/container is missing.
    """
    if lake.is_local:
        root = Path(lake.uri.removeprefix("file://"))
        try:
            if not stat.S_ISDIR(os.stat(root).st_mode):
                return f"the lake root {root} is not a folder"
            with os.scandir(root) as entries:
                next(entries, None)
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"the lake root {root} cannot be read: {e.strerror or e}"
        return None
    try:
        lake.open(_PROBE)
    except SiltaError as e:
        return str(e)
    return None


def wait_for_lake(lake: DeltaLake, stop: threading.Event, sd: SystemdNotify,
                  retry_seconds: float = LAKE_RETRY_SECONDS) -> bool:
    """Block until the lake root answers (True) or ``stop`` is set first (False).

    Chosen over "ready and degraded": every job reads or writes the lake, so an agent
    that cannot reach it is not ready. It waits here, asking again every
    ``retry_seconds`` with ``STATUS=waiting for the lake: ...`` and no READY=1: `systemctl
    status` says why. Each attempt extends systemd's start timeout by ``START_GRACE``
    (EXTEND_TIMEOUT_USEC), so a lake that is away at boot is waited for without a restart
    every TimeoutStartSec, while a start-up that hangs elsewhere still times out. A lake
    that goes away later, while running, is handled by the jobs (retried, records kept).
    """
    started, said = time.monotonic(), None
    while not stop.is_set():
        error = lake_root_error(lake)
        if error is None:
            if said is not None:
                log.info("the lake answers again after %.0f s", time.monotonic() - started)
            return True
        line = one_line(error)
        if line != said:  # logged when it changes, not every few seconds
            log.error("waiting for the lake before starting (asked again every %g s): %s",
                      retry_seconds, error)
            said = line
        sd.status(f"waiting for the lake: {line}")
        sd.extend_start(retry_seconds + START_GRACE)
        stop.wait(retry_seconds)
    return False


def unreadable_tables(lake: DeltaLake, syncs: Iterable[SyncConfig]) -> list[str]:
    """Job ids of syncs whose Delta table exists but cannot be opened (logged as errors).

    A table that does not exist yet is fine: the sync's first commit creates it.
    """
    errors: dict[str, str | None] = {}
    bad: list[str] = []
    for s in syncs:
        if s.table not in errors:
            try:
                lake.open(s.table)
                errors[s.table] = None
            except SiltaError as e:
                errors[s.table] = str(e)
                log.error("sync %s: its table %r cannot be read: %s", s.name, s.table, e)
        if errors[s.table] is not None:
            bad.append(f"sync:{s.name}")
    return bad


def ready_status(syncs: int, jobs: int, folders: int, unreadable: list[str]) -> str:
    """The STATUS line sent with READY=1."""
    text = f"running: {syncs} syncs, {jobs} jobs; watching {folders} folders"
    if unreadable:
        text += f"; tables unreadable: {', '.join(unreadable)}"
    return text


def job_label(outcome: SyncOutcome | JobOutcome) -> str:
    """``sync:x ok``: the job and how its run ended."""
    job = f"sync:{outcome.sync}" if isinstance(outcome, SyncOutcome) else \
        f"{outcome.kind}:{outcome.name}"
    return f"{job} {outcome.status}"


def running_status(in_flight: int, last: str | None, ago: float | None,
                   unreadable: list[str]) -> str:
    """The STATUS line of a running agent: ``running: 2 jobs in flight, last: sync:x ok
    12s ago`` (and the syncs whose table could not be read at start)."""
    text = f"running: {in_flight} job{'' if in_flight == 1 else 's'} in flight"
    if last is not None and ago is not None:
        text += f", last: {last} {ago:.0f}s ago"
    if unreadable:
        text += f"; tables unreadable at start: {', '.join(unreadable)}"
    return text
