"""The log screen: the agent's log file shown and followed live, across rotation; the
filter, follow and end keys; a file that is not there yet; lines shown as text."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import LoadedConfig
from tests.tui.conftest import settle
from tui.app import SiltaApp
from tui.screens.log import LogScreen
from tui.widgets.log.agent_log import AgentLog, line_level
from tui.widgets.log.follower import LogFollower

LINES = [
    "2026-12-02T02:26:54Z INFO silta.sync sync=coded_sample batch=1 committed: rows=593",
    "2026-12-02T02:26:55Z WARNING silta.alerts FIRING warning: drift on job_title",
    "2026-12-02T02:26:56Z ERROR silta.sync sync=register failed: connection refused",
    "2026-12-02T02:26:57Z INFO silta.ml a name with [b]markup[/b] and [red]x[/]",
]


@pytest.fixture
def log_world(demo: LoadedConfig, tmp_path: Path) -> tuple[LoadedConfig, Path]:
    """The demo's config, its log file moved to ``tmp_path`` (not created yet)."""
    path = tmp_path / "logs" / "agent.log"
    agent = demo.config.agent.model_copy(update={"log_file": str(path)})
    loaded = LoadedConfig(demo.config.model_copy(update={"agent": agent}), demo.path)
    assert loaded.log_path == path
    path.parent.mkdir()
    return loaded, path


def _write(path: Path, lines: list[str], mode: str = "a") -> None:
    with path.open(mode, encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _log(app: Any) -> AgentLog:
    return app.screen.query_one("#agent-log", AgentLog)


async def _until(pilot: Any, check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (the screen polls the file twice a second) until ``check()`` holds."""
    for _ in range(int(seconds / 0.1)):
        await settle(pilot)
        if check():
            return
        await asyncio.sleep(0.1)
    assert check()


def _rendered(log: AgentLog) -> list[str]:
    """The text of each line as drawn (from the top of the view)."""
    return [log.render_line(y).text.rstrip() for y in range(log.line_count)]


# -- the screen ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_log_is_shown_and_followed_as_lines_arrive(
        log_world: tuple[LoadedConfig, Path], app_for: Callable[..., SiltaApp]) -> None:
    loaded, path = log_world
    _write(path, LINES)
    async with app_for(loaded, screen="log").run_test(size=(120, 40)) as pilot:
        app = pilot.app
        assert isinstance(app.screen, LogScreen)
        await _until(pilot, lambda: list(_log(app).lines) == LINES)
        assert _rendered(_log(app)) == LINES  # markup shown literally, not obeyed
        colours = [{str(seg.style.color.name) for seg in _log(app).render_line(y)
                    if seg.style is not None and seg.style.color is not None}
                   for y in range(len(LINES))]
        assert "red" in colours[2] and "yellow" in colours[1]
        assert not colours[0] & {"red", "yellow"} and not colours[3] & {"red", "yellow"}
        assert str(path) in str(_log(app).border_title)
        _write(path, ["2026-12-02T02:27:00Z INFO silta.agent appended one",
                      "2026-12-02T02:27:01Z INFO silta.agent appended two"])
        await _until(pilot, lambda: len(_log(app).lines) == len(LINES) + 2)
        assert list(_log(app).lines)[-2:] == [
            "2026-12-02T02:27:00Z INFO silta.agent appended one",
            "2026-12-02T02:27:01Z INFO silta.agent appended two"]


@pytest.mark.asyncio
async def test_rotation_keeps_following(
        log_world: tuple[LoadedConfig, Path], app_for: Callable[..., SiltaApp]) -> None:
    loaded, path = log_world
    _write(path, LINES[:2])
    async with app_for(loaded, screen="log").run_test(size=(80, 24)) as pilot:
        app = pilot.app
        await _until(pilot, lambda: list(_log(app).lines) == LINES[:2])
        # as RotatingFileHandler does: a last line, rename to .1, a new file
        _write(path, ["before rotation"])
        path.rename(path.with_name("agent.log.1"))
        _write(path, ["after rotation 1", "after rotation 2"], mode="w")
        expected = [*LINES[:2], "before rotation", "after rotation 1", "after rotation 2"]
        await _until(pilot, lambda: list(_log(app).lines) == expected)
        _write(path, ["after rotation 3"])
        await _until(pilot, lambda: list(_log(app).lines) == [*expected, "after rotation 3"])


@pytest.mark.asyncio
async def test_filter_narrows_to_matching_lines(
        log_world: tuple[LoadedConfig, Path], app_for: Callable[..., SiltaApp]) -> None:
    loaded, path = log_world
    _write(path, LINES)
    async with app_for(loaded, screen="log").run_test(size=(80, 24)) as pilot:
        app = pilot.app
        await _until(pilot, lambda: list(_log(app).lines) == LINES)
        await pilot.press("slash", *"silta.sync")
        await settle(pilot)
        assert list(_log(app).lines) == [LINES[0], LINES[2]]
        assert "filter “silta.sync”: 2 of 4" in str(_log(app).border_title)
        _write(path, ["2026-12-02T02:28:00Z INFO silta.sync sync=x batch=2 committed",
                      "2026-12-02T02:28:01Z INFO silta.ml not this one"])
        await _until(pilot, lambda: len(_log(app).kept) == 6)
        assert list(_log(app).lines) == [LINES[0], LINES[2],
                                         "2026-12-02T02:28:00Z INFO silta.sync sync=x batch=2 "
                                         "committed"]
        await pilot.press("escape")
        await settle(pilot)
        assert len(_log(app).lines) == 6


@pytest.mark.asyncio
async def test_follow_and_end_keys(
        log_world: tuple[LoadedConfig, Path], app_for: Callable[..., SiltaApp]) -> None:
    loaded, path = log_world
    _write(path, [f"2026-12-02T02:26:54Z INFO silta.sync line {i}" for i in range(300)])
    async with app_for(loaded, screen="log").run_test(size=(80, 24)) as pilot:
        app = pilot.app
        await _until(pilot, lambda: len(_log(app).lines) == 300)
        log = _log(app)
        await _until(pilot, lambda: log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y)
        await pilot.press("f")
        assert not log.auto_scroll and "paused" in str(log.border_title)
        await pilot.press("g")
        await settle(pilot)
        assert log.scroll_y == 0
        _write(path, ["2026-12-02T02:27:00Z INFO silta.sync one more"])
        await _until(pilot, lambda: len(log.lines) == 301)
        assert log.scroll_y == 0  # paused: the view stays where it was
        await pilot.press("G")
        await _until(pilot, lambda: log.scroll_y == log.max_scroll_y)
        await pilot.press("f")
        assert log.auto_scroll and "following" in str(log.border_title)


@pytest.mark.asyncio
async def test_a_missing_file_is_explained_until_it_appears(
        log_world: tuple[LoadedConfig, Path], app_for: Callable[..., SiltaApp]) -> None:
    from textual.widgets import Static

    loaded, path = log_world
    async with app_for(loaded, screen="log").run_test(size=(80, 24)) as pilot:
        app = pilot.app
        note = app.screen.query_one("#log-missing", Static)
        await _until(pilot, lambda: note.has_class("-shown"))
        text = str(getattr(note.render(), "plain", note.render()))
        assert f"No log yet at {path}" in " ".join(text.split())
        assert "silta agent run" in text
        assert not _log(app).display
        _write(path, LINES[:1])
        await _until(pilot, lambda: list(_log(app).lines) == LINES[:1])
        assert not note.has_class("-shown") and _log(app).display


def test_levels_are_read_from_text_and_json_lines() -> None:
    assert [line_level(x) for x in LINES] == [None, "warning", "error", None]
    assert line_level('{"time": "t", "level": "critical", "message": "m"}') == "critical"
    assert line_level("2026-12-02T02:26:54Z INFO silta.sync said ERROR once") is None


# -- the follower, headless ------------------------------------------------------------------
def test_follower_starts_with_the_last_lines_and_holds_a_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    _write(path, [f"line {i}" for i in range(5000)])
    follower = LogFollower(path, backlog=1000)
    first = follower.poll()
    assert first.exists and first.lines == [f"line {i}" for i in range(4000, 5000)]
    with path.open("a", encoding="utf-8") as f:
        f.write("half a li")
    assert follower.poll().lines == []
    with path.open("a", encoding="utf-8") as f:
        f.write("ne\nnext\n")
    assert follower.poll().lines == ["half a line", "next"]


def test_follower_reads_a_truncated_file_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    _write(path, ["one", "two", "three"])
    follower = LogFollower(path)
    assert follower.poll().lines == ["one", "two", "three"]
    with path.open("r+", encoding="utf-8") as f:
        f.truncate(0)
    _write(path, ["new"])
    assert follower.poll().lines == ["new"]


def test_follower_across_a_missing_moment(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    assert follower_poll_missing(path)
    _write(path, ["first"])
    follower = LogFollower(path)
    assert follower.poll().lines == ["first"]
    os.replace(path, tmp_path / "a.log.1")
    gone = follower.poll()
    assert not gone.exists and gone.lines == []
    _write(path, ["second"])
    assert follower.poll().lines == ["second"]


def follower_poll_missing(path: Path) -> bool:
    chunk = LogFollower(path).poll()
    return not chunk.exists and chunk.lines == [] and chunk.error is None


@pytest.mark.asyncio
async def test_no_log_file_configured_says_so(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    from textual.widgets import Static

    agent = demo.config.agent.model_copy(update={"log_file": ""})
    loaded = LoadedConfig(demo.config.model_copy(update={"agent": agent}), demo.path)
    assert loaded.log_path is None
    async with app_for(loaded, screen="log").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        note = pilot.app.screen.query_one("#log-missing", Static)
        assert note.has_class("-shown") and not _log(pilot.app).display
        text = " ".join(str(getattr(note.render(), "plain", note.render())).split())
        assert f"agent.log_file is empty in {demo.path}" in text
