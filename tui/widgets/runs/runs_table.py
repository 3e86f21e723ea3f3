"""One page of the agent's runs: when, what, outcome, rows, model and why it ran."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent.view import ago
from tui.text import styled
from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("started_at", "started"), ("kind", "kind"), ("name", "name"),
           ("status", "status"), ("rows", "rows"), ("model", "model@version"),
           ("trigger", "trigger")]


def model_ref(row: dict[str, Any]) -> str | None:
    """``model@version`` of an ML run, or None."""
    if not row.get("model"):
        return None
    version = row.get("model_version")
    return str(row["model"]) if version is None else f"{row['model']}@{version}"


def run_cells(row: dict[str, Any], now: dt.datetime) -> list[Any]:
    return [ago(row["started_at"], now), row["kind"], row["name"], styled(row["status"]),
            f"{row['rows']:,}" if row.get("rows") is not None else None, model_ref(row),
            row.get("trigger")]


class RunsTable(PagedTable):
    """Runs newest first; cells are plain text (a name or trigger never acts as markup)."""

    def __init__(self, clock: Callable[[], dt.datetime], *, page_size: int = 100,
                 id: str | None = None) -> None:
        super().__init__(COLUMNS, key="id", cells=self._cells, page_size=page_size, id=id)
        self.clock = clock

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        return run_cells(row, self.clock())
