"""The lake's tables, one page at a time: name, version, rows and when it last changed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from rich.text import Text

from agent.view import ago
from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("table", "table"), ("version", "version"), ("rows", "rows"),
           ("last_commit", "last commit")]


def pending(name: str) -> dict[str, Any]:
    """The row of a table whose summary is being read."""
    return {"table": name, "version": None, "rows": None, "columns": None,
            "last_commit": None, "last_operation": None, "error": None, "pending": True}


class TableList(PagedTable):
    """Rows are ``View.table_summaries`` dicts (or :func:`pending` ones), keyed by name."""

    def __init__(self, clock: Callable[[], dt.datetime], *, page_size: int = 100,
                 id: str | None = None) -> None:
        super().__init__(COLUMNS, key="table", cells=self._cells, page_size=page_size, id=id)
        self.clock = clock

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        if row.get("pending"):
            reading = Text("…", style="dim")
            return [row["table"], reading, reading, reading]
        if row.get("error"):
            return [row["table"], Text("unreadable", style="bold red"), None, None]
        rows = row.get("rows")
        return [row["table"], str(row["version"]), f"{rows:,}" if rows is not None else None,
                ago(row.get("last_commit"), self.clock())]
