"""Faults of concurrency and time: a second agent on one state folder, two agents on one
table, and the wall clock stepping back and forth under a running service.

What is broken, and what must hold:

- a second `silta agent run` (service, and `--once`) on a state folder an agent holds: it
  is refused at once, naming the holder's pid and host and the state folder, and writes
  nothing (state store, lake, inbox); the first agent goes on. After the first is killed
  with SIGKILL in the middle of a run, a new agent starts at once (the flock died with the
  process), marks the run interrupted (recorded and alerted) and lands every file once.
- two agents with their own state folders and the same sync name (so the same app id)
  syncing into one lake table, their files arriving at the same moments: every file of
  both lands exactly once, in runs that do not fail; the Delta log and both ledgers agree
  on who committed each batch (a batch number taken by the other agent is planned again).
- the service's wall clock steps back 2 h and then forward 3 h (libfaketime: Debian's
  `faketime` package must be installed; without it this test fails, it is not skipped):
  the cron sync keeps running after the step back, a step forward gives one catch-up run
  and not a burst, the heartbeat and `silta agent health` stay sane, and the files dropped
  around each step land exactly once (one written before the step back has an mtime 2 h
  ahead of the agent's clock).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import (
    SILTA,
    Background,
    background,
    cli_env,
    delta_count,
    delta_table,
    ledger,
    silta,
    wait_for,
    write_csv,
)

HEADER = "id,n,label"
#: Debian's faketime package, on whatever architecture this is (.ci/run installs it)
FAKETIME_LIB = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
                    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"))
LOCK_EXIT = 1  # agent/cli.py: a held lock is EXIT_FAILED (systemd restarts it; 2 it would not)


def _rows(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i},{i},{prefix}" for i in range(count)]


def _runs(state: Path) -> list[dict[str, Any]]:
    try:
        # in the order they started: rowid, as started_at follows a stepped clock
        return ledger(state, "SELECT id, name, trigger, status, files, rows, error FROM runs "
                             "ORDER BY rowid")
    except sqlite3.Error:  # not created yet
        return []


def _alerts(state: Path) -> list[tuple[str, str, str]]:
    return [(a["check_name"], a["target"], a["state"]) for a in ledger(
        state, "SELECT check_name, target, state FROM alerts WHERE monitor='agent' ORDER BY id")]


def _counts(state: Path) -> dict[str, int]:
    """Rows in every table of the state store (what a refused agent must not change)."""
    names = [r["name"] for r in ledger(state, "SELECT name FROM sqlite_master WHERE "
                                              "type='table' ORDER BY name")]
    return {n: int(ledger(state, f'SELECT count(*) AS c FROM "{n}"')[0]["c"]) for n in names}


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _wait_alive(state: Path, agent: Background) -> None:
    """Wait for this agent's "running" heartbeat (read from the store: no CLI per poll)."""
    def probe() -> bool:
        if not agent.alive():
            raise AssertionError(f"the agent exited with {agent.proc.returncode}\n"
                                 f"{agent.stderr()}")
        try:
            beats = ledger(state, "SELECT pid, state FROM heartbeats")
        except sqlite3.Error:  # not created yet
            return False
        return beats == [{"pid": agent.pid, "state": "running"}]

    wait_for("the agent's heartbeat", probe, timeout=40, interval=0.2)


def _has_rows(table: Path, rows: int) -> bool:
    return delta_count(table) == rows


def _assert_table(table: Path, expected: dict[str, int], duck: Any) -> None:
    """Every source file exactly once, every id once, read by deltalake and by DuckDB."""
    total = sum(expected.values())
    data = delta_table(table)
    assert data.num_rows == total
    assert len(set(data["id"].to_pylist())) == total
    assert dict(Counter(data["_silta_source"].to_pylist())) == expected
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [
        (total, total)]
    assert dict(duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1")) \
        == expected


# -- 1. a second agent on the same state folder ------------------------------------------
def _refused(root: Path, config: Path, first: Background, *args: str) -> None:
    r = silta(root, "agent", "run", *args, "--config", config, timeout=60)
    assert r.code == LOCK_EXIT, r
    # the whole message: the state folder, the holder (pid and host), what to do
    assert r.err.startswith(
        f"silta: another agent is running on state folder {root / 'state'} (pid {first.pid} "
        f"on {socket.gethostname()} since "), r
    assert r.err.endswith("); stop it first, or give this one its own [agent].state_dir\n"), r
    assert r.err.count("\n") == 1, r
    assert r.out == ""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_second_agent_is_refused_and_a_killed_one_frees_the_lock(tmp_path: Path, duck: Any
                                                                 ) -> None:
    config = write_config(tmp_path, [{"name": "w", "target": "lake:raw/w", "watch": True,
                                      "settle_seconds": 0}], agent={"heartbeat_seconds": 1})
    state, inbox, table = tmp_path / "state", tmp_path / "inbox", tmp_path / "lake/raw/w"
    expected = {"inbox:a.csv": 30}
    write_csv(inbox / "a.csv", HEADER, _rows("a", 30))

    with background(tmp_path, "agent", "run", "--config", config, name="first") as first:
        _wait_alive(state, first)
        wait_for("a.csv in the table", lambda: delta_count(table) == 30)
        wait_for("the first run recorded", lambda: [r["status"] for r in _runs(state)] == ["ok"])
        # ... and its record in the lake (written by a thread of its own, a moment later)
        wait_for("the run's record in _silta/runs", lambda: (
            tmp_path / "lake/_silta/runs/_delta_log/00000000000000000000.json").exists())
        holder = (state / "agent.lock").read_text(encoding="utf-8")
        before = (_counts(state), _runs(state), _files(tmp_path / "lake"), _files(inbox),
                  _files(state))

        # a second service and a second --once, at the same time (one CLI start-up of time)
        with ThreadPoolExecutor(2) as pool:
            for refused in [pool.submit(_refused, tmp_path, config, first, *args)
                            for args in ((), ("--once",))]:
                refused.result()
        assert first.alive()
        # nothing written by the refused ones: no run, no heartbeat, no lock text, no file
        assert (_counts(state), _runs(state), _files(tmp_path / "lake"), _files(inbox),
                _files(state)) == before
        assert (state / "agent.lock").read_text(encoding="utf-8") == holder
        assert ledger(state, "SELECT pid FROM heartbeats") == [{"pid": first.pid}]

        # the first agent goes on
        write_csv(inbox / "more.csv", HEADER, _rows("more", 7))
        expected["inbox:more.csv"] = 7
        wait_for("more.csv in the table", lambda: delta_count(table) == 37)
        wait_for("its run recorded", lambda: [r["status"] for r in _runs(state)]
                 == ["ok", "ok"])
        assert [(r["trigger"], r["status"], r["files"], r["rows"]) for r in _runs(state)] == [
            ("startup-scan", "ok", 1, 30), ("file-arrival", "ok", 1, 7)]
        assert DeltaTable(str(table)).version() == 1

        # kill -9 in the middle of a run: frozen first (SIGSTOP), so what is seen is killed
        write_csv(inbox / "big.csv", HEADER, _rows("big", 200_000))
        expected["inbox:big.csv"] = 200_000
        wait_for("the run of big.csv started", lambda: len(_runs(state)) == 3
                 and _runs(state)[2]["status"] == "running", timeout=30, interval=0.005)
        os.kill(first.pid, signal.SIGSTOP)
        killed = _runs(state)[2]
        assert killed["status"] == "running"
        os.kill(first.pid, signal.SIGKILL)
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
    # Killed after its commit reached the Delta log (a window of milliseconds) the batch
    # is recovered from the log; otherwise the next run writes big.csv.
    landed = [h["version"] for h in DeltaTable(str(table)).history()
              if h.get("silta.run_id") == killed["id"]]
    assert landed in ([], [2])

    # the flock went with the process: a new agent starts at once and recovers
    with background(tmp_path, "agent", "run", "--config", config, name="second") as second:
        _wait_alive(state, second)
        wait_for("big.csv in the table", lambda: delta_count(table) == 200_037, timeout=60)
        wait_for("the recovering run recorded", lambda: len(_runs(state)) == 4
                 and _runs(state)[3]["status"] == "ok", timeout=30)
        assert second.terminate() == 0, second.stderr()
    log = second.stderr()
    assert "1 run(s) were left running by an agent that stopped; marked interrupted" in log
    assert "Traceback" not in log
    runs = _runs(state)
    assert [(r["id"], r["status"]) for r in runs[2:3]] == [(killed["id"], "interrupted")]
    assert runs[2]["error"] == ("the agent stopped before the run finished (killed, out of "
                                "memory or power lost); its work is recovered from the "
                                "ledger")
    assert [(r["trigger"], r["status"], r["files"], r["rows"]) for r in runs[3:]] == [
        ("startup-scan", "ok", 0, 0) if landed else ("startup-scan", "ok", 1, 200_000)]
    # alerted at the next start (one alert, naming the run), resolved by the good run
    assert _alerts(state) == [("interrupted", "sync:w", "resolved")]
    assert killed["id"] in ledger(state, "SELECT summary FROM alerts")[0]["summary"]
    batches = ledger(state, "SELECT status, count(*) AS n FROM batches GROUP BY status "
                            "ORDER BY status")
    if landed:  # its pending batch was settled from the log, not written again
        assert batches == [{"status": "committed", "n": 3}]
    else:  # killed before the batch was planned, or after (abandoned, planned again)
        assert batches in ([{"status": "committed", "n": 3}],
                           [{"status": "abandoned", "n": 1}, {"status": "committed", "n": 3}])
    assert DeltaTable(str(table)).version() == 2
    _assert_table(table, expected, duck)
    # nothing outside the configured roots
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "first.stderr", "first.stdout", "inbox", "lake", "second.stderr", "second.stdout",
        "silta.toml", "state"]


# -- 1b. two agents, two state folders, one lake table -----------------------------------
def _agent_config(root: Path, lake: Path) -> Path:
    root.mkdir(parents=True)
    (root / "inbox").mkdir()
    path = root / "silta.toml"
    path.write_text("\n".join([
        "[agent]", f'name = "{root.name}"', 'state_dir = "state"', "heartbeat_seconds = 1",
        "[lake]", f'uri = "{lake}"',
        "[connectors.inbox]", 'type = "folder"', 'path = "inbox"',
        # the same sync name: both agents write app id silta/x into one table
        "[[syncs]]", 'name = "x"', 'source = "inbox:*.csv"', 'target = "lake:raw/x"',
        "watch = true", "settle_seconds = 0",
    ]) + "\n", encoding="utf-8")
    return path


@pytest.mark.timeout(180)
def test_two_agents_on_one_table_land_every_file_once(tmp_path: Path, duck: Any) -> None:
    lake = tmp_path / "lake"
    table = lake / "raw" / "x"
    roots = {n: tmp_path / n for n in ("east", "west")}
    configs = {n: _agent_config(r, lake) for n, r in roots.items()}
    expected: dict[str, int] = {}
    with background(roots["east"], "agent", "run", "--config", configs["east"]) as east, \
            background(roots["west"], "agent", "run", "--config", configs["west"]) as west:
        _wait_alive(roots["east"] / "state", east)
        _wait_alive(roots["west"] / "state", west)
        for wave in range(3):
            # both agents see new files at the same moment: their commits race
            for n, r in roots.items():
                for f in range(3):
                    rows = 50 + 10 * wave + f
                    write_csv(r / "inbox" / f"{n}-{wave}-{f}.csv", HEADER,
                              _rows(f"{n}{wave}{f}", rows))
                    expected[f"inbox:{n}-{wave}-{f}.csv"] = rows
            total = sum(expected.values())
            wait_for(f"wave {wave} in the table", partial(_has_rows, table, total), timeout=40)
        for agent in (east, west):
            assert agent.terminate() == 0, agent.stderr()
    for agent in (east, west):
        assert "Traceback" not in agent.stderr()
    _assert_table(table, expected, duck)
    for n, r in roots.items():
        runs = _runs(r / "state")
        assert {x["status"] for x in runs} == {"ok"}, runs
        assert sum(x["files"] for x in runs) == 9
        assert sum(x["rows"] for x in runs) == sum(v for k, v in expected.items()
                                                   if k.startswith(f"inbox:{n}-"))
        assert _alerts(r / "state") == []
    # The Delta log and the two ledgers agree commit for commit: each seq of app id
    # silta/x was committed by one agent, and a seq the other one had planned too is a
    # failed batch of its ledger whose files were written again under a later seq.
    log = {int(h["silta.seq"]): (h["silta.agent"], int(h["silta.file_count"]))
           for h in DeltaTable(str(table)).history() if h.get("silta.sync") == "x"}
    committed = {n: {int(b["seq"]): int(b["files"]) for b in ledger(
        r / "state", "SELECT seq, files FROM batches WHERE status='committed'")}
        for n, r in roots.items()}
    assert log == {seq: (n, files) for n, c in committed.items() for seq, files in c.items()}
    assert len(log) == sum(len(c) for c in committed.values())  # no seq committed twice
    assert DeltaTable(str(table)).version() == len(log) - 1
    for n, r in roots.items():
        other = set(committed["west" if n == "east" else "east"])
        taken = ledger(r / "state", "SELECT seq, error FROM batches WHERE status != "
                                    "'committed'")
        assert [b for b in taken if int(b["seq"]) not in other
                or b["error"] != "seq taken by another writer"] == []
        assert (r / "agent.stderr").read_text(encoding="utf-8").count(
            "was taken by another writer") == len(taken)
        assert sum(committed[n].values()) == 9


# -- 2. the wall clock steps back and forward -----------------------------------------------
def _faked_env(stamp: Path) -> dict[str, str]:
    return cli_env(LD_PRELOAD=str(FAKETIME_LIB), FAKETIME_TIMESTAMP_FILE=str(stamp),
                   FAKETIME_NO_CACHE="1",
                   # a stepped clock moves CLOCK_REALTIME only; monotonic time goes on
                   FAKETIME_DONT_FAKE_MONOTONIC="1",
                   # files keep their real mtimes: the test sets them as a jumped clock would
                   NO_FAKE_STAT="1")


class _FakedAgent(Background):
    """A background agent whose clock reads ``stamp`` (libfaketime)."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str | os.PathLike[str]) -> None:
        self.out_path = cwd / "agent.stdout"
        self.err_path = cwd / "agent.stderr"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*SILTA, *map(str, args)], cwd=cwd, env=env,
                                         stdout=out, stderr=err)


@contextmanager
def _faked_agent(cwd: Path, env: dict[str, str], *args: str | os.PathLike[str]
                 ) -> Iterator[Background]:
    agent = _FakedAgent(cwd, env, *args)
    try:
        yield agent
    finally:
        agent.kill()


def _step(stamp: Path, hours: int, second: int = 52) -> float:
    """Set the faked clock ``hours`` from the real one, nudged to ``second`` of a minute
    (a cron fire comes a few seconds later); returns the offset in seconds."""
    target = time.time() + hours * 3600
    offset = hours * 3600 + (second - int(target) % 60) % 60
    tmp = stamp.with_name(stamp.name + ".new")
    tmp.write_text(f"{offset:+d}\n", encoding="ascii")
    os.replace(tmp, stamp)  # libfaketime re-reads the file on every call: never half of it
    return float(offset)


def _drop(inbox: Path, name: str, rows: int, offset: float) -> None:
    # the exporter runs on the same machine: its files get the stepped clock's mtime
    path = inbox / name
    write_csv(path, HEADER, _rows(name.removesuffix(".csv"), rows))
    stamp = time.time() + offset
    os.utime(path, (stamp, stamp))


def _health(root: Path, config: Path, env: dict[str, str]) -> dict[str, Any]:
    r = silta(root, "agent", "health", "--json", "--config", config, env=env)
    assert r.code == 0, r
    out: dict[str, Any] = r.json()
    return out


def _beat(state: Path) -> dt.datetime:
    return dt.datetime.fromisoformat(ledger(state, "SELECT beat_at FROM heartbeats")[0][
        "beat_at"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_clock_steps_back_and_forward_under_a_cron_sync(tmp_path: Path, duck: Any) -> None:
    assert FAKETIME_LIB.exists(), "install Debian's faketime package (apt-get install faketime)"
    stamp = tmp_path / "faketime.rc"
    # start at :05 of a faked minute: no cron fire while the agent starts (up to 40 s)
    _step(stamp, 0, second=5)
    env = _faked_env(stamp)
    config = write_config(tmp_path, [{"name": "c", "target": "lake:raw/c", "watch": False,
                                      "schedule": "* * * * *"}],
                          agent={"heartbeat_seconds": 1})
    state, inbox, table = tmp_path / "state", tmp_path / "inbox", tmp_path / "lake/raw/c"
    expected: dict[str, int] = {}

    with _faked_agent(tmp_path, env, "agent", "run", "--config", config) as agent:
        _wait_alive(state, agent)
        assert _runs(state) == []
        seen = 0

        # written before the step: its mtime is then 2 h ahead of the agent's clock
        _drop(inbox, "before.csv", 15, 0.0)
        expected["inbox:before.csv"] = 15
        # 2 h back: APScheduler's next fire stays 2 h ahead unless the agent re-counts it
        offset = _step(stamp, -2)
        _drop(inbox, "back.csv", 20, offset)
        expected["inbox:back.csv"] = 20
        wait_for("a cron run after the clock stepped back",
                 lambda: delta_count(table) == 35, timeout=30)
        wait_for("its run recorded", lambda: [r["status"] for r in _runs(state)[seen:]]
                 == ["ok"], timeout=20)
        back = _runs(state)[seen:]
        assert [(r["trigger"], r["files"], r["rows"]) for r in back] == [("schedule", 2, 35)]
        health = _health(tmp_path, config, env)
        assert (health["healthy"], health["failed_jobs"]) == (True, [])
        assert (health["checks"][0]["check"], health["checks"][0]["ok"]) == (
            "agent test-agent", True)
        # the heartbeat follows the clock back (it is not stuck 2 h ahead)
        assert _beat(state) < dt.datetime.now(dt.UTC) - dt.timedelta(hours=1, minutes=58)
        seen = len(_runs(state))

        # 3 h forward (5 h from the faked now): one catch-up run, not 3 h of cron fires
        offset = _step(stamp, 3)
        _drop(inbox, "forward.csv", 25, offset)
        expected["inbox:forward.csv"] = 25
        wait_for("forward.csv in the table", lambda: delta_count(table) == 60, timeout=30)
        # the next regular fire comes 8 s after the step (at :00)
        wait_for("the catch-up run and the next cron run", lambda: [
            r["status"] for r in _runs(state)[seen:]] == ["ok", "ok"], timeout=30)
        forward = _runs(state)[seen:]
        assert [r["trigger"] for r in forward] == ["catch-up", "schedule"]
        assert (sum(r["files"] for r in forward), sum(r["rows"] for r in forward)) == (1, 25)
        health = _health(tmp_path, config, env)
        assert (health["healthy"], health["failed_jobs"]) == (True, [])
        assert _beat(state) > dt.datetime.now(dt.UTC) + dt.timedelta(hours=2, minutes=58)
        assert agent.terminate() == 0, agent.stderr()
    log = agent.stderr()
    assert log.count("the wall clock stepped back") == 1, log
    assert log.count("the wall clock stepped forward") == 1, log
    assert "Traceback" not in log
    assert "was missed by" not in log  # APScheduler dropping a fire
    assert _alerts(state) == []
    _assert_table(table, expected, duck)
    assert DeltaTable(str(table)).version() == 1
