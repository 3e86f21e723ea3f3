"""A model's versions, newest first: aliases, state, primary metric, who made it from what."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("mark", " "), ("version", "version"), ("aliases", "aliases"), ("state", "state"),
           ("metric", "metric"), ("created_at", "created"), ("created_by", "by"),
           ("training", "trained on")]
ALIAS_STYLE = {"champion": "bold green", "challenger": "yellow"}


def metric_text(row: dict[str, Any]) -> str | None:
    """``macro_f1 0.9049``: the version's primary metric and its value."""
    if row.get("value") is None:
        return None
    return f"{row['primary_metric']} {row['value']:.4f}"


def data_ref(data: dict[str, Any] | None) -> str | None:
    """``table@version`` of what a version was trained on."""
    if not data or not data.get("table"):
        return None
    at = data.get("version")
    return f"{data['table']}@{at}" if at is not None else str(data["table"])


def when(iso: str | None) -> str | None:
    """``2026-12-02 02:27`` of an ISO time (UTC as the registry has it)."""
    return iso[:16].replace("T", " ") if iso else None


def aliases_text(aliases: list[str]) -> Text:
    text = Text()
    for i, alias in enumerate(aliases):
        if i:
            text.append(" ")
        text.append(alias, style=ALIAS_STYLE.get(alias, "cyan"))
    return text


class VersionTable(PagedTable):
    """The versions of one model (``View.model_versions``), one page of them at a time."""

    def __init__(self, page_size: int = 100, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="version", cells=self._cells, page_size=page_size,
                         id=id)
        self.marked: int | None = None

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        mark = Text("●", style="bold magenta") if row["version"] == self.marked else ""
        state = Text(row["state"], style="dim" if row["state"] == "archived" else "")
        return [mark, f"v{row['version']}", aliases_text(row["aliases"]), state,
                metric_text(row), when(row["created_at"]), row["created_by"],
                data_ref(row.get("training_data"))]
