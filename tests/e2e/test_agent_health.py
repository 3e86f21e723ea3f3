"""`silta agent health`: 0 while the agent runs and its jobs are well, 1 otherwise, with
the reason, through the real CLI against a real agent process."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from agent.state import FILE_NAME, now
from tests.conftest import write_config
from tests.e2e._cli import background, silta, wait_for

pytestmark = pytest.mark.timeout(120)


def _health(root: Path, config: Path, *args: str) -> tuple[int, str]:
    r = silta(root, "agent", "health", "--config", config, *args)
    assert "Traceback" not in r.err, r
    return r.code, r.out


def _failed_run(root: Path, name: str, error: str) -> None:
    con = sqlite3.connect(root / "state" / FILE_NAME)
    with con:
        con.execute("INSERT INTO runs (id, kind, name, trigger, status, agent, started_at, "
                    "finished_at, error) VALUES ('bad1', 'sync', ?, 'schedule', 'failed', "
                    "'test-agent', ?, ?, ?)", (name, now(), now(), error))
    con.close()


def test_never_started_then_stopped_is_unhealthy(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    code, out = _health(tmp_path, config)
    assert code == 1
    assert "FAIL agent test-agent: never started" in out and out.endswith("UNHEALTHY\n")
    assert silta(tmp_path, "agent", "run", "--once", "--config", config).code == 0
    code, out = _health(tmp_path, config)
    assert code == 1
    assert "FAIL agent test-agent: not running: stopped cleanly" in out


def test_a_running_agent_is_healthy_until_a_job_fails_or_it_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}, {"name": "t", "target": "lake:raw/u"}],
                          agent={"heartbeat_seconds": 1})
    with background(tmp_path, "agent", "run", "--config", config) as agent:
        wait_for("a healthy agent", lambda: _health(tmp_path, config)[0] == 0)
        code, out = _health(tmp_path, config)
        assert out.splitlines()[0].startswith(f"ok   agent test-agent: alive, pid {agent.pid}")
        assert out.endswith("healthy\n")

        _failed_run(tmp_path, "s", "connection refused [red]x[/]\nsecond line")
        code, out = _health(tmp_path, config)
        assert code == 1
        assert re.search(r"^FAIL sync:s: last run failed \d+ s ago: ", out, re.M), out
        assert out.count("connection refused [red]x[/]") == 1 and "second line" not in out
        assert _health(tmp_path, config, "--max-failed", "1")[0] == 0

        r = silta(tmp_path, "agent", "health", "--json", "--config", config)
        result = json.loads(r.out)
        assert r.code == 1 and result["healthy"] is False
        assert result["failed_jobs"] == ["sync:s"]
        assert [c["check"] for c in result["checks"]] == ["agent test-agent", "sync:s"]
        assert [c["ok"] for c in result["checks"]] == [True, False]

        os.kill(agent.pid, 9)  # the kernel frees its lock; its heartbeat stays behind
        agent.proc.wait(timeout=10)
    time.sleep(0.2)
    code, out = _health(tmp_path, config)
    assert code == 1
    assert "FAIL agent test-agent: down: no fresh heartbeat" in out


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])
    r = silta(tmp_path, "agent", "health", "--config", config, "--max-failed", "-1")
    assert r.code == 2 and "--max-failed" in r.err and "0 or more" in r.err
    r = silta(tmp_path, "agent", "health", "--config", tmp_path / "nope.toml")
    assert r.code == 2 and "nope.toml" in r.err and "Traceback" not in r.err
