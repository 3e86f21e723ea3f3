"""`silta agent run` as a service: the single-instance lock, file arrival, settling, SIGTERM."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import (
    Background,
    background,
    delta_count,
    delta_table,
    ledger,
    silta,
    wait_for,
    write_csv,
)

pytestmark = pytest.mark.timeout(180)

HEADER = "id,n,label"


def _rows(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i},{i},{prefix}" for i in range(count)]


def _service_config(root: Path, **sync: Any) -> Path:
    return write_config(root, [{"name": "w", "target": "lake:raw/w", "watch": True,
                                "settle_seconds": 1, **sync}],
                        agent={"heartbeat_seconds": 1})


def _wait_alive(root: Path, config: Path, agent: Background) -> dict[str, Any]:
    """Wait until `silta status` shows this agent process alive and running."""
    def probe() -> dict[str, Any] | None:
        if not agent.alive():
            raise AssertionError(f"the agent exited with {agent.proc.returncode}\n"
                                 f"{agent.stderr()}")
        r = silta(root, "status", "--json", "--config", config)
        assert r.code == 0, r
        a: dict[str, Any] = r.json()["agent"]
        return a if a["alive"] and a["pid"] == agent.pid else None

    return wait_for("the agent's heartbeat in `silta status`", probe, timeout=30, interval=0.3)


def test_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    config = _service_config(tmp_path)

    with background(tmp_path, "agent", "run", "--config", config) as first:
        agent = _wait_alive(tmp_path, config, first)
        assert agent["state"] == "running"
        assert agent["name"] == "test-agent"

        r = silta(tmp_path, "agent", "run", "--once", "--config", config)
        assert r.code == 1, r
        assert f"silta: another agent is running on state folder {tmp_path / 'state'} " \
               f"(pid {first.pid} on " in r.err, r
        assert "Traceback" not in r.err
        assert first.alive()

        started = time.monotonic()
        assert first.terminate(timeout=10) == 0, first.stderr()
        assert time.monotonic() - started < 10
    log = first.stderr()
    assert "received SIGTERM" in log
    assert "agent test-agent stopped" in log
    assert "Traceback" not in log

    r = silta(tmp_path, "status", "--json", "--config", config)
    assert r.json()["agent"]["alive"] is False
    assert r.json()["agent"]["state"] == "stopped"
    # the lock went with the first agent
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    assert r.code == 0, r


def test_service_picks_up_files_and_never_reads_a_partial_file(tmp_path: Path, duck: Any
                                                                ) -> None:
    # source "inbox:*": the glob matches temporary names too, so the agent must skip them
    config = _service_config(tmp_path, source="inbox:*")
    inbox = tmp_path / "inbox"
    table = tmp_path / "lake" / "raw" / "w"

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        _wait_alive(tmp_path, config, agent)

        # 1. a file still under its temporary name is not read; a renamed one is
        tmp = inbox / "first.csv.tmp"
        tmp.write_text("\n".join([HEADER, *_rows("first", 50)]) + "\n", encoding="utf-8")
        write_csv(inbox / "marker.csv", HEADER, _rows("marker", 5))
        wait_for("marker.csv in the table", lambda: delta_count(table) == 5, timeout=20)
        assert sorted(set(delta_table(table)["_silta_source"].to_pylist())) == \
            ["inbox:marker.csv"]
        os.replace(tmp, inbox / "first.csv")
        wait_for("first.csv in the table", lambda: delta_count(table) == 55, timeout=20)

        # 2. a file written slowly under its final name is read only once it settled
        slow_rows = _rows("slow", 40)
        done = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                with open(inbox / "slow.csv", "w", encoding="utf-8") as f:
                    f.write(HEADER + "\n")
                    f.flush()
                    for line in slow_rows:
                        time.sleep(0.1)
                        f.write(line + "\n")
                        f.flush()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                done.set()

        thread = threading.Thread(target=writer, daemon=True)
        seen: list[int | None] = []
        started = time.monotonic()
        thread.start()
        while not done.is_set():
            seen.append(delta_count(table))
            time.sleep(0.05)
        thread.join()
        assert not errors, errors
        assert time.monotonic() - started >= 3.5  # it really was written slowly
        assert set(seen) == {55}, f"the table changed while slow.csv was written: {seen}"

        def settled() -> bool:
            count = delta_count(table)
            seen.append(count)
            return count == 95

        wait_for("slow.csv in the table", settled, timeout=20, interval=0.05)
        assert set(seen) == {55, 95}, f"a partial file reached the table: {sorted(set(seen))}"

        assert agent.terminate(timeout=15) == 0, agent.stderr()
    log = agent.stderr()
    assert "Traceback" not in log
    assert " ERROR " not in log

    expected = {"inbox:marker.csv": 5, "inbox:first.csv": 50, "inbox:slow.csv": 40}
    data = delta_table(table)
    assert data.num_rows == 95
    assert len(set(data["id"].to_pylist())) == 95
    assert {s: data["_silta_source"].to_pylist().count(s) for s in expected} == expected
    assert dict(duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1")) == \
        expected
    # the slow file landed whole, in one batch, with every line it ended with
    assert duck_rows(duck, table, "SELECT count(DISTINCT _silta_batch), count(*), "
                     "count(DISTINCT id), max(n) FROM t WHERE _silta_source = "
                     "'inbox:slow.csv'") == [(1, 40, 40, 39)]


def test_sync_run_while_the_agent_runs_is_queued_for_it(tmp_path: Path) -> None:
    # "m" has neither a schedule nor a watch: only the operator's command runs it
    config = write_config(tmp_path, [
        {"name": "w", "target": "lake:raw/w", "watch": True, "settle_seconds": 1},
        {"name": "m", "source": "inbox:*.txt", "target": "lake:raw/m"},
    ], agent={"heartbeat_seconds": 1})
    table = tmp_path / "lake" / "raw" / "m"
    write_csv(tmp_path / "inbox" / "manual.txt", HEADER, _rows("manual", 7))

    with background(tmp_path, "agent", "run", "--config", config) as agent:
        _wait_alive(tmp_path, config, agent)
        assert delta_count(table) is None

        r = silta(tmp_path, "sync", "run", "m", "--config", config)
        assert r.code == 0, r
        assert r.out == ("the agent is running: queued a run of m for it (command 1); "
                         "follow it with `silta status`\n")
        wait_for("the queued run of m", lambda: delta_count(table) == 7, timeout=20)

        def finished() -> dict[str, Any] | None:
            rows = ledger(tmp_path / "state", "SELECT * FROM commands")
            return rows[0] if rows and rows[0]["status"] == "done" else None

        command = wait_for("the command to be marked done", finished, timeout=10)
        assert (command["kind"], command["result"]) == ("sync.run", "queued a run of sync:m")
        # the table holds the rows a moment before the run is closed in the state store
        runs = wait_for("the run of m to be closed", lambda: [
            r for r in ledger(tmp_path / "state",
                              "SELECT trigger, status, rows FROM runs WHERE name='m'")
            if r["status"] != "running"], timeout=10)
        assert runs == [{"trigger": f"operator:{command['os_user']}", "status": "ok",
                         "rows": 7}]
        assert agent.terminate(timeout=15) == 0, agent.stderr()
    assert "Traceback" not in agent.stderr()
