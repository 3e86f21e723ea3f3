"""The service stopped mid-work: SIGTERM drains the batch in flight, `kill -9` is recovered."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import background, delta_table, ledger, silta, wait_for, write_csv

pytestmark = pytest.mark.timeout(180)

FILES = 150  # 50 batches: more than the agent can finish while a loaded test looks away
HEADER = "id,file,row"


def _make_files(inbox: Path) -> dict[str, int]:
    expected = {}
    for f in range(FILES):
        n = 3000 + f
        write_csv(inbox / f"r{f:03d}.csv", HEADER, [f"r{f:03d}-{r},{f},{r}" for r in range(n)])
        expected[f"inbox:r{f:03d}.csv"] = n
    return expected


def _config(root: Path) -> Path:
    return write_config(root, [{"name": "r", "target": "lake:raw/r", "watch": True,
                                "settle_seconds": 0, "batch_max_files": 3}],
                        agent={"heartbeat_seconds": 1})


def _batches(root: Path) -> list[dict[str, Any]]:
    try:
        return ledger(root / "state", "SELECT seq, status, files FROM batches ORDER BY seq")
    except sqlite3.Error:  # not created yet, or its schema not yet made
        return []


def _first_pending(root: Path) -> bool:
    return any(b["status"] == "pending" for b in _batches(root))


def _assert_exactly_once(table: Path, expected: dict[str, int], duck: Any) -> None:
    total = sum(expected.values())
    data = delta_table(table)
    assert data.num_rows == total
    assert len(set(data["id"].to_pylist())) == total
    assert Counter(data["_silta_source"].to_pylist()) == expected
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [
        (total, total)]
    assert dict(duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1")) \
        == expected


def test_sigterm_finishes_the_batch_in_flight_then_stops(tmp_path: Path, duck: Any) -> None:
    config = _config(tmp_path)
    expected = _make_files(tmp_path / "inbox")
    table = tmp_path / "lake" / "raw" / "r"

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        wait_for("the first batch to be planned", lambda: _first_pending(tmp_path),
                 timeout=30, interval=0.002)
        agent.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert agent.proc.wait(timeout=15) == 0, agent.stderr()
        assert time.monotonic() - started < 10
    log = agent.stderr()
    assert "received SIGTERM" in log
    assert "stopping between batches (shutdown)" in log
    assert "Traceback" not in log

    batches = _batches(tmp_path)
    # the batch in flight was finished, not left pending or abandoned; the rest waits
    assert [b for b in batches if b["status"] != "committed"] == []
    landed = sum(b["files"] for b in batches)
    assert 1 <= landed < FILES, batches

    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    (outcome,) = r.json()
    assert outcome["files"] == FILES - landed
    _assert_exactly_once(table, expected, duck)


def test_service_killed_mid_batch_recovers_when_it_starts_again(tmp_path: Path, duck: Any
                                                                 ) -> None:
    config = _config(tmp_path)
    expected = _make_files(tmp_path / "inbox")
    table = tmp_path / "lake" / "raw" / "r"

    with background(tmp_path, "agent", "run", "--config", config, name="first") as first:
        wait_for("the first batch to be planned", lambda: _first_pending(tmp_path),
                 timeout=30, interval=0.002)
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
    assert [b["status"] for b in _batches(tmp_path)][-1] in ("pending", "committed")

    # the kernel dropped the lock with the process: a new agent starts at once
    with background(tmp_path, "agent", "run", "--config", config, name="second") as second:
        wait_for("every row in the table", lambda: sum(
            b["files"] for b in _batches(tmp_path) if b["status"] == "committed") == FILES,
            timeout=60, interval=0.2)
        r = silta(tmp_path, "status", "--json", "--config", config)
        agent = r.json()["agent"]
        assert (agent["alive"], agent["pid"]) == (True, second.pid)
        assert second.terminate(timeout=15) == 0, second.stderr()
    log = second.stderr()
    assert "run(s) were left running by an agent that stopped; marked interrupted" in log
    assert "Traceback" not in log

    runs = ledger(tmp_path / "state", "SELECT status FROM runs ORDER BY started_at")
    assert runs[0]["status"] == "interrupted"
    assert "running" not in {r["status"] for r in runs}
    assert [b for b in _batches(tmp_path) if b["status"] not in ("committed", "abandoned")] \
        == []
    _assert_exactly_once(table, expected, duck)
