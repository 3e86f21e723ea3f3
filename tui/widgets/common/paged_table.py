"""A table that holds one page of a long list: memory and render time do not grow with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from tui.text import plain

Cells = Callable[[dict[str, Any]], Sequence[Any]]
#: a cell wider than this is cut (an error text, a long path): the row stays on screen
MAX_COLUMN_WIDTH = 60


class PagedTable(DataTable[Text]):
    """Rows of the current page; ``]`` and ``[`` (or PgDn on the last row) turn pages.

    Cells are shown as plain text (``tui.text.plain``): a name like ``[red]x`` stays that.
    """

    DEFAULT_CSS = """
    PagedTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "page(1)", "next page", id="list.next-page",
                tooltip="the next page of this list", show=False),
        Binding("left_square_bracket", "page(-1)", "prev page", id="list.prev-page",
                tooltip="the previous page of this list", show=False),
    ]

    @dataclass
    class PageRequested(Message):
        """The user asked for the page that starts at ``offset``."""

        table: PagedTable
        offset: int

        @property
        def control(self) -> PagedTable:
            return self.table

    def __init__(self, columns: Sequence[tuple[str, str]], *, key: str,
                 cells: Cells | None = None, page_size: int = 100, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.spec = list(columns)
        self.key = key
        self.cells = cells
        self.page_size = page_size
        self.page_total = 0
        self.page_offset = 0
        self.rows_shown: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        for field, label in self.spec:
            self.add_column(label, key=field)

    # -- data ---------------------------------------------------------------------------
    def show(self, rows: Sequence[dict[str, Any]], total: int | None = None,
             offset: int = 0) -> None:
        """Replace the rows with one page; the cursor stays on the same row if it is there."""
        before = self.current
        keep = str(before[self.key]) if before is not None else None
        self.rows_shown = list(rows)
        self.page_total = len(rows) if total is None else total
        self.page_offset = offset
        cells = [[plain(v) for v in (self.cells(row) if self.cells else
                                     [row.get(f) for f, _ in self.spec])]
                 for row in self.rows_shown]
        # Columns afresh with widths from this page's cells: DataTable (8.2.8) measures
        # auto widths later, and a page drawn before that shows rows at the header's width.
        self.clear(columns=True)
        for i, (field, label) in enumerate(self.spec):
            width = max([len(label), *(c[i].cell_len for c in cells)])
            self.add_column(label, key=field, width=min(width, MAX_COLUMN_WIDTH))
        for row, values in zip(self.rows_shown, cells, strict=True):
            self.add_row(*values, key=str(row[self.key]))
        if keep is not None:
            index = next((i for i, r in enumerate(self.rows_shown)
                          if str(r[self.key]) == keep), None)
            if index is not None:
                self.move_cursor(row=index, animate=False)
        self.border_subtitle = self.page_label

    @property
    def current(self) -> dict[str, Any] | None:
        """The row under the cursor, or None for an empty page."""
        if not self.rows_shown or not 0 <= self.cursor_row < len(self.rows_shown):
            return None
        return self.rows_shown[self.cursor_row]

    @property
    def page_label(self) -> str:
        if not self.page_total:
            return "none"
        last = self.page_offset + len(self.rows_shown)
        return f"{self.page_offset + 1:,}-{last:,} of {self.page_total:,}"

    # -- paging -------------------------------------------------------------------------
    def action_page(self, step: int) -> None:
        offset = self.page_offset + step * self.page_size
        if 0 <= offset < self.page_total and offset != self.page_offset:
            self.post_message(self.PageRequested(self, offset))

    def action_page_down(self) -> None:
        if self.rows_shown and self.cursor_row >= len(self.rows_shown) - 1:
            self.action_page(1)
            return
        super().action_page_down()

    def action_page_up(self) -> None:
        if self.cursor_row <= 0 and self.page_offset > 0:
            self.action_page(-1)
            return
        super().action_page_up()
