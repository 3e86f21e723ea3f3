"""The confirmation every action passes: what will happen, to what, and an optional note."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui.text import plain


@dataclass(frozen=True)
class Confirmed:
    comment: str = ""
    duration: str = ""


class ConfirmDialog(ModalScreen[Confirmed | None]):
    """Asks before an action; dismissed with :class:`Confirmed`, or None when cancelled."""

    DEFAULT_CSS = """
    ConfirmDialog { align: center middle; }
    ConfirmDialog > Vertical {
        width: 72; max-width: 95%; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmDialog .title { text-style: bold; margin-bottom: 1; }
    ConfirmDialog .body { margin-bottom: 1; }
    ConfirmDialog Horizontal { height: auto; align-horizontal: right; }
    ConfirmDialog Button { margin-left: 2; }
    """
    AUTO_FOCUS = "Input, #cancel"  # type first; with no input, Enter cancels
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel", id="dialog.cancel",
                        tooltip="close without doing anything")]

    def __init__(self, title: str, body: str, *, confirm: str = "Confirm",
                 comment: str | None = None, duration: str | None = None) -> None:
        """``comment``/``duration``: the placeholder of that input, or None for none."""
        super().__init__()
        self.title_text, self.body = title, body
        self.confirm_label = confirm
        self.comment_hint, self.duration_hint = comment, duration

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(self.title_text), classes="title")
            yield Static(plain(self.body, lines=True), classes="body")
            if self.duration_hint is not None:
                yield Input(placeholder=self.duration_hint, id="duration", value="2h")
            if self.comment_hint is not None:
                yield Input(placeholder=self.comment_hint, id="comment")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="warning")

    def _value(self, selector: str) -> str:
        found = self.query(selector)
        return str(found.first(Input).value).strip() if found else ""

    @on(Button.Pressed, "#confirm")
    @on(Input.Submitted)
    def _confirm(self) -> None:
        self.dismiss(Confirmed(comment=self._value("#comment"),
                               duration=self._value("#duration")))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
