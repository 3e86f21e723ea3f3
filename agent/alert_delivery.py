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
from typing import Any

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

    def pump(self, at: dt.datetime | None = None) -> int:
        """Enqueue repeats, then try every due notification once; returns how many went.

        ``at`` is the clock (default now). A notice that waited behind one delivered in
        this round goes in the same round. A channel that failed with a retriable error
        is not tried again in this round (its next notices would wait for the same
        timeout), so a round blocks for at most one timeout per channel. After
        :meth:`stop` a round ends before its next notice.
        """
        clock = at or dt.datetime.now(dt.UTC)
        self.book.enqueue_repeats(at=clock)
        sent = 0
        tried: set[int] = set()
        down: set[str] = set()
        while not self._stop.is_set():
            due = [n for n in self.book.due_notifications(at=clock)
                   if n["id"] not in tried and n["channel"] not in down]
            if not due:
                break
            for n in due:
                if self._stop.is_set():
                    break
                if n["channel"] in down:
                    continue  # failed a moment ago in this round: it waits for the next
                tried.add(int(n["id"]))
                if self._send(n, clock, down):
                    sent += 1
        return sent

    def _send(self, n: dict[str, Any], clock: dt.datetime, down: set[str]) -> bool:
        channel = self._channels.get(n["channel"])
        if channel is None:
            self.book.failed(n["id"], f"channel {n['channel']!r} is no longer configured",
                             retry_in=None, at=clock)
            log.error("alert %s: %s notification to %s given up: the channel is no longer "
                      "configured", n["alert_id"], n["event"], n["channel"])
            return False
        try:
            send(channel, self.book.notice(n))
        except SiltaError as e:
            if e.retriable:
                down.add(channel.name)
            self._failed(n, e, clock)
            return False
        except Exception as e:  # a bug in sending must not stop the other notices
            log.exception("alert %s: %s notification to %s given up: internal error",
                          n["alert_id"], n["event"], channel.name)
            # only the type: the message of an unknown error may quote a secret
            self.book.failed(n["id"], f"internal error ({type(e).__name__}); see the "
                             "agent's log", retry_in=None, at=clock)
            return False
        self.book.delivered(n["id"])
        log.info("alert %d: %s notification delivered to %s", n["alert_id"], n["event"],
                 channel.name)
        return True

    def _failed(self, n: dict[str, Any], e: SiltaError, clock: dt.datetime) -> None:
        created = dt.datetime.fromisoformat(str(n["created_at"]))
        age = (clock - created).total_seconds()
        attempts = int(n["attempts"]) + 1
        if e.retriable and age < self.section.retry_seconds:
            delay = retry_delay(attempts)
            self.book.failed(int(n["id"]), str(e), retry_in=delay, at=clock)
            log.warning("alert %s: %s notification to %s failed (attempt %d), retried in "
                        "%.0fs: %s", n["alert_id"], n["event"], n["channel"], attempts, delay, e)
        else:
            self.book.failed(int(n["id"]), str(e), retry_in=None, at=clock)
            why = "not retriable" if not e.retriable else f"retried for {self.section.retry_for}"
            log.error("alert %s: %s notification to %s given up (%s): %s", n["alert_id"],
                      n["event"], n["channel"], why, e)

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> None:
        """Deliver on a thread of its own: a round at once, then every few seconds."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread after the notice it is sending; True when it has ended.

        Until the next :meth:`start`, :meth:`pump` sends nothing either.
        """
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump()
            except SiltaError as e:
                log.error("notifications not sent this round: %s", e)
            except Exception:  # a bug here must not stop alerting for good
                log.exception("notifier: internal error; trying again")
            self._stop.wait(POLL_SECONDS)


def notify_once(notifier: Notifier) -> None:
    """One delivery round at the end of a pass or a CLI run; what fails waits in the
    outbox for the agent, and a state store that cannot be read does not fail the work
    that is already done."""
    try:
        notifier.pump()
    except SiltaError as e:
        log.error("alert notifications not sent: %s (they wait for the next round)", e)
