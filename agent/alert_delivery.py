"""Delivering the notification outbox: on a thread of its own, retried, never blocking.

The agent's main loop never waits on a webhook or a mail server: a :class:`Notifier`
thread takes the due notifications, sends each with the channel's timeout, and either
marks it sent or schedules the next attempt (exponential backoff) until ``retry_for``
has passed; then it is given up with an error in the log (the alert itself stays, and
``silta alerts show`` lists the failed delivery). Notifications live in the state
store, so a restart goes on where the last process stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from agent.alerts import AlertBook
from agent.notify import retry_delay, send
from agent.notify_config import AlertsSection
from connectors.errors import SiltaError

log = logging.getLogger("silta.alerts")
POLL_SECONDS = 2.0


class Notifier:
    """Sends what the alert book owes, from the caller's thread (:meth:`pump`) or its own."""

    def __init__(self, book: AlertBook, section: AlertsSection) -> None:
        self.book = book
        self.section = section
        self._channels = {c.name: c for c in section.channels}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pump(self) -> int:
        """Enqueue repeats, then try every due notification once; returns how many went."""
        self.book.enqueue_repeats()
        sent = 0
        for n in self.book.due_notifications():
            channel = self._channels.get(n["channel"])
            if channel is None:
                self.book.failed(n["id"], f"channel {n['channel']!r} is no longer configured",
                                 retry_in=None)
                continue
            try:
                send(channel, self.book.notice(n))
            except SiltaError as e:
                self._failed(n, e)
                continue
            self.book.delivered(n["id"])
            sent += 1
            log.info("alert %d: %s notification delivered to %s", n["alert_id"], n["event"],
                     channel.name)
        return sent

    def _failed(self, n: dict[str, object], e: SiltaError) -> None:
        created = dt.datetime.fromisoformat(str(n["created_at"]))
        age = (dt.datetime.now(dt.UTC) - created).total_seconds()
        attempts = int(str(n["attempts"])) + 1
        if e.retriable and age < self.section.retry_seconds:
            delay = retry_delay(attempts)
            self.book.failed(int(str(n["id"])), str(e), retry_in=delay)
            log.warning("alert %s: %s notification to %s failed (attempt %d), retried in "
                        "%.0fs: %s", n["alert_id"], n["event"], n["channel"], attempts, delay, e)
        else:
            self.book.failed(int(str(n["id"])), str(e), retry_in=None)
            why = "not retriable" if not e.retriable else f"retried for {self.section.retry_for}"
            log.error("alert %s: %s notification to %s given up (%s): %s", n["alert_id"],
                      n["event"], n["channel"], why, e)

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.pump()
            except SiltaError as e:
                log.error("notifications not sent this round: %s", e)
            except Exception:  # a bug here must not stop alerting for good
                log.exception("notifier: internal error; trying again")
