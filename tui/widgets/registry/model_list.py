"""The registered models: how many versions, the champion, the challenger, what waits."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from agent.view import ago
from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("model", "model"), ("versions", "versions"), ("champion", "champion"),
           ("challenger", "challenger"), ("waiting", "waiting"), ("updated_at", "trained")]


def _version(n: int | None, style: str = "") -> Any:
    return Text(f"v{n}", style=style) if n is not None else None


class ModelList(PagedTable):
    """One row per model (``View.models``); the cursor picks the model the rest shows."""

    DEFAULT_CSS = """
    ModelList { height: auto; max-height: 8; }
    """

    def __init__(self, clock: Any, page_size: int = 100, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="model", cells=self._cells, page_size=page_size,
                         id=id)
        self.clock = clock

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        return [row["model"], f"{row['versions']:,}", _version(row["champion"], "bold green"),
                _version(row["challenger"]),
                _version(row["waiting"], "bold yellow") or Text("-", style="dim"),
                ago(row["updated_at"], self.clock())]
