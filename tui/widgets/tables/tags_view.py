"""A table's tags (named versions, made with `silta tables tag`): tag, version, by, note."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("tag", "tag"), ("version", "version"), ("created_by", "by"), ("note", "note"),
           ("created_at", "created")]


class TagsView(PagedTable):
    """Rows are ``View.table_tags`` dicts."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="tag", cells=self._cells, page_size=10_000, id=id)

    @staticmethod
    def _cells(row: dict[str, Any]) -> list[Any]:
        created = row.get("created_at")
        if isinstance(created, dt.datetime):
            created = created.isoformat(sep=" ", timespec="seconds")
        return [row["tag"], str(row["version"]), row.get("created_by"), row.get("note") or "",
                created]
