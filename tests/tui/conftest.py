"""A real world for the TUI: the demo's two passes (syncs, models v1 and v2, predictions,
monitor runs, 15 alerts), built once per test process with the real `silta` command."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import LoadedConfig, load_config
from tests.conftest import ROOT
from tests.e2e._cli import silta
from tui.app import SiltaApp, make_app


def build_demo(root: Path) -> Path:
    """`demo init`, `agent run --once`, `demo drift`, `agent run --once` in ``root``."""
    (root / "config").mkdir(parents=True)
    config = root / "config" / "demo.toml"
    shutil.copy(ROOT / "config" / "demo.toml", config)
    for step in (["demo", "init"], ["agent", "run", "--once"], ["demo", "drift"],
                 ["agent", "run", "--once"]):
        r = silta(root, *step, "--config", config, timeout=300)
        assert r.code == 0, r
    return config


@pytest.fixture(scope="session")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo world; tests only read it (actions queue commands nobody runs).
    SILTA_TUI_DEMO=PATH reuses one built before (to iterate quickly on a screen)."""
    if os.environ.get("SILTA_TUI_DEMO"):
        return Path(os.environ["SILTA_TUI_DEMO"])
    return build_demo(tmp_path_factory.mktemp("tui-demo"))


@pytest.fixture
def demo(demo_config: Path) -> LoadedConfig:
    return load_config(demo_config)


@pytest.fixture
def app_for() -> Callable[..., SiltaApp]:
    """``app_for(loaded, **make_app kwargs)``: the app as `silta tui` builds it, no timer."""
    def build(loaded: LoadedConfig, **kwargs: Any) -> SiltaApp:
        kwargs.setdefault("live", False)
        return make_app(loaded, **kwargs)
    return build


async def settle(pilot: Any) -> None:
    """Wait until every worker is done and the screen has redrawn."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
