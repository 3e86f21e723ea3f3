"""The alerts screen against the real demo world (15 open alerts, 2 monitor runs), a fixed
world with acknowledged and resolved alerts, and one end to end with the agent running."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Sparkline

from agent.alerts import AlertBook, CheckResult
from agent.config import LoadedConfig, load_config
from agent.service import Agent
from agent.state import FILE_NAME, StateStore
from tests.conftest import duck_rows
from tests.tui.conftest import settle
from tests.tui.worlds import AT, build_world
from tui.app import SiltaApp
from tui.screens.alerts import AlertsScreen
from tui.text import SEVERITY_STYLE
from tui.widgets.alerts.alert_detail import AlertDetail
from tui.widgets.alerts.alert_list import AlertList
from tui.widgets.alerts.metric_chart import MetricChart
from tui.widgets.common.confirm import ConfirmDialog

ORDER = ("ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, "
         "id DESC")


# -- helpers ----------------------------------------------------------------------------
def db(loaded: LoadedConfig) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{loaded.state_dir / FILE_NAME}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    return con


def alert_rows(loaded: LoadedConfig, states: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """(id, severity, state) of the alerts in ``states`` in the screen's order, by SQL."""
    with db(loaded) as con:
        return [tuple(r) for r in con.execute(
            f"SELECT id, severity, state FROM alerts WHERE state IN "
            f"({','.join('?' * len(states))}) {ORDER}", states)]


def last_command_id(loaded: LoadedConfig) -> int:
    with db(loaded) as con:
        return int(con.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()[0])


def commands_after(loaded: LoadedConfig, after: int) -> list[dict[str, Any]]:
    """The alert commands queued after command ``after`` (other screens' tests may queue
    theirs in the same world meanwhile)."""
    with db(loaded) as con:
        return [dict(r) for r in con.execute(
            "SELECT * FROM commands WHERE id > ? AND kind LIKE 'alert.%' ORDER BY id",
            (after,))]


def screen_of(pilot: Any) -> AlertsScreen:
    screen = pilot.app.screen
    assert isinstance(screen, AlertsScreen)
    return screen


def current(pilot: Any) -> dict[str, Any]:
    """The alert under the list's cursor."""
    alert = screen_of(pilot).alert_list.current
    assert alert is not None
    return alert


def shown(pilot: Any) -> list[tuple[Any, ...]]:
    """(id, severity, state) of every row the list shows, read from its cells."""
    table = pilot.app.screen.query_one(AlertList)
    return [(int(str(cells[0])), str(cells[1]), str(cells[2]))
            for cells in (table.get_row_at(i) for i in range(table.row_count))]


async def move_to(pilot: Any, alert_id: int) -> None:
    """The cursor on ``alert_id`` (it is on the page shown)."""
    table = pilot.app.screen.query_one(AlertList)
    for _ in range(table.row_count):
        if table.current is not None and table.current["id"] == alert_id:
            await settle(pilot)
            return
        await pilot.press("down")
    raise AssertionError(f"alert {alert_id} is not in the list")


def notes_of(app: SiltaApp) -> list[str]:
    """Every notification the app shows from now on, as "title: message"."""
    seen: list[str] = []
    original = app.notify

    def notify(message: str, *, title: str = "", **kwargs: Any) -> None:
        seen.append(f"{title}: {message}")
        original(message, title=title, **kwargs)
    app.notify = notify  # type: ignore[method-assign]
    return seen


@pytest.fixture
def fixed(tmp_path: Path) -> LoadedConfig:
    """The fixed world: alerts 1-5, 2 acknowledged (by operator), 5 resolved."""
    return load_config(build_world(tmp_path / "fixed"))


# -- the list ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_list_is_the_open_alerts_most_severe_first(demo: LoadedConfig,
                                                             app_for: Callable[..., SiltaApp]):
    expected = alert_rows(demo, ("firing", "acknowledged"))
    assert len(expected) == 15
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert shown(pilot) == expected
        table = pilot.app.screen.query_one(AlertList)
        assert str(table.border_title) == "alerts: open (15)"
        assert [str(c) for c in table.get_row_at(0)][3].endswith(
            "/ " + table.current["target"])  # what: cut at its start, never at its end
        severity = table.get_row_at(0)[1]
        assert severity.style == SEVERITY_STYLE[str(severity)]


@pytest.mark.asyncio
async def test_the_list_is_paged(demo: LoadedConfig, app_for: Callable[..., SiltaApp]):
    expected = alert_rows(demo, ("firing", "acknowledged"))
    app = app_for(demo, screen="alerts")
    app.settings = replace(app.settings, page_size=10)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = pilot.app.screen.query_one(AlertList)
        assert shown(pilot) == expected[:10]
        assert table.border_subtitle == "1-10 of 15"
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert shown(pilot) == expected[10:]
        assert table.border_subtitle == "11-15 of 15"
        assert str(table.border_title) == "alerts: open (15)"


@pytest.mark.asyncio
async def test_t_cycles_through_the_states(demo: LoadedConfig,
                                           app_for: Callable[..., SiltaApp]):
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for name, states in (("firing", ("firing",)), ("acknowledged", ("acknowledged",)),
                             ("resolved", ("resolved",)),
                             ("all", ("firing", "acknowledged", "resolved"))):
            await pilot.press("t")
            await settle(pilot)
            expected = alert_rows(demo, states)
            assert shown(pilot) == expected, name
            title = str(pilot.app.screen.query_one(AlertList).border_title)
            assert title == f"alerts: {name} ({len(expected)})"
            detail = pilot.app.screen.query_one(AlertDetail)
            if expected:
                assert detail.alert is not None and detail.alert["id"] == expected[0][0]
            else:
                assert detail.alert is None
                assert detail.empty_label == f"no {name} alerts"


@pytest.mark.asyncio
async def test_resolved_shows_exactly_the_resolved_ones(fixed: LoadedConfig,
                                                        app_for: Callable[..., SiltaApp]):
    async with app_for(fixed, screen="alerts", clock=lambda: AT).run_test(
            size=(80, 24)) as pilot:
        await settle(pilot)
        assert shown(pilot) == alert_rows(fixed, ("firing", "acknowledged"))
        for _ in range(3):
            await pilot.press("t")
        await settle(pilot)
        assert shown(pilot) == [(5, "critical", "resolved")] == alert_rows(fixed,
                                                                           ("resolved",))


@pytest.mark.asyncio
async def test_the_text_filter_narrows_the_list(demo: LoadedConfig,
                                                app_for: Callable[..., SiltaApp]):
    with db(demo) as con:
        expected = [tuple(r) for r in con.execute(
            "SELECT id, severity, state FROM alerts WHERE state IN ('firing', 'acknowledged') "
            f"AND (target LIKE '%macro_f1%' OR summary LIKE '%macro_f1%') {ORDER}")]
    assert 0 < len(expected) < 15
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"macro_f1", "enter")
        await settle(pilot)
        assert shown(pilot) == expected
        assert str(pilot.app.screen.query_one(AlertList).border_title) == (
            f"alerts: open ({len(expected)}) matching 'macro_f1'")


# -- the detail -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_detail_has_the_figures_and_the_metric_over_the_runs(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], duck: Any):
    metrics = Path(demo.lake_uri) / "_silta" / "metrics"
    # the open alert with the most monitor runs behind it (a drift: both runs)
    with db(demo) as con:
        alerts = [dict(r) for r in con.execute(
            "SELECT * FROM alerts WHERE state IN ('firing', 'acknowledged') ORDER BY id")]

    def series(a: dict[str, Any]) -> list[float | None]:
        def q(s: str) -> str:
            return s.replace("'", "''")
        return [r[0] for r in duck_rows(
            duck, metrics, f"SELECT value FROM t WHERE monitor='{q(a['monitor'])}' AND "
            f"\"check\"='{q(a['check_name'])}' AND target='{q(a['target'])}' "
            "ORDER BY measured_at")]
    row = max(alerts, key=lambda a: (len(series(a)), -a["id"]))
    values = series(row)
    assert len(values) == 2  # the demo's two monitor runs
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await move_to(pilot, row["id"])
        detail = pilot.app.screen.query_one(AlertDetail)
        assert detail.alert is not None and detail.alert["id"] == row["id"]
        assert (detail.alert["value"], detail.alert["threshold"], detail.alert["summary"]) \
            == (row["value"], row["threshold"], row["summary"])
        text = detail.figures_text.plain
        assert row["summary"] in text
        assert f"value {row['value']:.4g}  threshold {row['threshold']:.4g}" in text
        assert f"run {row['last_run_id']}" in text
        chart = detail.query_one(MetricChart)
        assert chart.values == values
        assert list(chart.query_one(Sparkline).data or []) == values
        figures = str(chart.query_one("#chart-figures").content)
        assert f"first {values[0]:.4g}  last {values[-1]:.4g}" in figures
        assert f"threshold {row['threshold']:.4g}" in figures
        # the chart fits: title, two sparkline rows, figures
        assert chart.outer_size.height <= 5
        await pilot.press("v")
        await settle(pilot)
        with db(demo) as con:
            events = [r[0] for r in con.execute(
                "SELECT event FROM alert_events WHERE alert_id=? ORDER BY id", (row["id"],))]
        table = detail.query_one("#alert-events")
        assert [str(table.get_row_at(i)[1]) for i in range(table.row_count)] == events


@pytest.mark.asyncio
async def test_markup_in_an_alert_shows_literally(tmp_path: Path,
                                                  app_for: Callable[..., SiltaApp]):
    loaded = load_config(build_world(tmp_path / "w"))
    state = StateStore(loaded.state_dir)
    try:
        fired = AlertBook(state).observe("watch_[b]m", "occupation_coder", [CheckResult(
            check="drift", target="[red]x[/]", status="breach", severity="critical",
            summary="drifted: [red]x[/] and [b]bold", value=1.0, threshold=0.5)], "run-1")
    finally:
        state.close()
    async with app_for(loaded, screen="alerts", clock=lambda: AT).run_test(
            size=(120, 40)) as pilot:
        await settle(pilot)
        table = pilot.app.screen.query_one(AlertList)
        assert table.current is not None and table.current["id"] == fired.fired[0]
        assert str(table.get_row_at(0)[3]) == "watch_[b]m / drift / [red]x[/]"
        detail = pilot.app.screen.query_one(AlertDetail)
        assert "drifted: [red]x[/] and [b]bold" in detail.figures_text.plain
        svg = pilot.app.export_screenshot()
        assert "[red]x[/]" in svg and "[b]bold" in svg


# -- actions ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_ack_with_a_comment_queues_alert_ack(demo: LoadedConfig,
                                                   app_for: Callable[..., SiltaApp]):
    before = last_command_id(demo)
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        alert_id = current(pilot)["id"]
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmDialog)
        await pilot.press(*"looking", "enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, AlertsScreen)
    [row] = commands_after(demo, before)
    assert (row["kind"], json.loads(row["args"]), row["os_user"], row["status"]) == (
        "alert.ack", {"alert": alert_id, "comment": "looking"}, getpass.getuser(), "queued")


@pytest.mark.asyncio
async def test_silence_for_30m_queues_1800_seconds(demo: LoadedConfig,
                                                   app_for: Callable[..., SiltaApp]):
    before = last_command_id(demo)
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        alert_id = current(pilot)["id"]
        await pilot.press("s")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmDialog)
        duration = dialog.query_one("#duration", Input)
        assert duration.value == "2h" and duration.has_focus
        await pilot.press("backspace", "backspace", *"30m", "tab", *"deploy", "enter")
        await settle(pilot)
    [row] = commands_after(demo, before)
    assert (row["kind"], json.loads(row["args"]), row["os_user"], row["status"]) == (
        "alert.silence", {"alert": alert_id, "seconds": 1800.0, "comment": "deploy"},
        getpass.getuser(), "queued")


@pytest.mark.asyncio
async def test_a_bad_duration_queues_nothing(demo: LoadedConfig,
                                             app_for: Callable[..., SiltaApp]):
    before = last_command_id(demo)
    app = app_for(demo, screen="alerts")
    async with app.run_test(size=(80, 24)) as pilot:
        notes = notes_of(app)
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        await pilot.press("backspace", "backspace", *"banana", "enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, AlertsScreen)
    assert commands_after(demo, before) == []
    assert any(n.startswith("not queued: 'banana' is not a duration") for n in notes), notes


@pytest.mark.asyncio
async def test_cancelling_queues_nothing(demo: LoadedConfig,
                                         app_for: Callable[..., SiltaApp]):
    before = last_command_id(demo)
    async with app_for(demo, screen="alerts").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in ("a", "s", "x"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(pilot.app.screen, ConfirmDialog), key
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(pilot.app.screen, AlertsScreen), key
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_read_only_hides_the_actions_and_their_keys_do_nothing(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]):
    before = last_command_id(demo)
    async with app_for(demo, screen="alerts", read_only=True).run_test(
            size=(120, 40)) as pilot:
        await settle(pilot)
        active = pilot.app.screen.active_bindings
        assert "t" in active and not {"a", "s", "x"} & set(active)
        for key in ("a", "s", "x"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(pilot.app.screen, AlertsScreen), key
        titles = [title for title, _, _ in screen_of(pilot).palette_commands()]
        assert "states" in titles and not {"acknowledge", "silence", "resolve"} & set(titles)
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_acking_an_acknowledged_or_resolved_alert_is_refused(
        fixed: LoadedConfig, app_for: Callable[..., SiltaApp]):
    app = app_for(fixed, screen="alerts", clock=lambda: AT)
    async with app.run_test(size=(80, 24)) as pilot:
        notes = notes_of(app)
        await settle(pilot)
        await move_to(pilot, 2)  # acknowledged by operator
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(pilot.app.screen, AlertsScreen)
        assert notes == ["not acknowledged: alert 2 is already acknowledged by operator"]
        await pilot.press("x")  # an acknowledged alert may be resolved by hand
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmDialog)
        await pilot.press("escape")
        for _ in range(3):
            await pilot.press("t")  # resolved
        await settle(pilot)
        await move_to(pilot, 5)
        await pilot.press("a", "x")
        await settle(pilot)
        assert isinstance(pilot.app.screen, AlertsScreen)
        assert notes[1:] == ["not acknowledged: alert 5 is already resolved",
                             "not resolved: alert 5 is already resolved"]
    assert commands_after(fixed, 1) == []  # the world's own command is number 1


# -- end to end -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_an_ack_made_in_the_tui_is_seen_by_the_agent(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], tmp_path: Path):
    world = tmp_path / "world"
    shutil.copytree(demo.path.parent.parent, world)
    loaded = load_config(world / demo.path.parent.name / demo.path.name)
    assert loaded.state_dir.is_relative_to(world)
    # the shared world's queue holds what other tests queued: not for this agent to run
    with sqlite3.connect(loaded.state_dir / FILE_NAME) as con:
        con.execute("DELETE FROM commands")
    con.close()
    comment = "on it, from the TUI"
    agent = Agent(loaded)
    thread = asyncio.get_running_loop().run_in_executor(None, agent.run_forever)
    try:
        async with app_for(loaded, screen="alerts").run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            alert = current(pilot)
            assert alert["state"] == "firing"
            await pilot.press("a")
            await settle(pilot)
            await pilot.press(*comment, "enter")
            await settle(pilot)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with db(loaded) as con:
                    row = dict(con.execute("SELECT * FROM alerts WHERE id=?",
                                           (alert["id"],)).fetchone())
                    command = dict(con.execute(
                        "SELECT * FROM commands ORDER BY id DESC LIMIT 1").fetchone())
                if row["state"] == "acknowledged" and command["status"] == "done":
                    break
                await asyncio.sleep(0.2)
            assert (row["state"], row["acked_by"], row["ack_comment"]) == (
                "acknowledged", getpass.getuser(), comment)
            assert (command["kind"], json.loads(command["args"]), command["status"]) == (
                "alert.ack", {"alert": alert["id"], "comment": comment}, "done")
            # and the list shows it once it reads again
            screen_of(pilot).reload()
            await settle(pilot)
            assert current(pilot)["state"] == "acknowledged"
    finally:
        agent.stop.set()
        await asyncio.wait_for(thread, timeout=30)
