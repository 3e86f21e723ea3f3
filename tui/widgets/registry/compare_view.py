"""Two versions side by side: every metric, per segment, data, code, config; what differs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.text import plain
from tui.widgets.registry.version_detail import short
from tui.widgets.registry.version_table import data_ref

DIFFERENT = "bold yellow"


@dataclass(frozen=True)
class CompareRow:
    """One field of the comparison: its group, name and the two versions' values."""

    group: str
    field: str
    a: Any
    b: Any

    @property
    def differs(self) -> bool:
        return bool(self.a != self.b)

    @property
    def delta(self) -> str:
        """``b - a`` for two numbers that differ, else empty."""
        if not (_number(self.a) and _number(self.b)) or self.a == self.b:
            return ""
        d = self.b - self.a
        return f"{d:+,}" if isinstance(d, int) else f"{d:+.4f}"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def exact(value: Any) -> str:
    """A value as an operator compares it: floats to 6 decimals (``0.904899``), enough to
    tell versions apart, short enough for two columns at 80x24."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _segments(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{dimension: {value: metrics}}`` when the version row carries them."""
    found = row.get("segments")
    if not isinstance(found, dict):
        found = (row.get("metrics") or {}).get("segments")
    return found if isinstance(found, dict) else {}


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[CompareRow]:
    """The fields of versions ``a`` and ``b`` (rows of ``View.model_versions``)."""
    out: list[CompareRow] = []
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    for key in sorted(set(ma) | set(mb)):
        if isinstance(ma.get(key), dict) or isinstance(mb.get(key), dict):
            continue  # segments, when a row nests them here
        out.append(CompareRow("metrics (overall)", key, ma.get(key), mb.get(key)))
    primary = a.get("primary_metric") or b.get("primary_metric")
    sa, sb = _segments(a), _segments(b)
    if primary:
        for dim in sorted(set(sa) | set(sb)):
            da, db = sa.get(dim) or {}, sb.get(dim) or {}
            for value in sorted(set(da) | set(db), key=str):
                out.append(CompareRow(f"{primary} by segment", f"{dim}={value}",
                                      (da.get(value) or {}).get(primary),
                                      (db.get(value) or {}).get(primary)))
    ta, tb = a.get("training_data") or {}, b.get("training_data") or {}
    for field, fa, fb in (
            ("training data", data_ref(ta), data_ref(tb)),
            ("labels", data_ref(ta.get("labels")), data_ref(tb.get("labels"))),
            ("rows", ta.get("rows"), tb.get("rows")),
            ("train rows", ta.get("train_rows"), tb.get("train_rows")),
            ("eval rows", ta.get("eval_rows"), tb.get("eval_rows")),
            ("content sha256", short(ta.get("content_hash")), short(tb.get("content_hash")))):
        out.append(CompareRow("training data", field, fa, fb))
    for field, key in (("code version", "code_version"), ("config sha256", "config_hash"),
                       ("estimator", "estimator"), ("artifact sha256", "artifact_sha256"),
                       ("created at", "created_at"), ("created by", "created_by"),
                       ("aliases", "aliases"), ("state", "state")):
        va, vb = a.get(key), b.get(key)
        if key.endswith(("hash", "sha256")):
            va, vb = short(va), short(vb)
        if key == "aliases":
            va, vb = " ".join(va or []) or None, " ".join(vb or []) or None
        out.append(CompareRow("provenance", field, va, vb))
    return out


def compare_table(rows: list[CompareRow], label_a: str, label_b: str) -> Table:
    table = Table(expand=True, show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("field", no_wrap=True)
    table.add_column(Text(label_a), ratio=1, overflow="fold")
    table.add_column(Text(label_b), ratio=1, overflow="fold")
    table.add_column("Δ", no_wrap=True, justify="right")
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            table.add_row(Text(group, style="bold underline"), "", "", "")
        style = DIFFERENT if r.differs else ""
        table.add_row(plain(("≠ " if r.differs else "  ") + r.field, style),
                      plain(exact(r.a), style), plain(exact(r.b), style), Text(r.delta))
    return table


class CompareView(VerticalScroll):
    """``field | vA | vB | Δ``; fields that differ are marked ``≠`` and highlighted."""

    DEFAULT_CSS = """
    CompareView { height: 1fr; padding: 0 1; }
    CompareView #compare-title { height: auto; color: $text-muted; }
    CompareView #compare-table { height: auto; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[CompareRow] = []
        self.labels: tuple[str, str] = ("", "")

    def compose(self) -> ComposeResult:
        yield Static(plain("mark a version with space, then c on another; or c alone "
                           "compares the version under the cursor with the champion"),
                     id="compare-title")
        yield Static(id="compare-table")

    def show(self, model: str, a: dict[str, Any], b: dict[str, Any], label_a: str,
             label_b: str) -> None:
        self.rows = compare_rows(a, b)
        self.labels = (label_a, label_b)
        n = sum(r.differs for r in self.rows)
        self.query_one("#compare-title", Static).update(
            plain(f"{model}: {label_a} vs {label_b}, {n} field(s) differ (≠); "
                  f"Δ = {label_b.split()[0]} - {label_a.split()[0]}"))
        self.query_one("#compare-table", Static).update(
            compare_table(self.rows, label_a, label_b))
        self.scroll_home(animate=False)
