"""What changed between two versions of a table: files and rows added and removed, the
columns added, removed and retyped, and some of the rows added and removed."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.text import plain
from tui.widgets.tables.preview_view import add_columns_fitted, cell

HINT = ("d: what the version under the cursor in History changed (against the one "
        "before it)   D: between two versions you type, e.g. 3..5")


def _count(n: int, one: str) -> str:
    return f"{n:,} {one}" if n == 1 else f"{n:,} {one}s"


def diff_summary(diff: dict[str, Any]) -> Text:
    """Three lines: files and rows, schema, what the sample below shows."""
    text = Text(f"version {diff['older']} -> {diff['newer']}: ", style="bold")
    text.append(f"+{_count(diff['files_added'], 'file')} "
                f"(+{diff['rows_added']:,} rows)", style="green")
    text.append("  ")
    text.append(f"-{_count(diff['files_removed'], 'file')} "
                f"(-{diff['rows_removed']:,} rows)", style="red")
    text.append(f"  rows {diff['rows_before']:,} -> {diff['rows_after']:,}")
    text.append("\ncolumns: ")
    parts: list[Text] = []
    if diff["columns_added"]:
        parts.append(Text("added ", style="green") + plain(", ".join(diff["columns_added"])))
    if diff["columns_removed"]:
        parts.append(Text("removed ", style="red")
                     + plain(", ".join(diff["columns_removed"])))
    if diff["columns_retyped"]:
        parts.append(Text("retyped ", style="yellow") + plain(", ".join(
            f"{c} {a} -> {b}" for c, a, b in diff["columns_retyped"])))
    if parts:
        text.append_text(Text("; ").join(parts))
    else:
        text.append("unchanged", style="dim")
    added, removed = len(diff["sample_added"]), len(diff["sample_removed"])
    text.append(f"\nbelow: {added:,} of the rows added (+), {removed:,} of the removed (-)",
                style="dim")
    return text


def sample_columns(diff: dict[str, Any]) -> list[str]:
    """The columns of the sample rows, newer version's order first."""
    out: list[str] = []
    for row in [*diff["sample_added"], *diff["sample_removed"]]:
        out += [c for c in row if c not in out]
    return out


class DiffView(Vertical):
    DEFAULT_CSS = """
    DiffView { height: 1fr; }
    DiffView #diff-summary { height: auto; padding: 0 1; }
    DiffView #diff-rows { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.diff: dict[str, Any] | None = None
        #: sample rows as shown: ("+" or "-", row)
        self.rows_shown: list[tuple[str, dict[str, Any]]] = []

    def compose(self) -> ComposeResult:
        yield Static(Text(HINT, style="dim"), id="diff-summary")
        yield DataTable[Text](id="diff-rows", zebra_stripes=True, cursor_type="row")

    @property
    def summary(self) -> Static:
        return self.query_one("#diff-summary", Static)

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#diff-rows", DataTable)

    def show_message(self, message: str | Text) -> None:
        """No diff: a hint, "reading…" or why it failed."""
        self.diff, self.rows_shown = None, []
        self.summary.update(Text(message, style="dim") if isinstance(message, str)
                            else message)
        self.table.clear(columns=True)

    def show_diff(self, diff: dict[str, Any]) -> None:
        self.diff = diff
        self.summary.update(diff_summary(diff))
        columns = sample_columns(diff)
        table = self.table
        table.clear(columns=True)
        self.rows_shown = ([("+", r) for r in diff["sample_added"]]
                           + [("-", r) for r in diff["sample_removed"]])
        add_columns_fitted(table, [Text("±"), *(plain(c) for c in columns)], [
            [Text(sign, style="bold green" if sign == "+" else "bold red"),
             *(cell(row.get(c)) for c in columns)] for sign, row in self.rows_shown])
