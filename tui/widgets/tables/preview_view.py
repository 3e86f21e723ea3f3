"""The first rows of a table at one version (time travel), every value shown as text."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.text import plain
from tui.widgets.tables.schema_view import version_label

#: a longer value is cut, so one free-text column does not push the others out of view
CELL_CHARS = 40


def cell(value: Any) -> Text:
    """One value as plain text (markup in the data stays text), long ones cut."""
    if value is None:
        return plain(None)
    if isinstance(value, float):
        return Text(repr(value))
    if isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, bytes):
        text = f"<{len(value)} bytes>"
    else:
        text = str(value)
    if len(text) > CELL_CHARS:
        text = text[:CELL_CHARS - 1] + "…"
    return plain(text)


def add_columns_fitted(table: DataTable[Text], labels: Sequence[Text],
                       rows: Sequence[Sequence[Text]]) -> None:
    """Columns as wide as their widest cell (set here: a width measured later by the
    table itself can leave rows drawn at the header's width)."""
    for i, label in enumerate(labels):
        width = max([label.cell_len, *(r[i].cell_len for r in rows)])
        table.add_column(label, width=width)
    for r in rows:
        table.add_row(*r)


class PreviewView(DataTable[Text]):
    """``show_rows(columns, rows, version, latest)``; the border says at which version."""

    DEFAULT_CSS = """
    PreviewView { height: 1fr; border: round $primary-darken-2; }
    PreviewView:focus { border: round $accent; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, zebra_stripes=True, cursor_type="row")
        self.columns_shown: list[str] = []
        self.rows_shown: list[dict[str, Any]] = []

    def show_rows(self, columns: Sequence[str], rows: Sequence[dict[str, Any]],
                  version: int, latest: int | None, limit: int) -> None:
        self.columns_shown, self.rows_shown = list(columns), list(rows)
        self.clear(columns=True)
        add_columns_fitted(self, [plain(c) for c in columns],
                           [[cell(row.get(c)) for c in columns] for row in rows])
        self.border_title = f"preview {version_label(version, latest)}"
        self.border_subtitle = (f"first {len(rows):,} rows" if len(rows) >= limit
                                else f"all {len(rows):,} rows")

    def show_nothing(self, why: str) -> None:
        self.columns_shown, self.rows_shown = [], []
        self.clear(columns=True)
        self.border_title = why
        self.border_subtitle = ""
