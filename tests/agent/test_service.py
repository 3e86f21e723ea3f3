"""The agent service in-process: catch-up after downtime, operator commands, settle timers."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.config import load_config
from agent.service import Agent
from agent.state import StateStore
from tests.conftest import write_config


def put(folder: Path, name: str, text: str, age: float = 60.0) -> None:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    t = time.time() - age
    os.utime(path, (t, t))


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@contextmanager
def running(agent: Agent) -> Iterator[threading.Thread]:
    """The agent's service loop in a thread, stopped (as SIGTERM does) on leaving."""
    thread = threading.Thread(target=agent.run_forever, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stop.set()
        thread.join(timeout=20)


def test_a_missed_schedule_is_caught_up_once_at_start(tmp_path: Path):
    loaded = load_config(write_config(tmp_path, [{"name": "s", "schedule": "0 * * * *"}]))
    put(tmp_path / "inbox", "a.csv", "id\n1\n")
    state = StateStore(loaded.state_dir)
    # The agent last fired this job three hours ago; at least two hourly fires were missed.
    state.set_last_fire("sync:s", dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))
    agent = Agent(loaded)
    with running(agent) as thread:
        wait_for(lambda: any(r["status"] == "ok" for r in state.runs(kind="sync")))
        time.sleep(1.5)  # room for a wrong second catch-up run to show up
    runs = state.runs(kind="sync", name="s")
    assert [(r["trigger"], r["status"], r["rows"]) for r in runs] == [("catch-up", "ok", 1)]
    assert not thread.is_alive()


def test_no_catch_up_when_nothing_was_missed(tmp_path: Path):
    loaded = load_config(write_config(tmp_path, [{"name": "s", "schedule": "0 0 1 1 *"}]))
    put(tmp_path / "inbox", "a.csv", "id\n1\n")
    state = StateStore(loaded.state_dir)
    state.set_last_fire("sync:s", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    agent = Agent(loaded)
    with running(agent):
        wait_for(lambda: bool(state.heartbeats()))
        time.sleep(1.5)
    assert state.runs(kind="sync") == []


def test_an_operator_command_runs_a_sync_and_is_recorded(tmp_path: Path):
    loaded = load_config(write_config(tmp_path, [{"name": "s"}]))
    state = StateStore(loaded.state_dir)
    put(tmp_path / "inbox", "a.csv", "id\n1\n2\n")
    agent = Agent(loaded)
    with running(agent):
        wait_for(lambda: bool(state.heartbeats()))
        cid = state.enqueue_command("sync.run", {"sync": "s"}, os_user="operator-7")
        bad = state.enqueue_command("sync.run", {"sync": "nope"}, os_user="operator-7")
        wait_for(lambda: any(r["status"] == "ok" for r in state.runs(kind="sync")))
    run = state.runs(kind="sync", name="s")[0]
    assert (run["trigger"], run["rows"]) == ("operator:operator-7", 2)
    commands = {c["id"]: c for c in state.commands()}
    assert commands[cid]["status"] == "done" and commands[cid]["os_user"] == "operator-7"
    assert commands[bad]["status"] == "refused"


def test_an_unsettled_file_is_read_once_it_settles_without_another_trigger(tmp_path: Path):
    loaded = load_config(write_config(tmp_path, [{"name": "s", "watch": True,
                                                  "settle_seconds": 2}]))
    state = StateStore(loaded.state_dir)
    agent = Agent(loaded)
    with running(agent):
        wait_for(lambda: bool(state.heartbeats()))
        put(tmp_path / "inbox", "a.csv", "id\n1\n", age=0)
        wait_for(lambda: any(r["rows"] == 1 for r in state.runs(kind="sync")), timeout=30)
    landed = [r for r in state.runs(kind="sync") if r["rows"]]
    assert len(landed) == 1 and landed[0]["trigger"] in ("settle", "file-arrival", "rescan")
    assert state.heartbeats()[0]["state"] == "stopped"
