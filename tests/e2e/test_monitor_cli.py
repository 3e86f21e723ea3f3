"""Monitoring and alerts through the real `silta` command, on a copy of config/demo.toml.

One folder per module: `demo init`, `agent run --once` (the coder is trained, codes the
answers, and its monitor records a first, calm run), `monitors list`; then `demo drift`
writes a later month, the syncs land it and the champion codes it (`jobs run`), and
`monitors run` finds the drift: alerts fire, and the retraining they ask for runs in the
same command. The tests read what those commands printed, the state store (SQLite,
read-only) and `_silta/metrics` (deltalake) independently, then work one alert through
ack, silence and resolve, and feed the commands bad input.
"""

from __future__ import annotations

import datetime as dt
import getpass
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from tests.conftest import ROOT
from tests.e2e._cli import Result, delta_table, ledger, silta

pytestmark = pytest.mark.timeout(150)

MONITOR = "watch_occupation_coder"
MODEL = "occupation_coder"
#: what the drifted month breaches, by (check, target): severity
BREACHES = {
    ("drift", "job_title:length"): "warning",
    ("drift", "job_title:oov_rate"): "warning",
    ("drift", "job_title:tokens"): "warning",
    ("drift", "language"): "warning",
    ("drift", "sector"): "warning",
    ("prediction_drift", "classes"): "warning",
    ("confidence", "low_confidence_share"): "warning",
    ("performance", "accuracy"): "critical",
    ("performance", "macro_f1"): "critical",
    **{("performance", f"language={lang}:{metric}"): "critical"
       for lang in ("en", "fi", "sv") for metric in ("accuracy", "macro_f1")},
}


@dataclass
class Demo:
    root: Path
    config: Path
    once: Result  # `agent run --once --json`
    listed: Result  # `monitors list --json` after it
    drift_syncs: list[Result]  # `jobs run survey_responses|coded_sample|code_answers --json`
    monitor_run: Result  # `monitors run watch_occupation_coder --json` after the drift
    alerts: Result  # `alerts list --json` right after
    listed_after: Result  # `monitors list --json` right after
    _ids: dict[tuple[str, str], int] = field(default_factory=dict)

    def cli(self, *args: str) -> Result:
        r = silta(self.root, *args, "--config", self.config)
        assert "Traceback" not in r.out and "Traceback" not in r.err, r
        return r

    @property
    def state_dir(self) -> Path:
        return self.root / "var" / "state"

    def alert_id(self, check: str, target: str) -> int:
        if not self._ids:
            self._ids.update({(a["check"], a["target"]): a["id"] for a in self.alerts.json()})
        return self._ids[(check, target)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("monitor_cli")
    (root / "config").mkdir()
    config = root / "config" / "demo.toml"
    shutil.copy(ROOT / "config" / "demo.toml", config)

    def cli(*args: str) -> Result:
        r = silta(root, *args, "--config", config)
        assert "Traceback" not in r.out and "Traceback" not in r.err, r
        assert r.code == 0, r
        return r

    cli("demo", "init")
    once = cli("agent", "run", "--once", "--json")
    listed = cli("monitors", "list", "--json")
    cli("demo", "drift")
    syncs = [cli("jobs", "run", job, "--json")
             for job in ("survey_responses", "coded_sample", "code_answers")]
    monitor_run = cli("monitors", "run", MONITOR, "--json")
    alerts = cli("alerts", "list", "--json")
    listed_after = cli("monitors", "list", "--json")
    return Demo(root, config, once, listed, syncs, monitor_run, alerts, listed_after)


def _by_job(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}:{o['name']}": o for o in outcomes}


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_a_calm_first_run_leaves_the_monitor_ok_without_alerts(demo: Demo) -> None:
    jobs = _by_job(demo.once.json())
    assert jobs[f"monitor:{MONITOR}"]["status"] == "ok"
    assert jobs["train:train_occupation_coder"]["model_version"] == 1
    (row,) = demo.listed.json()
    assert {k: row[k] for k in ("monitor", "model", "input", "predictions", "labels",
                                "window", "after", "enabled", "last_status",
                                "open_alerts", "critical")} == {
        "monitor": MONITOR, "model": MODEL, "input": "raw/survey_responses",
        "predictions": "predictions/occupation_codes", "labels": "raw/coded_sample",
        "window": "new", "after": ["predict:code_answers"], "enabled": True,
        "last_status": "ok", "open_alerts": 0, "critical": 0}
    assert row["last_message"].startswith("19 check(s) judged, 0 breach(es)")
    # the run it listed is the one the agent made
    (run,) = ledger(demo.state_dir, "SELECT started_at, trigger FROM runs WHERE id=?",
                    (jobs[f"monitor:{MONITOR}"]["run_id"],))
    assert (run["started_at"], run["trigger"]) == (row["last_run"], "once")
    assert ledger(demo.state_dir, "SELECT count(*) AS n FROM alerts WHERE first_seen <= ?",
                  (row["last_run"],)) == [{"n": 0}]


def test_drift_fires_alerts_and_retrains_in_the_same_command(demo: Demo) -> None:
    landed = [o for r in demo.drift_syncs for o in r.json()]
    assert [(o["name"], o["status"], o["rows"]) for o in landed] == [
        ("survey_responses", "ok", 1600), ("coded_sample", "ok", 380),
        ("code_answers", "ok", 1600)]
    outcomes = demo.monitor_run.json()
    assert [(o["kind"], o["name"], o["status"]) for o in outcomes] == [
        ("monitor", MONITOR, "ok"), ("train", "train_occupation_coder", "ok")]
    monitor, train = outcomes
    assert monitor["message"].startswith("27 check(s) judged, 15 breach(es): drift "
                                         "job_title:length; ")
    assert monitor["message"].endswith("; alerts: 15 fired, 0 resolved")
    assert (train["model"], train["model_version"], train["committed"]) == (MODEL, 2, True)
    assert train["metrics"]["promotion"]["decision"] == "promoted"
    assert train["metrics"]["promotion"]["champion_version"] == 1
    # the training was started by the monitor's first drift alert
    first = demo.alert_id("drift", "job_title:length")
    (run,) = ledger(demo.state_dir, "SELECT trigger, status, model_version FROM runs WHERE "
                    "id=?", (train["run_id"],))
    assert run == {"trigger": f"alert:{first}", "status": "ok", "model_version": 2}
    models = {m["model"]: m for m in demo.cli("models", "list", "--json").json()}
    assert (models[MODEL]["versions"], models[MODEL]["aliases"]) == (2, {"champion": 2})

    # the alerts, as `alerts list` shows them and as the state store holds them
    listed = demo.alerts.json()
    assert {(a["check"], a["target"]): a["severity"] for a in listed} == BREACHES
    assert {a["state"] for a in listed} == {"firing"}
    assert {(a["monitor"], a["model"], a["count"], a["last_run_id"]) for a in listed} == {
        (MONITOR, MODEL, 1, monitor["run_id"])}
    stored = ledger(demo.state_dir, "SELECT id, check_name, target, severity, state FROM "
                    "alerts ORDER BY id DESC")
    assert [(a["id"], a["check"], a["target"], a["severity"], a["state"]) for a in listed] \
        == [(s["id"], s["check_name"], s["target"], s["severity"], s["state"]) for s in stored]
    assert [a["id"] for a in listed] == list(range(15, 0, -1))  # newest first
    # each asked for the retraining once; the first one's request is the run above
    events = ledger(demo.state_dir, "SELECT alert_id, detail FROM alert_events WHERE "
                    "event='retraining' ORDER BY alert_id")
    assert events == [{"alert_id": i, "detail": "requested train:train_occupation_coder"}
                      for i in range(1, 16)]
    (row,) = demo.listed_after.json()
    assert (row["last_status"], row["open_alerts"], row["critical"]) == ("ok", 15, 8)
    assert row["last_message"] == monitor["message"]


def test_alert_show_has_its_events_and_the_figure_from_the_metrics_table(demo: Demo) -> None:
    alert_id = demo.alert_id("drift", "language")
    r = demo.cli("alerts", "show", str(alert_id), "--json")
    assert r.code == 0, r
    alert = r.json()
    assert (alert["id"], alert["monitor"], alert["check"], alert["target"], alert["state"]) \
        == (alert_id, MONITOR, "drift", "language", "firing")
    assert alert["value"] > alert["threshold"] == 0.1
    assert alert["summary"].startswith("raw/survey_responses.language: drifted against "
                                       "raw/survey_responses@0 (jensenshannon ")
    assert [(e["event"], e["detail"]) for e in alert["events"]] == [
        ("fired", alert["summary"]), ("notified:firing", "log only"),
        ("retraining", "requested train:train_occupation_coder")]
    assert alert["notifications"] == []  # no channel in the demo: the log only
    # the history is this check's figures in _silta/metrics, one per monitoring run
    metrics = delta_table(demo.root / "var" / "lake" / "_silta" / "metrics")
    mine = metrics.filter(pc.and_(pc.equal(metrics["monitor"], MONITOR), pc.and_(
        pc.equal(metrics["check"], "drift"), pc.equal(metrics["target"], "language"))))
    recorded = sorted(mine.select(["measured_at", "run_id", "metric", "value", "threshold",
                                   "status"]).to_pylist(), key=lambda m: m["measured_at"])
    once_run = _by_job(demo.once.json())[f"monitor:{MONITOR}"]["run_id"]
    drift_run = demo.monitor_run.json()[0]["run_id"]
    assert [(m["run_id"], m["status"]) for m in recorded] == [(once_run, "ok"),
                                                              (drift_run, "breach")]
    assert alert["history"] == [
        {**m, "measured_at": m["measured_at"].isoformat(timespec="seconds")}
        for m in recorded]
    assert alert["history"][-1]["value"] == alert["value"]
    assert alert["history"][0]["value"] < 0.1
    # the text view names the same
    text = demo.cli("alerts", "show", str(alert_id))
    assert text.code == 0, text
    assert text.out.startswith(f"alert {alert_id}: warning firing\n")
    assert f"what:      {MONITOR} / drift / language (model {MODEL})" in text.out


def test_an_alert_is_acknowledged_silenced_and_resolved(demo: Demo) -> None:
    alert_id = demo.alert_id("drift", "sector")
    other = demo.alert_id("drift", "language")
    me = getpass.getuser()
    r = demo.cli("alerts", "ack", str(alert_id), "--comment", "looking")
    assert r.code == 0, r
    assert r.out.startswith(f"alert {alert_id} acknowledged by {me}")
    listed = {a["id"]: a for a in demo.cli("alerts", "list", "--json").json()}
    assert (listed[alert_id]["state"], listed[alert_id]["acked_by"],
            listed[alert_id]["ack_comment"]) == ("acknowledged", me, "looking")
    assert listed[other]["state"] == "firing"
    assert [a["id"] for a in demo.cli("alerts", "list", "--state", "acknowledged",
                                      "--json").json()] == [alert_id]
    r = demo.cli("alerts", "ack", str(alert_id))
    assert r.code == 2 and f"alert {alert_id} was acknowledged by {me}" in r.err, r

    before = dt.datetime.now(dt.UTC)
    r = demo.cli("alerts", "silence", str(alert_id), "--for", "2h")
    after = dt.datetime.now(dt.UTC)
    assert r.code == 0, r
    listed = {a["id"]: a for a in demo.cli("alerts", "list", "--json").json()}
    until = _instant(listed[alert_id]["silenced_until"])
    two_hours = dt.timedelta(hours=2)
    assert before + two_hours - dt.timedelta(milliseconds=1) <= until <= after + two_hours
    assert r.out.startswith(f"alert {alert_id} silenced until "
                            f"{listed[alert_id]['silenced_until']} ")
    assert listed[other]["silenced_until"] is None
    (silence,) = ledger(demo.state_dir, "SELECT fingerprint, until, by FROM silences")
    assert silence == {"fingerprint": f"{MONITOR}|drift|sector",
                       "until": listed[alert_id]["silenced_until"], "by": me}

    r = demo.cli("alerts", "resolve", str(alert_id))
    assert r.code == 0, r
    assert r.out == f"alert {alert_id} resolved by {me}\n"
    open_ids = [a["id"] for a in demo.cli("alerts", "list", "--json").json()]
    assert alert_id not in open_ids and other in open_ids
    (resolved,) = demo.cli("alerts", "list", "--state", "resolved", "--json").json()
    assert (resolved["id"], resolved["state"], resolved["resolved_by"]) == (
        alert_id, "resolved", me)
    shown = demo.cli("alerts", "show", str(alert_id), "--json").json()
    assert [(e["event"], e["by"]) for e in shown["events"]] == [
        ("fired", None), ("notified:firing", None), ("retraining", None),
        ("acknowledged", me), ("silenced", me), ("resolved", me),
        ("notified:resolved", None)]
    assert shown["events"][3]["detail"] == "looking"
    assert shown["events"][4]["detail"] == f"until {listed[alert_id]['silenced_until']}"
    assert (shown["events"][5]["detail"], shown["events"][6]["detail"]) == (
        "resolved by hand", "log only")
    r = demo.cli("alerts", "resolve", str(alert_id))
    assert r.code == 2 and f"alert {alert_id} is already resolved" in r.err, r
    all_ids = [a["id"] for a in demo.cli("alerts", "list", "--all", "--json").json()]
    assert sorted(all_ids) == list(range(1, 16))


@pytest.mark.parametrize(("args", "message"), [
    (("alerts", "ack", "999"), "silta: alert '999' not found; see `silta alerts list`"),
    (("alerts", "show", "999", "--json"), "silta: alert '999' not found"),
    (("alerts", "resolve", "999"), "silta: alert '999' not found"),
    (("alerts", "silence", "1", "--for", "2x"),
     "silta: usage error: --for: '2x' is not a duration; write it like `90s`"),
    (("alerts", "silence", "1", "--for", "0s"), "--for: '0s' is not a positive duration"),
    (("alerts", "ack", "abc"), "argument id: 'abc' is not a whole number"),
    (("alerts", "list", "--state", "gone"), "argument --state: invalid choice: 'gone'"),
    (("alerts", "list", "--monitor", "watch_ocupation_coder"),
     "--monitor 'watch_ocupation_coder': no such monitor in "),
    (("monitors", "run", "nope"), "silta: monitor 'nope' not found; see `silta monitors list`"),
    (("monitors", "run", "nope", "--json"), "silta: monitor 'nope' not found"),
])
def test_bad_input_is_a_clear_usage_error(demo: Demo, args: tuple[str, ...],
                                          message: str) -> None:
    r = demo.cli(*args)
    assert r.code == 2, r
    assert message in r.err, r
    assert r.out == ""
