"""`?`: the keys of the screen in view and of the whole app, with their ids for remapping."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def key_rows(screen: Screen[object], app_bindings: list[Binding]) -> list[tuple[str, str, str]]:
    """(key, what it does, binding id) of the screen's keys, then the app's."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    own = [b for b in screen.BINDINGS if isinstance(b, Binding)]
    for b in [*own, *app_bindings]:
        if not b.description or (b.id or b.key) in seen:
            continue
        if screen.check_action(b.action.split("(")[0], ()) is False:
            continue  # read-only: actions are not offered
        seen.add(b.id or b.key)
        keys = ", ".join(screen.app.get_key_display(Binding(k.strip(), b.action))
                         for k in b.key.split(","))
        rows.append((b.key_display or keys, b.tooltip or b.description, b.id or ""))
    return rows


def key_table(rows: list[tuple[str, str, str]]) -> Table:
    table = Table(box=None, expand=True, show_header=True, header_style="bold")
    table.add_column("key", no_wrap=True)
    table.add_column("does")
    table.add_column(Text("id (for [tui] keys)"), style="dim", no_wrap=True)
    for key, does, binding_id in rows:
        table.add_row(Text(key), Text(does), Text(binding_id))
    return table


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "close", id="help.close",
                        tooltip="close the help")]

    def __init__(self, under: Screen[object], app_bindings: list[Binding], about: str) -> None:
        super().__init__()
        self.about = about
        self.rows = key_rows(under, app_bindings)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            if self.about:
                yield Static(Text(self.about), classes="about")
            yield Static(key_table(self.rows))
            yield Static(Text("Lists: / filters, ] and [ turn pages, Enter opens. Ctrl+P "
                              "or : opens the command palette. Actions are queued for the "
                              "agent and recorded with your user name.", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
