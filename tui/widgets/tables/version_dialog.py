"""A small question: which version (or which two versions) of a table to show."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tui.text import plain


class VersionDialog(ModalScreen[str | None]):
    """Dismissed with the text typed (Enter), or None (Escape)."""

    DEFAULT_CSS = """
    VersionDialog { align: center middle; }
    VersionDialog > Vertical {
        width: 60; max-width: 95%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 1 2;
    }
    VersionDialog .title { text-style: bold; }
    VersionDialog .hint { color: $text-muted; margin-bottom: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", id="version.cancel",
                tooltip="close without changing anything")]

    def __init__(self, title: str, hint: str, *, value: str = "",
                 placeholder: str = "") -> None:
        super().__init__()
        self.title_text, self.hint, self.value = title, hint, value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="title")
            yield Static(plain(self.hint), classes="hint")
            yield Input(value=self.value, placeholder=self.placeholder, id="version")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
