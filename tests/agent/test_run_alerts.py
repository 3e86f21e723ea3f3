"""The agent's own runs become alerts: failed, files set aside, cut short by a dead agent."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.alerts import AlertBook
from agent.run_alerts import record_interrupted
from agent.state import StateStore
from tests.conftest import write_config
from tests.e2e._cli import silta


def _alerts(state_dir: Path) -> list[tuple[str, str, str, str, int]]:
    with sqlite3.connect(state_dir / "silta.db") as db:
        return [tuple(r) for r in db.execute(  # type: ignore[misc]
            "SELECT check_name, target, state, severity, count FROM alerts WHERE "
            "monitor='agent' ORDER BY id")]


def _put(inbox: Path, name: str, text: str) -> None:
    (inbox / name).write_text(text, encoding="utf-8")
    old = time.time() - 60
    os.utime(inbox / name, (old, old))


def test_a_failing_sync_fires_escalates_then_resolves(make_engine: Any, tmp_path: Path
                                                      ) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox = tmp_path / "inbox"
    shutil.rmtree(inbox)
    inbox.write_text("not a folder")  # the connector's folder is a file: every run fails
    out = engine.run("s")
    assert out.status == "failed"
    assert _alerts(tmp_path / "state") == [("run_failed", "sync:s", "firing", "warning", 1)]
    (alert,) = AlertBook(engine.state).find()
    assert alert["summary"].startswith("sync s failed: ")
    assert str(inbox) in alert["summary"]
    assert alert["last_run_id"] == out.run_id

    engine.run("s")
    assert _alerts(tmp_path / "state") == [("run_failed", "sync:s", "firing", "warning", 2)]
    third = engine.run("s")
    assert _alerts(tmp_path / "state") == [("run_failed", "sync:s", "firing", "critical", 3)]
    (alert,) = AlertBook(engine.state).find()
    assert "(3 runs in a row)" in alert["summary"]
    assert alert["last_run_id"] == third.run_id

    inbox.unlink()
    inbox.mkdir()
    _put(inbox, "a.csv", "id\n1\n")
    ok = engine.run("s")
    assert (ok.status, ok.rows) == ("ok", 1)
    assert _alerts(tmp_path / "state") == [("run_failed", "sync:s", "resolved", "critical", 3)]
    (alert,) = AlertBook(engine.state).find()
    assert alert["resolved_by"] == "auto"
    # a later failure is a new alert, not the old one reopened
    shutil.rmtree(inbox)
    inbox.write_text("x")
    engine.run("s")
    assert [a[:3] for a in _alerts(tmp_path / "state")] == [
        ("run_failed", "sync:s", "resolved"), ("run_failed", "sync:s", "firing")]


def test_files_set_aside_stay_alerted_until_a_person_resolves(make_engine: Any,
                                                              tmp_path: Path) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox = tmp_path / "inbox"
    _put(inbox, "good.csv", "id,n\n1,2\n")
    _put(inbox, "bad.csv", "id,n\n1,2,3,4\n")
    out = engine.run("s")
    assert out.status == "partial"
    assert _alerts(tmp_path / "state") == [("quarantined", "sync:s", "firing", "warning", 1)]
    (alert,) = AlertBook(engine.state).find()
    assert "set 1 file(s) aside as unreadable: bad.csv: " in alert["summary"]
    # a clean run does not resolve it: the file still waits in quarantine
    _put(inbox, "good2.csv", "id,n\n3,4\n")
    assert engine.run("s").status == "ok"
    assert _alerts(tmp_path / "state") == [("quarantined", "sync:s", "firing", "warning", 1)]
    _put(inbox, "bad2.csv", "id,n\n\"unclosed\n")
    assert engine.run("s").status == "partial"
    assert _alerts(tmp_path / "state") == [("quarantined", "sync:s", "firing", "warning", 2)]


def test_runs_left_running_by_a_dead_agent_are_alerted_once_per_job(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state")
    first = state.start_run("sync", "s", "schedule", "a")
    state.start_run("sync", "s", "watch", "a")
    other = state.start_run("predict", "p", "schedule", "a")
    stale = state.interrupt_stale_runs()
    assert sorted((r["kind"], r["name"]) for r in stale) == [
        ("predict", "p"), ("sync", "s"), ("sync", "s")]
    record_interrupted(state, None, "a", stale)
    assert sorted(a[:4] for a in _alerts(tmp_path / "state")) == [
        ("interrupted", "predict:p", "firing", "warning"),
        ("interrupted", "sync:s", "firing", "warning")]
    found = {a["target"]: a for a in AlertBook(state).find()}
    assert found["sync:s"]["last_run_id"] == first
    assert found["predict:p"]["last_run_id"] == other
    assert "was cut short (the agent stopped)" in found["predict:p"]["summary"]
    state.close()


def test_the_agent_alerts_a_killed_run_at_start_and_resolves_it_after_a_good_run(
        tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    state = StateStore(tmp_path / "state")
    killed = state.start_run("sync", "s", "schedule", "test-agent")  # as kill -9 leaves it
    state.close()
    _put(tmp_path / "inbox", "a.csv", "id\n1\n")
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    assert r.code == 0, r
    assert "1 run(s) were left running by an agent that stopped" in r.err
    # raised at start, resolved by the pass's own good run of the same sync
    assert _alerts(tmp_path / "state") == [("interrupted", "sync:s", "resolved", "warning", 1)]
    with sqlite3.connect(tmp_path / "state" / "silta.db") as db:
        assert db.execute("SELECT status FROM runs WHERE id=?", (killed,)).fetchone() == (
            "interrupted",)
        assert db.execute("SELECT last_run_id FROM alerts").fetchone() == (killed,)
    listed = silta(tmp_path, "alerts", "list", "--all", "--json", "--config", config)
    assert listed.code == 0, listed
    assert [(a["monitor"], a["check"], a["state"]) for a in listed.json()] == [
        ("agent", "interrupted", "resolved")]


def test_a_file_whose_name_is_unsafe_is_reported_and_alerted_until_renamed(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox = tmp_path / "inbox"
    _put(inbox, "good.csv", "id\n1\n")
    _put(inbox, "bad\x1b[31m.csv", "id\n2\n")
    out = engine.run("s")
    assert (out.status, out.files, out.rows) == ("ok", 1, 1)
    assert out.refused == [("bad\\x1b[31m.csv", "path 'bad\\x1b[31m.csv' contains a control "
                                                "character")]
    assert _alerts(tmp_path / "state") == [("refused_names", "sync:s", "firing", "warning", 1)]
    (alert,) = AlertBook(engine.state).find()
    assert alert["summary"] == (
        "sync s does not read 1 file(s) whose names are unsafe (control characters, "
        "backslashes, not UTF-8); rename them: bad\\x1b[31m.csv")
    assert "\x1b" not in alert["summary"]
    (run,) = engine.state.runs(kind="sync", name="s", limit=1)
    assert run["error"] == ("not read: bad\\x1b[31m.csv: path 'bad\\x1b[31m.csv' contains a "
                            "control character")
    assert (inbox / "bad\x1b[31m.csv").read_text() == "id\n2\n"  # left where it was
    engine.run("s")
    assert _alerts(tmp_path / "state") == [("refused_names", "sync:s", "firing", "warning", 2)]
    os.rename(inbox / "bad\x1b[31m.csv", inbox / "renamed.csv")
    fixed = engine.run("s")
    assert (fixed.status, fixed.rows, fixed.refused) == ("ok", 1, [])
    assert _alerts(tmp_path / "state") == [("refused_names", "sync:s", "resolved", "warning",
                                            2)]
