"""Who moved which alias of a model to which version, when, and why (newest first)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.widgets.common.paged_table import PagedTable
from tui.widgets.registry.version_table import ALIAS_STYLE, when

COLUMNS = [("at", "when"), ("alias", "alias"), ("move", "moved"), ("by", "by"),
           ("reason", "why")]


class AliasTable(PagedTable):
    """``View.alias_history`` of one model, one page at a time."""

    def __init__(self, page_size: int = 100, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="key", cells=self._cells, page_size=page_size, id=id)

    @staticmethod
    def keyed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with a key each: the history (newest first) has no id of its own, so
        the count from the oldest, which stays when newer moves come in."""
        return [{**h, "key": str(len(history) - i)} for i, h in enumerate(history)]

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        move = (f"v{row['previous']} → v{row['version']}" if row["previous"] is not None
                else f"→ v{row['version']}")
        return [when(row["at"]), Text(row["alias"], style=ALIAS_STYLE.get(row["alias"], "")),
                move, row["by"], row["reason"]]
