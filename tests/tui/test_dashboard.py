"""The dashboard and what every screen shares: agent line, jobs, live progress, alerts,
help, the command palette, read-only mode, key remaps, commands queued for the agent."""

from __future__ import annotations

import asyncio
import getpass
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import LoadedConfig, load_config
from agent.state import FILE_NAME, StateStore
from tests.tui.conftest import settle
from tests.tui.worlds import AT, build_world
from tui.app import SiltaApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.help import HelpScreen
from tui.widgets.common.confirm import ConfirmDialog
from tui.widgets.status.agent_bar import AgentBar
from tui.widgets.status.jobs_table import JobsTable

pytestmark = pytest.mark.asyncio


def _db(loaded: LoadedConfig) -> sqlite3.Connection:
    con = sqlite3.connect(loaded.state_dir / FILE_NAME)
    con.row_factory = sqlite3.Row
    return con


def _cells(table: Any, row: int) -> list[str]:
    return [c.plain for c in table.get_row_at(row)]


def _commands(loaded: LoadedConfig) -> list[dict[str, Any]]:
    with _db(loaded) as con:
        return [dict(r) for r in con.execute("SELECT * FROM commands ORDER BY id")]


async def test_jobs_show_each_jobs_last_run_from_the_state_store(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    conf = demo.config
    expected_jobs = ([f"sync:{s.name}" for s in conf.syncs]
                     + [f"train:{t.name}" for t in conf.trainings]
                     + [f"predict:{p.name}" for p in conf.predictions]
                     + [f"monitor:{m.name}" for m in conf.monitors])
    with _db(demo) as con:
        last = {f"{'sync' if r['kind'] == 'publish' else r['kind']}:{r['name']}": r
                for r in con.execute("SELECT * FROM runs ORDER BY started_at")}
    async with app_for(demo).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        jobs = pilot.app.screen.query_one("#jobs", JobsTable)
        assert [r["job"] for r in jobs.rows_shown] == expected_jobs
        for i, job in enumerate(expected_jobs):
            cells = _cells(jobs, i)
            assert cells[0] == job
            assert cells[2] == last[job]["status"]
            assert cells[3] == f"{last[job]['rows']:,}"
        bar = str(pilot.app.screen.query_one(AgentBar).render())
        assert "demo-agent" in bar and "not running (stopped" in bar


async def test_open_alerts_are_counted_by_severity(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    with _db(demo) as con:
        counts = dict(con.execute("SELECT severity, COUNT(*) FROM alerts WHERE state IN "
                                  "('firing', 'acknowledged') GROUP BY severity").fetchall())
    assert counts  # the demo's second pass fires alerts
    async with app_for(demo).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = str(pilot.app.screen.query_one("#alerts-summary").render())
        for severity, n in counts.items():
            assert f"{n} {severity}" in text


async def test_a_running_sync_shows_its_live_progress(tmp_path: Path,
                                                      app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path, runs=0, versions=0, tables=0))
    state = StateStore(loaded.state_dir)
    state.start_run("sync", "coded_sample", "file-arrival", "test-agent")
    state.record_progress("sync:coded_sample", {
        "files_done": 3, "files_total": 10, "bytes_done": 3 * 2**20, "bytes_total": 10 * 2**20,
        "rows": 5000, "batches": 1, "bytes_per_s": 2**20, "rows_per_s": 1000.0,
        "elapsed_s": 3.0})
    state.close()
    async with app_for(loaded).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        jobs = pilot.app.screen.query_one("#jobs", JobsTable)
        row = [r["job"] for r in jobs.rows_shown].index("sync:coded_sample")
        now = _cells(jobs, row)[4]
        assert now.startswith("running ")
        assert "3/10 files, 3.0 MiB/10.0 MiB, 5,000 rows, 1.0 MiB/s" in now


async def test_progress_of_an_earlier_run_is_not_shown(tmp_path: Path,
                                                       app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path, runs=0, versions=0, tables=0))
    state = StateStore(loaded.state_dir)
    state.record_progress("sync:coded_sample", {"files_done": 9, "files_total": 9, "rows": 1,
                                                "bytes_done": 1, "bytes_total": 1})
    await asyncio.sleep(0.01)  # the run starts a few ms after that progress was written
    state.start_run("sync", "coded_sample", "file-arrival", "test-agent")
    state.close()
    async with app_for(loaded).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        jobs = pilot.app.screen.query_one("#jobs", JobsTable)
        row = [r["job"] for r in jobs.rows_shown].index("sync:coded_sample")
        assert _cells(jobs, row)[4].startswith("running ")
        assert "files" not in _cells(jobs, row)[4]


async def test_run_now_asks_then_queues_one_command_with_the_os_user(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))
    before = len(_commands(loaded))
    async with app_for(loaded).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down")  # sync:coded_sample
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmDialog)
        await pilot.press("escape")  # cancelled: nothing queued
        await pilot.pause()
        assert len(_commands(loaded)) == before
        await pilot.press("r")
        await pilot.pause()
        await pilot.click("#confirm")
        await settle(pilot)
    new = _commands(loaded)[before:]
    assert [(c["kind"], json.loads(c["args"]), c["os_user"], c["status"]) for c in new] == [
        ("job.run", {"job": "sync:coded_sample"}, getpass.getuser(), "queued")]


async def test_read_only_hides_and_refuses_actions(tmp_path: Path,
                                                   app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))
    before = len(_commands(loaded))
    async with app_for(loaded, read_only=True).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "r" not in pilot.app.screen.active_bindings
        assert "READ-ONLY" in str(pilot.app.screen.query_one(AgentBar).render())
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DashboardScreen)
        titles = [t for t, _, _ in pilot.app.screen.palette_commands()]
        assert "run now" not in titles
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(pilot.app.screen, HelpScreen)
        assert "dashboard.run-now" not in _help_ids(pilot.app.screen)
    assert len(_commands(loaded)) == before


def _help_ids(screen: Any) -> set[str]:
    assert isinstance(screen, HelpScreen)
    return {binding_id for _, _, binding_id in screen.rows}


async def test_help_lists_this_screens_keys_with_their_ids(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))
    async with app_for(loaded).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        ids = _help_ids(pilot.app.screen)
        assert {"dashboard.run-now", "go.alerts", "app.help", "app.quit", "app.palette"} <= ids
        keys = {binding_id: key for key, _, binding_id in pilot.app.screen.rows}
        assert keys["dashboard.run-now"] == "r"
        assert keys["go.alerts"] == "5"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DashboardScreen)


async def test_number_keys_and_the_palette_switch_screens(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))
    async with app_for(loaded).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert pilot.app.current_mode == "alerts"
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to tables")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert pilot.app.current_mode == "tables"
        await pilot.press("1")
        await settle(pilot)
        assert pilot.app.current_mode == "dashboard"


async def test_keys_are_remapped_by_binding_id_from_the_config(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    config = build_world(tmp_path)
    with config.open("a", encoding="utf-8") as f:
        f.write('[tui]\nkeys = { "dashboard.run-now" = "g" }\n')
    loaded = load_config(config)
    async with app_for(loaded).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmDialog)


async def test_outside_strings_are_shown_not_obeyed_as_markup(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))  # run errors hold "[red]sftp[/]"
    async with app_for(loaded).run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        recent = pilot.app.screen.query_one("#recent")
        errors = [_cells(recent, i)[4] for i in range(recent.row_count)]
        assert "connection refused by [red]sftp[/] host" in errors


async def test_the_agent_line_says_when_the_agent_was_never_started(
        tmp_path: Path, app_for: Callable[..., SiltaApp]) -> None:
    config = build_world(tmp_path)
    (tmp_path / "state" / FILE_NAME).unlink()
    loaded = load_config(config)
    async with app_for(loaded, clock=lambda: AT).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "never started" in str(pilot.app.screen.query_one(AgentBar).render())
        jobs = pilot.app.screen.query_one("#jobs", JobsTable)
        assert [_cells(jobs, i)[2] for i in range(jobs.row_count)] == ["never"] * 3


async def test_notifications_never_read_markup(tmp_path: Path,
                                               app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path))
    async with app_for(loaded).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pilot.app.screen.notify("table [red]boom[/] and [unclosed", title="x")
        await pilot.pause()
        shown = list(pilot.app._notifications)[-1]  # Textual keeps them here (8.2.8)
        assert (shown.message, shown.markup) == ("table [red]boom[/] and [unclosed", False)
