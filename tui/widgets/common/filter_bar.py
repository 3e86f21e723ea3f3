"""The `/` filter of a list: hidden until asked for, Enter keeps it, Escape clears it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input


class FilterBar(Widget):
    """An input line above a list; posts :class:`FilterBar.Changed` as the text changes."""

    DEFAULT_CSS = """
    FilterBar { display: none; height: 3; }
    FilterBar.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "clear filter", id="filter.clear",
                tooltip="clear the filter and go back to the list")]

    @dataclass
    class Changed(Message):
        """The filter text is now ``text`` (empty: no filter)."""

        bar: FilterBar
        text: str

        @property
        def control(self) -> FilterBar:
            return self.bar

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: type, Enter to keep, Escape to clear")

    @property
    def value(self) -> str:
        return str(self.query_one(Input).value)

    def open(self) -> None:
        self.add_class("-shown")
        self.query_one(Input).focus()

    def action_clear(self) -> None:
        self.query_one(Input).value = ""
        self.remove_class("-shown")
        self.post_message(self.Changed(self, ""))
        self.screen.focus_next()

    @on(Input.Submitted)
    def _keep(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value:
            self.remove_class("-shown")
        self.post_message(self.Changed(self, self.value))
        self.screen.focus_next()

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, self.value))
