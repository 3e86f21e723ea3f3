"""Every screen as it looks at 80x24 (an SSH session's default) and at 120x40.

The world and the TUI's clock are fixed (tests/tui/worlds.py), and the timer is off, so a
frame changes only when the code does. `pytest --snapshot-update` rewrites the pictures:
look at them (the report's HTML) before you commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from tests.tui.conftest import settle
from tests.tui.worlds import AT, build_world
from tui.app import make_app

SIZES = [(80, 24), (120, 40)]
SCREENS = ["dashboard", "tables", "models", "runs", "alerts", "log"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("snap"))


async def _ready(pilot: Any) -> None:
    await settle(pilot)
    await settle(pilot)  # details load after the list that chose them


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(world: Path, screen: str, size: tuple[int, int], snap_compare: Any) -> None:
    app = make_app(load_config(world), screen=screen, clock=lambda: AT, live=False)
    assert snap_compare(app, terminal_size=size, run_before=_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(world: Path, size: tuple[int, int], snap_compare: Any) -> None:
    app = make_app(load_config(world), clock=lambda: AT, live=False)
    assert snap_compare(app, terminal_size=size, press=["question_mark"], run_before=_ready)


def test_read_only_dashboard(world: Path, snap_compare: Any) -> None:
    app = make_app(load_config(world), read_only=True, clock=lambda: AT, live=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_ready)
