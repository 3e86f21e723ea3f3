"""The agent as a service closes the loop by itself: a drifted month arrives, the monitor
that follows the prediction raises alerts, a webhook on loopback is told once, the drift
alerts retrain the model; a restart while the alerts fire sends nothing twice."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.agent.ml_env import MlEnv
from tests.e2e._cli import background, ledger, silta, wait_for
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MONITOR = """
[[monitors]]
name = "watch"
model = "coder"
input = "raw/answers"
predictions = "predictions/codes"
after = ["predict:code_answers"]
[alerts]
repeat_interval = "1h"
[[alerts.channels]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
min_severity = "info"
"""


class Hook:
    """A webhook receiver on loopback: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.port = free_port()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, int]]:
        return [(p["event"], p["alert_id"]) for p in self.posts]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def test_drift_alerts_notify_once_and_retrain_across_a_restart(tmp_path: Path,
                                                               hook: Hook) -> None:
    env = MlEnv(tmp_path, model_extra='retrain_on = ["drift"]',
                training_extra='after = ["sync:codes"]',
                prediction_extra='after = ["sync:answers", "train:train_coder"]',
                tail=MONITOR.format(port=hook.port))
    text = env.config_path.read_text(encoding="utf-8").replace(
        "settle_seconds = 0", "settle_seconds = 0\nwatch = true")
    env.config_path.write_text(text, encoding="utf-8")
    config, state = env.config_path, tmp_path / "state"

    def runs(kind: str) -> list[dict[str, Any]]:
        if not (state / "silta.db").exists():
            return []  # the agent has not opened its state store yet
        try:
            return ledger(state, "SELECT trigger, status, model_version, verified FROM runs "
                          "WHERE kind=? AND status != 'running' ORDER BY started_at", (kind,))
        except sqlite3.OperationalError:
            return []  # opened, but its tables are being created

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        # the first data: v1 (a model without a version trains on new data), predictions,
        # and a monitor that finds no drift: nobody is told anything
        wait_for("the first monitoring run", lambda: runs("monitor") or None, timeout=120)
        assert [r["model_version"] for r in runs("train")] == [1]
        assert hook.posts == []

        env.add_drifted_month()
        # the monitor raises drift alerts; the webhook hears of each one once
        fired = wait_for("the drift alerts' notifications",
                         lambda: [e for e in hook.events() if e[0] == "firing"] or None,
                         timeout=120)
        alerts = {a["id"]: a for a in ledger(state, "SELECT * FROM alerts")}
        assert {alerts[i]["check_name"] for _, i in fired} >= {"drift"}
        # ... and a drift alert (not the coded sample's arrival: retrain_on) retrains
        retrained = wait_for("the retraining an alert asked for", lambda: [
            r for r in runs("train") if r["trigger"].startswith("alert:")] or None,
            timeout=120)
        assert len(retrained) == 1
        assert retrained[0]["status"] == "ok" and retrained[0]["model_version"] == 2
        assert not [r for r in runs("train") if r["trigger"] == "after:sync:codes"
                    and r["model_version"] == 2]
        wait_for("every notification delivered", lambda: not ledger(
            state, "SELECT id FROM notifications WHERE status='pending'"), timeout=30)
        assert agent.terminate() == 0

    before = hook.events()
    firing = [i for e, i in before if e == "firing"]
    assert len(firing) == len(set(firing)) == len(
        ledger(state, "SELECT id FROM alerts WHERE state='firing'"))
    with background(tmp_path, "agent", "run", "--config", config, name="agent2") as agent:
        # while the alerts still fire, the restarted agent runs the monitor again (queued
        # by an operator): the alerts count it, and nobody is told a second time
        counts = {r["id"]: r["count"] for r in ledger(state, "SELECT id, count FROM alerts")}
        wait_for("the agent to be up again", lambda: ledger(
            state, "SELECT pid FROM heartbeats WHERE state='running' AND pid=?",
            (agent.proc.pid,)), timeout=30)
        r = silta(tmp_path, "monitors", "run", "watch", "--config", config)
        assert r.code == 0, r
        assert "queued a run of monitor:watch" in r.out
        wait_for("the operator's monitoring run", lambda: [
            x for x in runs("monitor") if x["trigger"].startswith("operator:")] or None,
            timeout=60)
        r = silta(tmp_path, "alerts", "ack", str(firing[0]), "--comment", "retrained",
                  "--config", config)
        assert r.code == 0, r
        assert agent.terminate() == 0
    after = ledger(state, "SELECT id, count, state, acked_by FROM alerts")
    # nothing new in the window: the checks were not judged, the counts did not move
    assert {a["id"]: a["count"] for a in after} == counts
    assert hook.events() == before
    acked = next(a for a in after if a["id"] == firing[0])
    assert acked["state"] == "acknowledged" and acked["acked_by"]
