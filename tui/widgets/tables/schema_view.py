"""A table's columns at one version: name, type, nullable."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("column", "column"), ("type", "type"), ("nullable", "nullable")]


def version_label(version: int, latest: int | None) -> str:
    """"at version 3 of 5", or "at version 5 (latest)"."""
    if latest is None or version == latest:
        return f"at version {version} (latest)"
    return f"at version {version} of {latest}"


class SchemaView(PagedTable):
    """Rows are ``View.table_schema`` dicts; the border says at which version."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="column", cells=self._cells, page_size=10_000, id=id)

    @staticmethod
    def _cells(row: dict[str, Any]) -> list[Any]:
        return [row["column"], row["type"],
                Text("yes") if row["nullable"] else Text("no", style="bold")]

    def show_schema(self, columns: list[dict[str, Any]], version: int,
                    latest: int | None) -> None:
        self.show(columns)
        self.border_title = f"schema {version_label(version, latest)}"
        self.border_subtitle = f"{len(columns)} columns"
