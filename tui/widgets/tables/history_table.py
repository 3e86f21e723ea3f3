"""A table's history, newest first: version, time, operation, rows added, source, run."""

from __future__ import annotations

from typing import Any

from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("version", "ver"), ("timestamp", "time (UTC)"), ("operation", "operation"),
           ("rows_added", "rows"), ("run_id", "run"), ("source", "source / sync")]


def when(ts: str | None) -> str | None:
    """"2026-12-02T02:27:13+00:00" as "2026-12-02 02:27:13"."""
    return ts[:19].replace("T", " ") if ts else None


def source_text(entry: dict[str, Any]) -> str | None:
    """Where a commit's rows came from: "sync name <- source", or whichever is known."""
    sync, source = entry.get("sync"), entry.get("source")
    if sync and source:
        return f"{sync} <- {source}"
    return sync or source


class HistoryTable(PagedTable):
    """Rows are ``View.table_history`` entries (``history_summary``), keyed by version."""

    def __init__(self, *, page_size: int = 100, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="version", cells=self._cells, page_size=page_size,
                         id=id)

    @staticmethod
    def _cells(row: dict[str, Any]) -> list[Any]:
        rows = row.get("rows_added")
        return [str(row["version"]), when(row.get("timestamp")), row.get("operation"),
                f"{rows:,}" if isinstance(rows, int) else rows, row.get("run_id"),
                source_text(row)]
