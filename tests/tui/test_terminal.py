"""`silta tui` in a real terminal: tmux runs it at 80x24, the test types and reads the screen."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._cli import SILTA, silta
from tests.tui.worlds import build_world

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (.ci/run installs it)")


class Terminal:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[tuple[Terminal, Path]]:
    config = build_world(tmp_path / "world")
    term = Terminal(f"silta-test-{uuid.uuid4().hex[:8]}")
    yield term, config
    subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True)


def _start(term: Terminal, config: Path, *args: str) -> None:
    command = " ".join([*SILTA, "tui", "--config", str(config), *args])
    # after the TUI leaves, the pane says how it ended, so the test can read the exit code
    term.tmux("new-session", "-d", "-s", "tui", "-x", "80", "-y", "24",
              f"TERM=xterm-256color {command}; echo EXITED=$?; sleep 60")


def test_the_tui_runs_in_a_terminal_switches_screens_and_quits(
        terminal: tuple[Terminal, Path]) -> None:
    term, config = terminal
    _start(term, config)
    shown = term.wait_for("sync:survey_responses")  # the first load drew the jobs
    assert "syncs and jobs" in shown
    assert "test-agent" in shown and "not running" in shown
    assert shown.splitlines()[-1].lstrip().startswith("r run now")  # the footer's keys
    assert len(shown.splitlines()[0]) <= 80
    term.keys("5")
    shown = term.wait_for("drift")  # the alerts screen lists the world's firing alerts
    term.keys("?")
    term.wait_for("id (for [tui] keys)")
    term.keys("Escape")
    time.sleep(0.5)  # a key right after Escape would arrive as Alt+key
    term.keys("q")
    assert "EXITED=0" in term.wait_for("EXITED=")


def test_read_only_shows_no_action_keys(terminal: tuple[Terminal, Path]) -> None:
    term, config = terminal
    _start(term, config, "--read-only")
    shown = term.wait_for("READ-ONLY")  # the agent line after the first load
    assert "run now" not in shown
    term.keys("q")
    term.wait_for("EXITED=0")


def test_tui_refuses_a_pipe_and_bad_arguments(tmp_path: Path) -> None:
    config = build_world(tmp_path)
    r = silta(tmp_path, "tui", "--config", config)  # stdout is a pipe here
    assert r.code == 2
    assert "not a terminal" in r.err and "silta status" in r.err
    r = silta(tmp_path, "tui", "--config", config, "--refresh", "0.01")
    assert r.code == 2
    assert "--refresh" in r.err and "between 0.5 and 3600" in r.err
    r = silta(tmp_path, "tui", "--config", tmp_path / "missing.toml")
    assert r.code == 2
    assert "missing.toml" in r.err and "Traceback" not in r.err
