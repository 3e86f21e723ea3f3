"""Alerts end to end: the alert book in a real state store, notifications delivered by the
:class:`Notifier` to real servers on loopback (an HTTP server, aiosmtpd), restarts as a
new store, book and notifier on the same folder. Nothing is mocked.

Time: instead of sleeping through repeat intervals, silences and backoff, the tests pass a
moved clock (``pump(at=...)``, ``enqueue_repeats(at=...)``); the book compares that clock
with the times it stored, so "two hours later" is exact and instant.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from agent.alert_delivery import Notifier
from agent.alerts import AlertBook, CheckResult
from agent.notify_config import AlertsSection
from agent.state import StateStore
from connectors.errors import NotFoundError, UsageError
from tests.servers import free_port

HOOK_PATH = "/hooks/T0000/XXXXsecretpathtokenXXXX"
AGENT = "stats-agent-1"
HOUR = 3600.0

# --- real servers ------------------------------------------------------------------------


@dataclass
class Hook:
    """A loopback webhook server recording every POST (path, JSON body). It answers
    ``status``, and can be stopped (its port closed) and started again on the same port."""

    port: int = 0
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.posts.append((self.path, json.loads(raw)))
                body = b"ok" if hook.status < 300 else f"refused {self.path}".encode()
                self.send_response(hook.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        for _ in range(20):  # free_port() can race with another process
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port or free_port()),
                                                   Handler)
                break
            except OSError:
                if self.port:
                    raise
        assert self._server is not None, "no free port for the webhook server"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def events(self, path: str = HOOK_PATH) -> list[tuple[int, str]]:
        """(alert id, event) of every notice posted to ``path``, in arrival order."""
        return [(b["alert_id"], b["event"]) for p, b in self.posts if p == path]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    server.start()
    yield server
    server.stop()


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def events(self) -> list[tuple[int, str]]:
        out = []
        for env in self.envelopes:
            assert isinstance(env.content, bytes)
            msg = email.message_from_bytes(env.content, policy=email.policy.default)
            out.append((int(msg["X-Silta-Alert"]), str(msg["X-Silta-Event"])))
        return out


@dataclass
class Smtp:
    """An aiosmtpd server on loopback that can be stopped and started on the same port."""

    inbox: Inbox
    port: int
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    server = Smtp(Inbox(), free_port())
    server.start()
    yield server
    server.stop()


class Hanging:
    """Accepts TCP connections and never answers (a hung webhook)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read, never answered

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hanging() -> Iterator[Callable[[], Hanging]]:
    made: list[Hanging] = []

    def make() -> Hanging:
        made.append(Hanging())
        return made[-1]

    yield make
    for h in made:
        h.close()


# --- the parts under test ----------------------------------------------------------------


def webhook(hook: Hook, name: str = "hook", path: str = HOOK_PATH, **kw: Any
            ) -> dict[str, Any]:
    return {"type": "webhook", "name": name, "url": hook.url(path), **kw}


def mail(smtp: Smtp, **kw: Any) -> dict[str, Any]:
    return {"type": "email", "name": "mail", "host": "127.0.0.1", "port": smtp.port,
            "from": "silta@stats.example", "to": ["ops@stats.example"],
            "timeout_seconds": 5, **kw}


@dataclass
class Agent:
    """One agent process's view: a state store, its alert book and notifier."""

    state: StateStore
    book: AlertBook
    notifier: Notifier

    def notifications(self, alert_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM notifications"
        params: tuple[Any, ...] = ()
        if alert_id is not None:
            sql, params = sql + " WHERE alert_id=?", (alert_id,)
        return [dict(r) for r in self.state.query(sql + " ORDER BY id", params)]


@pytest.fixture
def open_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Opens the agent's parts on ``tmp_path/state``; each call is a (re)start."""
    opened: list[Agent] = []

    def make(*channels: dict[str, Any], **section: Any) -> Agent:
        conf = AlertsSection.model_validate({"repeat_interval": "1h", "retry_for": "24h",
                                             **section, "channels": list(channels)})
        state = StateStore(tmp_path / "state")
        book = AlertBook(state, conf, AGENT)
        opened.append(Agent(state, book, Notifier(book, conf)))
        return opened[-1]

    yield make
    for a in opened:
        a.notifier.stop()
        a.state.close()


def breach(value: float = 0.31, *, check: str = "drift", target: str = "job_title",
           severity: str = "warning") -> CheckResult:
    return CheckResult(check=check, target=target, status="breach", severity=severity,
                       summary=f"PSI {value} above 0.2 on {target}", value=value,
                       threshold=0.2, detail={"psi": value})


def ok(*, check: str = "drift", target: str = "job_title") -> CheckResult:
    return CheckResult(check=check, target=target, status="ok", summary="PSI 0.05")


def utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ms(t: dt.datetime) -> dt.datetime:
    """``t`` cut to the milliseconds the state store keeps."""
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def later(seconds: float) -> dt.datetime:
    return utc() + dt.timedelta(seconds=seconds)


def parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


# --- 1. one alert per fingerprint --------------------------------------------------------


def test_the_same_breach_three_times_is_one_alert(open_agent: Callable[..., Agent],
                                                  hook: Hook, smtp: Smtp) -> None:
    a = open_agent(webhook(hook), mail(smtp))
    first = a.book.observe("answers_drift", "coder", [breach(0.31)], "run-1")
    assert first.fired and not first.repeated and not first.resolved
    [alert_id] = first.fired
    assert a.notifier.pump() == 2
    second = a.book.observe("answers_drift", "coder", [breach(0.35)], "run-2")
    third = a.book.observe("answers_drift", "coder", [breach(0.42)], "run-3")
    assert (second.fired, second.repeated) == ([], [alert_id])
    assert (third.fired, third.repeated) == ([], [alert_id])
    assert a.notifier.pump() == 0

    [alert] = a.book.find()
    assert alert["id"] == alert_id
    assert alert["state"] == "firing"
    assert alert["count"] == 3
    assert alert["value"] == 0.42
    assert alert["summary"] == "PSI 0.42 above 0.2 on job_title"
    assert alert["detail"] == {"psi": 0.42}
    assert alert["last_run_id"] == "run-3"
    assert alert["model"] == "coder"
    assert (alert["monitor"], alert["check"], alert["target"]) == \
        ("answers_drift", "drift", "job_title")

    assert hook.events() == [(alert_id, "firing")]
    assert smtp.inbox.events() == [(alert_id, "firing")]
    body = hook.posts[0][1]
    assert body["value"] == 0.31  # what was true when it was sent
    assert body["count"] == 1
    assert body["agent"] == AGENT
    assert body["title"] == "FIRING warning: answers_drift / drift / job_title"

    # another target of the same check is another alert
    other = a.book.observe("answers_drift", "coder", [breach(target="region")], "run-4")
    assert len(other.fired) == 1
    assert other.fired[0] != alert_id


# --- 2. lifecycle ------------------------------------------------------------------------


def test_ack_then_auto_resolve_then_a_new_alert(open_agent: Callable[..., Agent], hook: Hook,
                                                smtp: Smtp) -> None:
    a = open_agent(webhook(hook), mail(smtp))
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.notifier.pump()

    before = utc()
    acked = a.book.ack(alert_id, by="ana", comment="looking at the coding frame")
    after = utc()
    assert acked["state"] == "acknowledged"
    assert acked["acked_by"] == "ana"
    assert acked["ack_comment"] == "looking at the coding frame"
    assert ms(before) <= parse(acked["acked_at"]) <= after
    assert [(e["event"], e["by"]) for e in acked["events"]] == [
        ("fired", None), ("notified:firing", None), ("acknowledged", "ana")]
    assert acked["events"][2]["detail"] == "looking at the coding frame"
    with pytest.raises(UsageError, match="acknowledged by ana"):
        a.book.ack(alert_id, by="bo")

    # hours pass: an acknowledged alert is not repeated, though it still counts
    assert a.book.enqueue_repeats(at=later(5 * HOUR)) == []
    assert a.notifier.pump(at=later(5 * HOUR)) == 0
    assert a.book.observe("answers_drift", None, [breach(0.5)], "run-2").repeated == \
        [alert_id]
    assert a.book.get(alert_id)["count"] == 2
    assert a.book.get(alert_id)["state"] == "acknowledged"

    seen = a.book.observe("answers_drift", None, [ok()], "run-3")
    assert seen.resolved == [alert_id]
    resolved = a.book.get(alert_id)
    assert resolved["state"] == "resolved"
    assert resolved["resolved_by"] == "auto"
    assert resolved["events"][-2]["event"] == "resolved"
    assert resolved["events"][-2]["detail"] == "passed again: PSI 0.05"
    assert a.notifier.pump() == 2
    assert a.notifier.pump(at=later(5 * HOUR)) == 0  # nothing after the end
    assert hook.events() == [(alert_id, "firing"), (alert_id, "resolved")]
    assert smtp.inbox.events() == [(alert_id, "firing"), (alert_id, "resolved")]
    assert hook.posts[-1][1]["state"] == "resolved"
    assert hook.posts[-1][1]["count"] == 2

    with pytest.raises(UsageError, match="already resolved"):
        a.book.ack(alert_id)
    with pytest.raises(UsageError, match="already resolved"):
        a.book.resolve(alert_id)
    with pytest.raises(NotFoundError):
        a.book.ack(999)
    with pytest.raises(NotFoundError):
        a.book.resolve(999)
    with pytest.raises(NotFoundError):
        a.book.get(999)
    # a passing check with nothing open changes nothing
    assert a.book.observe("answers_drift", None, [ok()], "run-4").resolved == []

    [again] = a.book.observe("answers_drift", None, [breach()], "run-5").fired
    assert again != alert_id
    assert a.book.get(again)["count"] == 1
    assert a.book.get(alert_id)["state"] == "resolved"  # the old one stays ended


def test_manual_resolve_sends_one_resolved(open_agent: Callable[..., Agent],
                                           hook: Hook) -> None:
    a = open_agent(webhook(hook))
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.notifier.pump()
    done = a.book.resolve(alert_id, by="ana", comment="frame fixed upstream")
    assert done["state"] == "resolved"
    assert done["resolved_by"] == "ana"
    assert (done["events"][-2]["event"], done["events"][-2]["by"],
            done["events"][-2]["detail"]) == ("resolved", "ana", "frame fixed upstream")
    assert a.notifier.pump() == 1
    # the next run still sees the breach: that is a new alert, not the resolved one
    [again] = a.book.observe("answers_drift", None, [breach()], "run-2").fired
    assert a.notifier.pump() == 1
    assert hook.events() == [(alert_id, "firing"), (alert_id, "resolved"), (again, "firing")]


def test_repeats_every_interval_until_acknowledged(open_agent: Callable[..., Agent],
                                                   hook: Hook) -> None:
    a = open_agent(webhook(hook), repeat_interval="1h")
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.notifier.pump()
    assert a.notifier.pump(at=later(0.5 * HOUR)) == 0  # not yet
    assert a.notifier.pump(at=later(1.1 * HOUR)) == 1
    assert a.notifier.pump(at=later(1.5 * HOUR)) == 0  # the interval starts again
    assert a.notifier.pump(at=later(2.2 * HOUR)) == 1
    a.book.ack(alert_id, by="ana")
    assert a.notifier.pump(at=later(10 * HOUR)) == 0
    assert hook.events() == [(alert_id, "firing"), (alert_id, "repeat"),
                             (alert_id, "repeat")]


def test_ack_drops_a_repeat_still_waiting_for_the_server(open_agent: Callable[..., Agent],
                                                         hook: Hook) -> None:
    a = open_agent(webhook(hook))
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.notifier.pump()
    hook.stop()
    assert a.notifier.pump(at=later(1.5 * HOUR)) == 0  # the repeat fails: server down
    a.book.ack(alert_id, by="ana")
    hook.start()
    assert a.notifier.pump(at=later(3 * HOUR)) == 0
    assert hook.events() == [(alert_id, "firing")]
    assert [(n["event"], n["status"]) for n in a.notifications()] == [
        ("firing", "sent"), ("repeat", "dropped")]


# --- 3. restarts -------------------------------------------------------------------------


def test_restart_while_firing_sends_nothing_twice(open_agent: Callable[..., Agent],
                                                  hook: Hook) -> None:
    first = open_agent(webhook(hook))
    [alert_id] = first.book.observe("answers_drift", None, [breach()], "run-1").fired
    assert first.notifier.pump() == 1
    first.state.close()

    second = open_agent(webhook(hook))  # a new process on the same state folder
    assert second.book.observe("answers_drift", None, [breach(0.4)], "run-2").repeated == \
        [alert_id]
    assert second.notifier.pump() == 0
    assert hook.events() == [(alert_id, "firing")]
    assert second.book.get(alert_id)["count"] == 2

    assert second.notifier.pump(at=later(1.1 * HOUR)) == 1
    assert second.notifier.pump(at=later(1.2 * HOUR)) == 0
    assert hook.events() == [(alert_id, "firing"), (alert_id, "repeat")]
    assert hook.posts[-1][1]["count"] == 2
    assert hook.posts[-1][1]["value"] == 0.4


def test_restart_delivers_what_the_last_process_owed(open_agent: Callable[..., Agent],
                                                     hook: Hook) -> None:
    first = open_agent(webhook(hook))
    [alert_id] = first.book.observe("answers_drift", None, [breach()], "run-1").fired
    first.state.close()  # stopped before it sent anything

    second = open_agent(webhook(hook))
    assert second.book.pending_count() == 1
    assert second.notifier.pump() == 1
    assert second.book.pending_count() == 0
    assert hook.events() == [(alert_id, "firing")]


# --- 4. silences -------------------------------------------------------------------------


def test_silence_holds_back_a_new_alert_until_it_expires(open_agent: Callable[..., Agent],
                                                         hook: Hook) -> None:
    a = open_agent(webhook(hook))
    [first] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.notifier.pump()
    before = utc()
    silenced = a.book.silence(first, HOUR, by="ana", comment="frame change planned")
    after = utc()
    until = parse(silenced["silenced_until"])
    assert ms(before) + dt.timedelta(hours=1) <= until <= after + dt.timedelta(hours=1)
    assert silenced["events"][-1]["event"] == "silenced"
    assert silenced["events"][-1]["by"] == "ana"
    assert silenced["events"][-1]["detail"].endswith(": frame change planned")
    assert a.notifier.pump(at=later(0.9 * HOUR)) == 0  # no repeat while silenced
    a.book.resolve(first, by="ana")
    assert a.notifier.pump() == 1  # it was notified: its end is told

    # the silence covers the fingerprint: the next alert fires, counts, and stays quiet
    [second] = a.book.observe("answers_drift", None, [breach()], "run-2").fired
    assert a.book.observe("answers_drift", None, [breach()], "run-3").repeated == [second]
    assert a.book.get(second)["silenced_until"] == silenced["silenced_until"]
    assert a.book.get(second)["count"] == 2
    assert a.notifier.pump() == 0
    assert a.notifier.pump(at=later(0.5 * HOUR)) == 0
    assert a.notifications(second) == []

    assert a.notifier.pump(at=later(2 * HOUR)) == 1  # expired: told once
    assert a.notifier.pump(at=later(2.5 * HOUR)) == 0
    assert hook.events() == [(first, "firing"), (first, "resolved"), (second, "firing")]
    assert hook.posts[-1][1]["count"] == 2


def test_resolved_while_silenced_and_never_told_sends_nothing(
        open_agent: Callable[..., Agent], hook: Hook, smtp: Smtp) -> None:
    a = open_agent(webhook(hook), mail(smtp))
    [first] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.book.silence(first, HOUR, by="ana")  # before anything was sent
    assert a.notifier.pump() == 0  # the firing already queued waits for the silence
    assert a.book.observe("answers_drift", None, [ok()], "run-2").resolved == [first]
    [second] = a.book.observe("answers_drift", None, [breach()], "run-3").fired
    assert a.book.observe("answers_drift", None, [ok()], "run-4").resolved == [second]
    assert a.notifier.pump() == 0
    assert a.notifier.pump(at=later(2 * HOUR)) == 0
    assert hook.posts == []
    assert smtp.inbox.envelopes == []
    assert a.notifications(second) == []
    assert {n["status"] for n in a.notifications(first)} == {"dropped"}


def test_a_queued_firing_goes_once_when_the_silence_ends(open_agent: Callable[..., Agent],
                                                         hook: Hook) -> None:
    a = open_agent(webhook(hook))
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    a.book.silence(alert_id, HOUR, by="ana")
    assert a.notifier.pump() == 0
    # two hours on: the queued firing goes, and no repeat on top of it
    assert a.notifier.pump(at=later(2 * HOUR)) == 1
    assert hook.events() == [(alert_id, "firing")]


# --- 5. retried while the server is down -------------------------------------------------


def test_webhook_down_is_retried_then_delivered_in_order(open_agent: Callable[..., Agent],
                                                         hook: Hook) -> None:
    a = open_agent(webhook(hook))
    hook.stop()  # the port is closed
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    t1 = utc()
    assert a.notifier.pump(at=t1) == 0
    [n] = a.notifications()
    assert (n["status"], n["attempts"]) == ("pending", 1)
    assert "webhook channel 'hook'" in n["last_error"]
    assert "cannot reach the server" in n["last_error"]
    assert "secretpathtoken" not in n["last_error"]
    assert "/hooks" not in n["last_error"]
    assert parse(n["next_attempt_at"]) == ms(t1 + dt.timedelta(seconds=5))  # retry_delay(1)

    hook.start()  # back, on the same port
    # the check passes again: the resolved waits behind the firing not yet delivered
    assert a.book.observe("answers_drift", None, [ok()], "run-2").resolved == [alert_id]
    assert a.notifier.pump(at=t1 + dt.timedelta(seconds=1)) == 0
    assert hook.posts == []
    # the backoff has passed (the clock is moved, not slept)
    assert a.notifier.pump(at=t1 + dt.timedelta(seconds=6)) == 2
    assert hook.events() == [(alert_id, "firing"), (alert_id, "resolved")]
    assert [(n["event"], n["status"], n["attempts"], n["last_error"])
            for n in a.notifications()] == [("firing", "sent", 2, None),
                                            ("resolved", "sent", 1, None)]


def test_backoff_grows_and_repeats_do_not_pile_up(open_agent: Callable[..., Agent],
                                                  hook: Hook) -> None:
    a = open_agent(webhook(hook), repeat_interval="1h")
    hook.stop()
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    t1 = utc()
    a.notifier.pump(at=t1)
    t2 = t1 + dt.timedelta(seconds=5)
    a.notifier.pump(at=t2)
    [n] = a.notifications()
    assert n["attempts"] == 2
    assert parse(n["next_attempt_at"]) == ms(t2 + dt.timedelta(seconds=10))  # retry_delay(2)
    for hours in (1.5, 3, 4.5):  # down for hours: the repeats wait for the firing
        a.notifier.pump(at=t1 + dt.timedelta(hours=hours))
    assert [x["event"] for x in a.notifications()] == ["firing"]
    hook.start()
    assert a.notifier.pump(at=t1 + dt.timedelta(hours=5)) == 1
    assert hook.events() == [(alert_id, "firing")]


def test_smtp_down_is_retried_then_delivered(open_agent: Callable[..., Agent],
                                             smtp: Smtp) -> None:
    a = open_agent(mail(smtp))
    smtp.stop()
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    t1 = utc()
    assert a.notifier.pump(at=t1) == 0
    [n] = a.notifications()
    assert (n["status"], n["attempts"]) == ("pending", 1)
    assert "e-mail channel 'mail'" in n["last_error"]
    assert "cannot reach the server" in n["last_error"]
    assert parse(n["next_attempt_at"]) == ms(t1 + dt.timedelta(seconds=5))

    smtp.start()  # a new server on the same port
    assert a.book.observe("answers_drift", None, [ok()], "run-2").resolved == [alert_id]
    assert a.notifier.pump(at=t1 + dt.timedelta(seconds=6)) == 2
    assert smtp.inbox.events() == [(alert_id, "firing"), (alert_id, "resolved")]
    assert [n["status"] for n in a.notifications()] == ["sent", "sent"]


def test_one_hung_channel_costs_one_timeout_per_round(
        open_agent: Callable[..., Agent], hook: Hook,
        hanging: Callable[[], Hanging]) -> None:
    slow = hanging()
    a = open_agent({"type": "webhook", "name": "slow", "timeout_seconds": 0.3,
                    "url": f"http://127.0.0.1:{slow.port}/x"}, webhook(hook))
    fired = [a.book.observe("m", None, [breach(target=f"t{i}")], "run-1").fired[0]
             for i in range(5)]
    assert a.notifier.pump() == 5  # all five reached the working channel
    assert sorted(i for i, _ in hook.events()) == fired
    slow_rows = [n for n in a.notifications() if n["channel"] == "slow"]
    # the first timed out; the other four were left for the next round, not tried
    assert [(n["status"], n["attempts"]) for n in slow_rows] == \
        [("pending", 1)] + [("pending", 0)] * 4
    assert "no valid answer" in slow_rows[0]["last_error"] or \
        "cannot reach" in slow_rows[0]["last_error"]
    assert len(slow.accepted) == 1


# --- 6. given up -------------------------------------------------------------------------


def test_refused_message_is_given_up_at_once(open_agent: Callable[..., Agent], hook: Hook,
                                             caplog: pytest.LogCaptureFixture) -> None:
    a = open_agent(webhook(hook))
    hook.status = 400
    with caplog.at_level(logging.INFO, logger="silta.alerts"):
        [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
        assert a.notifier.pump() == 0
    [n] = a.notifications()
    assert (n["status"], n["attempts"]) == ("failed", 1)
    assert "HTTP 400" in n["last_error"]
    assert "secretpathtoken" not in n["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"alert {alert_id}: firing notification to hook given up "
                                "(not retriable): ")
    assert "secretpathtoken" not in errors[0]
    assert a.notifier.pump(at=later(60)) == 0  # never tried again
    assert len(hook.posts) == 1
    assert a.book.get(alert_id)["state"] == "firing"  # the alert itself stays


def test_retriable_failure_is_given_up_after_retry_for(open_agent: Callable[..., Agent],
                                                       hook: Hook,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    a = open_agent(webhook(hook), retry_for="1h", repeat_interval="1d")
    hook.status = 503
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    with caplog.at_level(logging.INFO, logger="silta.alerts"):
        assert a.notifier.pump() == 0
        [n] = a.notifications()
        assert (n["status"], n["attempts"]) == ("pending", 1)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert a.notifier.pump(at=later(2 * HOUR)) == 0
    [n] = a.notifications()
    assert (n["status"], n["attempts"]) == ("failed", 2)
    assert "HTTP 503" in n["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"alert {alert_id}: firing notification to hook given up "
                                "(retried for 1h): ")
    assert len(hook.posts) == 2


def test_a_channel_gone_from_the_config_is_given_up(open_agent: Callable[..., Agent],
                                                    hook: Hook) -> None:
    first = open_agent(webhook(hook, name="old"))
    first.book.observe("answers_drift", None, [breach()], "run-1")
    first.state.close()
    second = open_agent(webhook(hook, name="new"))  # restarted with another channel
    assert second.notifier.pump() == 0
    [n] = second.notifications()
    assert (n["channel"], n["status"]) == ("old", "failed")
    assert n["last_error"] == "channel 'old' is no longer configured"


def test_a_header_http_cannot_carry_gives_up_that_message_only(
        open_agent: Callable[..., Agent], hook: Hook, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # a header value http.client cannot encode (not latin-1) would raise UnicodeEncodeError
    # with the secret in hand; it is refused clearly, and the other deliveries go on
    monkeypatch.setenv("SILTA_TEST_ALERT_TOKEN", "tök€n-0123456789")
    a = open_agent(webhook(hook, name="odd", path="/odd",
                           headers_from_env={"Authorization": "SILTA_TEST_ALERT_TOKEN"}),
                   webhook(hook))
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    with caplog.at_level(logging.INFO, logger="silta.alerts"):
        assert a.notifier.pump() == 1
    assert hook.events() == [(alert_id, "firing")]
    odd, good = a.notifications()
    assert (odd["channel"], odd["status"]) == ("odd", "failed")
    assert "SILTA_TEST_ALERT_TOKEN (header Authorization) holds characters outside ASCII" \
        in odd["last_error"]
    assert "tök€n" not in odd["last_error"]
    assert good["status"] == "sent"
    assert any(r.levelno == logging.ERROR and "given up" in r.getMessage()
               for r in caplog.records)


# --- 7. severity routing -----------------------------------------------------------------


def test_a_critical_channel_gets_only_critical_alerts(open_agent: Callable[..., Agent],
                                                      hook: Hook) -> None:
    a = open_agent(webhook(hook, name="all", path="/all", min_severity="info"),
                   webhook(hook, name="pager", path="/pager", min_severity="critical"))
    [info] = a.book.observe("m", None, [breach(check="volume", severity="info")], "r").fired
    [warn] = a.book.observe("m", None, [breach(check="schema", severity="warning")],
                            "r").fired
    [crit] = a.book.observe("m", None, [breach(check="drift", severity="critical")],
                            "r").fired
    assert a.notifier.pump() == 4
    assert hook.events("/all") == [(info, "firing"), (warn, "firing"), (crit, "firing")]
    assert hook.events("/pager") == [(crit, "firing")]
    a.book.observe("m", None, [ok(check="volume"), ok(check="schema"), ok(check="drift")],
                   "r2")
    assert a.notifier.pump() == 4
    assert hook.events("/pager") == [(crit, "firing"), (crit, "resolved")]
    assert hook.events("/all")[3:] == [(info, "resolved"), (warn, "resolved"),
                                       (crit, "resolved")]


def test_severity_changes_keep_each_channel_told(open_agent: Callable[..., Agent],
                                                 hook: Hook) -> None:
    a = open_agent(webhook(hook, name="all", path="/all"),
                   webhook(hook, name="pager", path="/pager", min_severity="critical"))
    [up] = a.book.observe("m", None, [breach(check="volume")], "r1").fired
    [down] = a.book.observe("m", None, [breach(check="drift", severity="critical")],
                            "r1").fired
    a.notifier.pump()
    assert hook.events("/pager") == [(down, "firing")]
    # volume becomes critical: the pager hears of it now, not at the next repeat
    a.book.observe("m", None, [breach(check="volume", severity="critical"),
                               breach(check="drift", severity="warning")], "r2")
    assert a.notifier.pump() == 1
    assert hook.events("/pager") == [(down, "firing"), (up, "firing")]
    assert hook.posts[-1][1]["severity"] == "critical"
    # drift is only a warning now, but the pager was told it fired: it is told it ended
    a.book.observe("m", None, [ok(check="volume"), ok(check="drift")], "r3")
    a.notifier.pump()
    assert hook.events("/pager")[2:] == [(up, "resolved"), (down, "resolved")]
    assert hook.events("/all") == [(up, "firing"), (down, "firing"), (up, "resolved"),
                                   (down, "resolved")]


# --- 8. the notifier thread --------------------------------------------------------------


def test_notifier_thread_delivers_and_stops(open_agent: Callable[..., Agent],
                                            hook: Hook) -> None:
    a = open_agent(webhook(hook))
    a.notifier.start()
    [alert_id] = a.book.observe("answers_drift", None, [breach()], "run-1").fired
    wait_until(lambda: len(hook.posts) == 1, "the notifier thread to post")
    assert hook.events() == [(alert_id, "firing")]
    assert a.notifier.stop() is True  # the thread has ended, its round recorded
    assert [n["status"] for n in a.notifications()] == ["sent"]


def test_notifier_stops_while_servers_hang(open_agent: Callable[..., Agent],
                                           hanging: Callable[[], Hanging]) -> None:
    first, second = hanging(), hanging()
    # the first hangs long enough for stop() to come while it waits, even on a busy host
    a = open_agent({"type": "webhook", "name": "first", "timeout_seconds": 2,
                    "url": f"http://127.0.0.1:{first.port}/x"},
                   {"type": "webhook", "name": "second", "timeout_seconds": 0.5,
                    "url": f"http://127.0.0.1:{second.port}/x"})
    a.book.observe("answers_drift", None, [breach()], "run-1")
    a.notifier.start()
    wait_until(lambda: len(first.accepted) == 1, "the first channel to be tried")
    assert a.notifier.stop() is True  # ended, though the round had more to try
    by_channel = {n["channel"]: n for n in a.notifications()}
    assert (by_channel["first"]["status"], by_channel["first"]["attempts"]) == ("pending", 1)
    # stopping ends the round: the second channel waits for the next start
    assert (by_channel["second"]["status"], by_channel["second"]["attempts"]) == \
        ("pending", 0)
    assert second.accepted == []
