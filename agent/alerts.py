"""Alerts: what monitors found, kept in the state store until a person or the data ends it.

One alert per monitor + check + target is open at a time (its *fingerprint*): a breach
seen again increments its count instead of raising a second alert. An alert is
``firing`` until acknowledged (who, when, comment) and ``resolved`` when its check
passes again (``auto``) or an operator resolves it; a later breach opens a new alert.

Notifications are rows of an outbox in the same transaction as the change that caused
them, so a crash or restart neither loses nor repeats one: the first breach enqueues
``firing`` for every channel whose ``min_severity`` it reaches (and a breach that got
worse, for the channels it reaches now); a firing alert that is neither acknowledged nor
silenced is notified again every ``repeat_interval``, except on a channel whose last
notice is still waiting for delivery; one ``resolved`` message goes to each channel that
was told the alert fired. Silences hold notifications back (the alert itself still
counts) until they expire; an alert resolved under a silence before anyone was told
sends nothing.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from agent.notify import Notice, log_notice, reaches
from agent.notify_config import AlertsSection, Severity, severity_rank
from agent.state import StateStore, now
from connectors.errors import NotFoundError, UsageError

log = logging.getLogger("silta.alerts")

Status = Literal["ok", "breach", "insufficient", "error"]
OPEN = ("firing", "acknowledged")
STATES = (*OPEN, "resolved")
#: the end of the latest silence in force, by fingerprint
_SILENCES_IN_FORCE = ("SELECT fingerprint, MAX(until) FROM silences WHERE until > ? "
                      "GROUP BY fingerprint")


@dataclass(frozen=True)
class CheckResult:
    """One check of one target in one monitoring run."""

    check: str
    target: str
    status: Status
    severity: str = "warning"
    summary: str = ""
    value: float | None = None
    threshold: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "target": self.target, "status": self.status,
                "severity": self.severity, "summary": self.summary, "value": self.value,
                "threshold": self.threshold, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        return cls(check=str(d["check"]), target=str(d["target"]), status=d["status"],
                   severity=str(d.get("severity", "warning")),
                   summary=str(d.get("summary", "")), value=d.get("value"),
                   threshold=d.get("threshold"), detail=dict(d.get("detail") or {}))


@dataclass
class Observed:
    """What one monitoring run changed: alert ids fired, seen again and resolved."""

    fired: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def fingerprint(monitor: str, check: str, target: str) -> str:
    return f"{monitor}|{check}|{target}"


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds")


class AlertBook:
    """The alerts of one state store, and the notifications they owe."""

    def __init__(self, state: StateStore, section: AlertsSection | None = None,
                 agent: str = "") -> None:
        self.state = state
        self.section = section or AlertsSection()
        self.agent = agent

    # -- from monitoring runs -----------------------------------------------------------
    def observe(self, monitor: str, model: str | None, results: Iterable[CheckResult],
                run_id: str | None) -> Observed:
        """Apply one run's check results: fire, count, or resolve (one transaction)."""
        seen = Observed()
        at = now()
        notices: list[Notice] = []
        with self.state.tx() as conn:
            for r in results:
                fp = fingerprint(monitor, r.check, r.target)
                row = conn.execute("SELECT * FROM alerts WHERE fingerprint=? AND state IN "
                                   "('firing', 'acknowledged')", (fp,)).fetchone()
                if r.status == "breach" and row is None:
                    cur = conn.execute(
                        "INSERT INTO alerts (fingerprint, monitor, check_name, target, model, "
                        "severity, state, summary, value, threshold, detail, first_seen, "
                        "last_seen, last_run_id) VALUES (?,?,?,?,?,?,'firing',?,?,?,?,?,?,?)",
                        (fp, monitor, r.check, r.target, model, r.severity, r.summary,
                         r.value, r.threshold, json.dumps(r.detail, default=str), at, at,
                         run_id))
                    alert_id = int(cur.lastrowid or 0)
                    self._event(conn, alert_id, "fired", None, r.summary)
                    seen.fired.append(alert_id)
                    if not self._silenced(conn, fp, at):
                        notices.append(self._notify(conn, alert_id, "firing", at))
                elif r.status == "breach" and row is not None:
                    conn.execute(
                        "UPDATE alerts SET count=count+1, last_seen=?, last_run_id=?, "
                        "summary=?, value=?, threshold=?, severity=?, detail=? WHERE id=?",
                        (at, run_id, r.summary, r.value, r.threshold, r.severity,
                         json.dumps(r.detail, default=str), row["id"]))
                    seen.repeated.append(int(row["id"]))
                    if (row["state"] == "firing"
                            and severity_rank(cast(Severity, r.severity))
                            > severity_rank(row["severity"])
                            and not self._silenced(conn, fp, at)):
                        # worse now: channels it did not reach before hear of it now
                        notices.append(self._notify(conn, int(row["id"]), "firing", at,
                                                    escalated=True))
                elif r.status == "ok" and row is not None:
                    notice = self._resolve(conn, int(row["id"]), "auto",
                                           f"passed again: {r.summary}", at)
                    if notice is not None:
                        notices.append(notice)
                    seen.resolved.append(int(row["id"]))
        for n in notices:
            log_notice(n)
        return seen

    # -- operator actions ---------------------------------------------------------------
    def ack(self, alert_id: int, *, by: str | None = None, comment: str = "") -> dict[str, Any]:
        by = by or getpass.getuser()
        with self.state.tx() as conn:
            row = self._open_row(conn, alert_id, "acknowledge")
            if row["state"] == "acknowledged":
                raise UsageError(f"alert {alert_id} was acknowledged by {row['acked_by']} at "
                                 f"{row['acked_at']}")
            conn.execute("UPDATE alerts SET state='acknowledged', acked_by=?, acked_at=?, "
                         "ack_comment=? WHERE id=?", (by, now(), comment or None, alert_id))
            # someone is on it: a repeat still waiting for its channel is not sent
            conn.execute("UPDATE notifications SET status='dropped' WHERE alert_id=? AND "
                         "status='pending' AND event='repeat'", (alert_id,))
            self._event(conn, alert_id, "acknowledged", by, comment)
        log.info("alert %d acknowledged by %s%s", alert_id, by,
                 f": {comment}" if comment else "")
        return self.get(alert_id)

    def resolve(self, alert_id: int, *, by: str | None = None, comment: str = ""
                ) -> dict[str, Any]:
        by = by or getpass.getuser()
        with self.state.tx() as conn:
            self._open_row(conn, alert_id, "resolve")
            notice = self._resolve(conn, alert_id, by, comment or "resolved by hand", now())
        if notice is not None:
            log_notice(notice)
        return self.get(alert_id)

    def silence(self, alert_id: int, seconds: float, *, by: str | None = None,
                comment: str = "") -> dict[str, Any]:
        """Hold back this alert's notifications (and those of its successors) for a while."""
        if seconds <= 0:
            raise UsageError("a silence needs a positive duration, e.g. `--for 2h`")
        by = by or getpass.getuser()
        until = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))
        with self.state.tx() as conn:
            row = self._row(conn, alert_id)
            conn.execute("INSERT INTO silences (fingerprint, until, by, comment, created_at) "
                         "VALUES (?,?,?,?,?)", (row["fingerprint"], until, by, comment or None,
                                                now()))
            self._event(conn, alert_id, "silenced", by, f"until {until}"
                        + (f": {comment}" if comment else ""))
        log.info("alert %d silenced by %s until %s", alert_id, by, until)
        return self.get(alert_id)

    # -- reading ------------------------------------------------------------------------
    def find(self, *, states: Sequence[str] | None = None, monitor: str | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Alerts newest first, optionally in some states or of one monitor."""
        sql, params = "SELECT * FROM alerts WHERE 1=1", list[Any]()
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if monitor:
            sql += " AND monitor=?"
            params.append(monitor)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return self._public_rows(self.state.query(sql, params))

    def search(self, *, states: Sequence[str], text: str = "", offset: int = 0,
               limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """One page of alerts in ``states``, most severe then newest first, and the total."""
        if not states:
            return [], 0
        where, params = [f"state IN ({','.join('?' * len(states))})"], list[Any](states)
        if text:
            where.append("(monitor LIKE ? OR check_name LIKE ? OR target LIKE ? OR "
                         "summary LIKE ? OR model LIKE ?)")
            params += [f"%{text}%"] * 5
        sql = " AND ".join(where)
        total = int(self.state.query(f"SELECT COUNT(*) FROM alerts WHERE {sql}", params)[0][0])
        found = self.state.query(
            f"SELECT * FROM alerts WHERE {sql} ORDER BY CASE severity WHEN 'critical' THEN 0 "
            "WHEN 'warning' THEN 1 ELSE 2 END, id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset])
        return self._public_rows(found), total

    def get(self, alert_id: int) -> dict[str, Any]:
        rows = self.state.query("SELECT * FROM alerts WHERE id=?", (alert_id,))
        if not rows:
            raise NotFoundError("alert", str(alert_id), "see `silta alerts list`")
        alert = self._public_rows(rows)[0]
        alert["events"] = [dict(r) for r in self.state.query(
            "SELECT at, event, by, detail FROM alert_events WHERE alert_id=? ORDER BY id",
            (alert_id,))]
        alert["notifications"] = [dict(r) for r in self.state.query(
            "SELECT id, event, channel, status, attempts, created_at, sent_at, last_error "
            "FROM notifications WHERE alert_id=? ORDER BY id", (alert_id,))]
        return alert

    def open_alerts(self, *, model: str | None = None, checks: Sequence[str] = ()
                    ) -> list[dict[str, Any]]:
        """Firing or acknowledged alerts, optionally of one model's monitors and checks."""
        sql = "SELECT * FROM alerts WHERE state IN ('firing', 'acknowledged')"
        params: list[Any] = []
        if model is not None:
            sql += " AND model=?"
            params.append(model)
        if checks:
            sql += f" AND check_name IN ({','.join('?' * len(checks))})"
            params += list(checks)
        return self._public_rows(self.state.query(sql + " ORDER BY id", params))

    def mark_retrain(self, alert_id: int, job_id: str) -> bool:
        """Record that ``alert_id`` started a retraining; False when it already did."""
        with self.state.tx() as conn:
            cur = conn.execute("UPDATE alerts SET retrain_requested_at=? WHERE id=? AND "
                               "retrain_requested_at IS NULL", (now(), alert_id))
            if cur.rowcount:
                self._event(conn, alert_id, "retraining", None, f"requested {job_id}")
            return bool(cur.rowcount)

    # -- notifications ------------------------------------------------------------------
    def enqueue_repeats(self, at: dt.datetime | None = None) -> list[int]:
        """Firing alerts owed a notification: repeat ones, and ones a silence held back."""
        when = at or dt.datetime.now(dt.UTC)
        stamp = _iso(when)
        due_before = _iso(when - dt.timedelta(seconds=self.section.repeat_seconds))
        notices: list[Notice] = []
        with self.state.tx() as conn:
            rows = conn.execute(
                "SELECT id, fingerprint, last_notified_at FROM alerts WHERE state='firing' "
                "AND (last_notified_at IS NULL OR last_notified_at <= ?)",
                (due_before,)).fetchall()
            for r in rows:
                if self._silenced(conn, r["fingerprint"], stamp):
                    continue
                event = "repeat" if r["last_notified_at"] else "firing"
                notices.append(self._notify(conn, int(r["id"]), event, stamp))
        for n in notices:
            log_notice(n)
        return [n.alert_id for n in notices]

    def due_notifications(self, at: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Pending notifications whose time has come, oldest first; at most one per alert
        and channel (a later one waits until the earlier is delivered or given up).

        A silence holds back the firing and repeat notices of its alerts until it expires
        (and with them whatever is queued behind them).
        """
        stamp = _iso(at or dt.datetime.now(dt.UTC))
        rows = [dict(r) for r in self.state.query(
            "SELECT n.*, a.fingerprint AS alert_fingerprint FROM notifications n "
            "JOIN alerts a ON a.id = n.alert_id WHERE n.status='pending' ORDER BY n.id")]
        silenced = {str(r[0]) for r in self.state.query(
            "SELECT DISTINCT fingerprint FROM silences WHERE until > ?", (stamp,))}
        out: list[dict[str, Any]] = []
        blocked: set[tuple[int, str]] = set()
        for r in rows:
            fp = r.pop("alert_fingerprint")
            key = (int(r["alert_id"]), str(r["channel"]))
            if key in blocked:
                continue
            blocked.add(key)
            held = r["event"] != "resolved" and fp in silenced
            if r["next_attempt_at"] <= stamp and not held:
                out.append(r)
        return out

    def notice(self, notification: dict[str, Any]) -> Notice:
        alert = self._public_rows(self.state.query("SELECT * FROM alerts WHERE id=?",
                                                   (notification["alert_id"],)))[0]
        return _notice(alert, notification["event"], self.agent)

    def delivered(self, notification_id: int) -> None:
        with self.state.tx() as conn:
            conn.execute("UPDATE notifications SET status='sent', sent_at=?, "
                         "attempts=attempts+1, last_error=NULL WHERE id=?",
                         (now(), notification_id))

    def failed(self, notification_id: int, error: str, *, retry_in: float | None,
               at: dt.datetime | None = None) -> None:
        """A failed attempt (at ``at``, default now): retried after ``retry_in`` seconds,
        or given up (None)."""
        with self.state.tx() as conn:
            if retry_in is None:
                conn.execute("UPDATE notifications SET status='failed', attempts=attempts+1, "
                             "last_error=? WHERE id=?", (error, notification_id))
            else:
                later = _iso((at or dt.datetime.now(dt.UTC))
                             + dt.timedelta(seconds=retry_in))
                conn.execute("UPDATE notifications SET attempts=attempts+1, last_error=?, "
                             "next_attempt_at=? WHERE id=?", (error, later, notification_id))

    def pending_count(self) -> int:
        return int(self.state.query(
            "SELECT COUNT(*) FROM notifications WHERE status='pending'")[0][0])

    # -- pieces -------------------------------------------------------------------------
    def _notify(self, conn: Any, alert_id: int, event: str, at: str, *,
                escalated: bool = False) -> Notice:
        """Enqueue ``event`` for the channels it concerns (the log always gets it).

        A firing or repeat goes to every channel the alert's severity reaches, as
        ``firing`` to one that was not told of the alert yet and not at all to one whose
        last notice is still on its way (no pile of repeats behind a server that is
        down); ``escalated`` only tells the channels not told yet. A ``resolved`` goes to
        the channels that were told the alert fired, whatever its severity is now.
        """
        row = dict(conn.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone())
        told, waiting = self._told(conn, alert_id)
        queued, held = [], []
        for channel in self.section.channels:
            name = channel.name
            if event == "resolved":
                if name not in told:
                    continue
                kind = "resolved"
            else:
                if not reaches(channel, row["severity"]):
                    continue
                if name in waiting:
                    held.append(name)
                    continue
                if escalated and name in told:
                    continue
                kind = "repeat" if name in told else "firing"
            conn.execute("INSERT INTO notifications (alert_id, event, channel, created_at, "
                         "next_attempt_at) VALUES (?,?,?,?,?)",
                         (alert_id, kind, name, at, at))
            queued.append(name if kind == event else f"{name} ({kind})")
        conn.execute("UPDATE alerts SET last_notified_at=?, notified=notified+1 WHERE id=?",
                     (at, alert_id))
        detail = ", ".join(queued) or "log only"
        if held:
            detail += f"; still waiting: {', '.join(held)}"
        self._event(conn, alert_id, f"notified:{event}", None, detail)
        until = {str(r[0]): str(r[1]) for r in conn.execute(_SILENCES_IN_FORCE, (at,))}
        return _notice(self._public(row, until), event, self.agent)

    @staticmethod
    def _told(conn: Any, alert_id: int) -> tuple[set[str], set[str]]:
        """Channels told that the alert fires (sent or on its way), and those whose
        firing or repeat is still on its way."""
        rows = conn.execute("SELECT channel, status FROM notifications WHERE alert_id=? AND "
                            "event IN ('firing', 'repeat') AND status IN ('sent', 'pending')",
                            (alert_id,)).fetchall()
        return ({str(r["channel"]) for r in rows},
                {str(r["channel"]) for r in rows if r["status"] == "pending"})

    def _resolve(self, conn: Any, alert_id: int, by: str, comment: str, at: str
                 ) -> Notice | None:
        row = dict(conn.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone())
        conn.execute("UPDATE alerts SET state='resolved', resolved_at=?, resolved_by=? "
                     "WHERE id=?", (at, by, alert_id))
        self._event(conn, alert_id, "resolved", None if by == "auto" else by, comment)
        # pending repeats of an alert that has ended are no longer true; under a silence
        # neither is a firing held back: nobody is to hear of it now
        held = "('firing', 'repeat')" if self._silenced(conn, row["fingerprint"], at) \
            else "('repeat')"
        conn.execute("UPDATE notifications SET status='dropped' WHERE alert_id=? AND "
                     f"status='pending' AND event IN {held}", (alert_id,))
        if not row["notified"]:
            return None  # nobody was told it fired (silenced): no message that it ended
        # to the channels told it fired (none: only the log hears that it ended)
        return self._notify(conn, alert_id, "resolved", at)

    def _silenced(self, conn: Any, fp: str, at: str) -> bool:
        return conn.execute("SELECT 1 FROM silences WHERE fingerprint=? AND until > ?",
                            (fp, at)).fetchone() is not None

    def _row(self, conn: Any, alert_id: int) -> Any:
        row = conn.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone()
        if row is None:
            raise NotFoundError("alert", str(alert_id), "see `silta alerts list`")
        return row

    def _open_row(self, conn: Any, alert_id: int, verb: str) -> Any:
        row = self._row(conn, alert_id)
        if row["state"] == "resolved":
            raise UsageError(f"alert {alert_id} is already resolved ({row['resolved_by']} at "
                             f"{row['resolved_at']}); there is nothing to {verb}")
        return row

    @staticmethod
    def _event(conn: Any, alert_id: int, event: str, by: str | None, detail: str) -> None:
        conn.execute("INSERT INTO alert_events (alert_id, at, event, by, detail) VALUES "
                     "(?,?,?,?,?)", (alert_id, now(), event, by, detail))

    def _public_rows(self, rows: Iterable[Any]) -> list[dict[str, Any]]:
        """Alert rows as callers see them; the silences are read once for all of them."""
        in_force = self.state.query(_SILENCES_IN_FORCE, (now(),))
        until = {str(r[0]): str(r[1]) for r in in_force}
        return [self._public(dict(r), until) for r in rows]

    @staticmethod
    def _public(row: dict[str, Any], silenced_until: dict[str, str]) -> dict[str, Any]:
        row["detail"] = json.loads(row.get("detail") or "{}")
        row["check"] = row.pop("check_name")
        row["silenced_until"] = silenced_until.get(row["fingerprint"])
        return row


def _notice(alert: dict[str, Any], event: str, agent: str) -> Notice:
    return Notice(event=event,  # type: ignore[arg-type]
                  alert_id=int(alert["id"]), monitor=alert["monitor"], check=alert["check"],
                  target=alert["target"], severity=alert["severity"],
                  state=alert["state"], summary=alert["summary"], value=alert["value"],
                  threshold=alert["threshold"], count=int(alert["count"]),
                  first_seen=alert["first_seen"], last_seen=alert["last_seen"],
                  run_id=alert["last_run_id"], agent=agent, detail=alert["detail"])
