"""The Textual app: holds the facade and the settings, and switches between screens.

Screens own their layout and data (tui/screens/); this class stays thin.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel

from agent.config import LoadedConfig
from agent.view import View
from tui.commands import SiltaProvider
from tui.messages import CommandQueued
from tui.settings import TuiSettings

SCREEN_KEYS = {"dashboard": "1", "tables": "2", "models": "3", "runs": "4", "alerts": "5",
               "log": "6"}


def _screens() -> dict[str, type]:
    from tui.screens.alerts import AlertsScreen
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.log import LogScreen
    from tui.screens.models import ModelsScreen
    from tui.screens.runs import RunsScreen
    from tui.screens.tables import TablesScreen

    return {"dashboard": DashboardScreen, "tables": TablesScreen, "models": ModelsScreen,
            "runs": RunsScreen, "alerts": AlertsScreen, "log": LogScreen}


class SiltaApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "Silta"
    COMMANDS = App.COMMANDS | {SiltaProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"switch_mode('{name}')", name, id=f"go.{name}",
                  tooltip=f"show the {name} screen") for name, key in SCREEN_KEYS.items()),
        Binding("question_mark", "help", "help", id="app.help",
                tooltip="the keys of this screen"),
        Binding("ctrl+p,colon", "command_palette", "commands", id="app.palette", show=False,
                tooltip="the command palette: this screen's commands and the screens"),
        Binding("q", "quit", "quit", id="app.quit", tooltip="leave the TUI"),
    ]

    def __init__(self, view: View, settings: TuiSettings, screen: str = "dashboard") -> None:
        super().__init__()
        self.view = view
        self.settings = settings
        self.first_screen = screen
        self._pending: dict[int, str] = {}  # queued command id -> what it was
        for name, cls in _screens().items():
            self.add_mode(name, cls)

    def on_mount(self) -> None:
        if self.settings.keys:
            self.set_keymap(self.settings.keys)
        self.switch_mode(self.first_screen)
        self.set_interval(1.0, self._check_commands)

    def action_help(self) -> None:
        from tui.screens.base import SiltaScreen
        from tui.screens.help import HelpScreen

        about = self.screen.HELP if isinstance(self.screen, SiltaScreen) else ""
        app_bindings = [b for b in self.BINDINGS if isinstance(b, Binding)]
        self.push_screen(HelpScreen(self.screen, app_bindings, about))

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every notification as plain text: they quote names, typed text and the agent's
        sentences, none of which may be read as markup (``markup`` is ignored)."""
        if timeout is None:
            super().notify(message, title=title, severity=severity, markup=False)
        else:
            super().notify(message, title=title, severity=severity, timeout=timeout,
                           markup=False)

    def open_runs_of(self, job: str) -> None:
        """The runs screen, filtered to ``job`` (``kind:name``)."""
        from tui.screens.runs import RunsScreen

        def then() -> None:
            if isinstance(self.screen, RunsScreen):
                self.screen.filter_job(job)
        self.switch_mode("runs")
        self.call_later(then)

    # -- operator commands: say what was queued, then what the agent made of it -----------
    @on(CommandQueued)
    def _queued(self, event: CommandQueued) -> None:
        self._pending[event.command_id] = event.what
        self.notify(f"queued as command {event.command_id}; the agent carries it out and "
                    "records your user name", title=event.what, markup=False)

    def _check_commands(self) -> None:
        if self._pending:
            self._poll_commands()

    @work(thread=True, exclusive=True, exit_on_error=False, group="commands")
    def _poll_commands(self) -> None:
        for command_id, what in list(self._pending.items()):
            found = self.view.command(command_id)
            if found is None or found["status"] in ("queued", "running"):
                continue
            self._pending.pop(command_id, None)
            severity = "information" if found["status"] == "done" else "error"
            self.call_from_thread(self.notify, found["result"] or found["status"],
                                  title=f"{what}: {found['status']}", severity=severity,
                                  markup=False)  # the agent's sentence names outside things


def make_app(loaded: LoadedConfig, *, read_only: bool = False, refresh: float | None = None,
             screen: str = "dashboard", clock: Callable[[], dt.datetime] | None = None,
             live: bool = True) -> SiltaApp:
    """The app for ``loaded``'s agent; the CLI and the tests build it the same way."""
    section = loaded.config.tui
    settings = TuiSettings(read_only=read_only, live=live,
                           refresh_seconds=refresh or section.refresh_seconds,
                           page_size=section.page_size, keys=dict(section.keys))
    if clock is not None:
        settings = replace(settings, clock=clock)
    return SiltaApp(View(loaded, clock=clock), settings, screen=screen)
