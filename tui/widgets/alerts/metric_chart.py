"""An alert's figure over its monitor's runs: a sparkline, then first/last/min/max and
the threshold as numbers (four lines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from tui.text import plain


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def chart_title(history: Sequence[dict[str, Any]]) -> Text:
    if not history:
        return Text("no figures of this check in _silta/metrics", style="dim")
    metrics = list(dict.fromkeys(str(h.get("metric") or "value") for h in history))
    breaches = sum(1 for h in history if h.get("status") == "breach")
    text = Text()
    text.append_text(plain(metrics[-1], "bold"))
    text.append(f" over the last {len(history)} run(s), {breaches} breach(es)")
    if len(metrics) > 1:
        text.append_text(plain(f"; earlier: {', '.join(metrics[:-1])}", "dim"))
    return text


def chart_figures(history: Sequence[dict[str, Any]]) -> Text:
    values = [float(h["value"]) for h in history if h.get("value") is not None]
    if not values:
        return Text("")
    threshold = next((h["threshold"] for h in reversed(history)
                      if h.get("threshold") is not None), None)
    text = Text()
    for label, value in (("first", values[0]), ("last", values[-1]), ("min", min(values)),
                         ("max", max(values)), ("threshold", threshold)):
        text.append(f"{label} ", style="dim")
        text.append(f"{number(value)}  ", style="bold" if label == "last" else "")
    return text


class MetricChart(Vertical):
    DEFAULT_CSS = """
    MetricChart { height: auto; }
    MetricChart Sparkline { height: 2; width: 48; max-width: 100%; }
    MetricChart Sparkline.-empty { display: none; }
    MetricChart Static { height: auto; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        #: the series shown, oldest first (None where a run had no figure)
        self.values: list[float | None] = []

    def compose(self) -> ComposeResult:
        yield Static(id="chart-title")
        yield Sparkline([], id="chart-line")
        yield Static(id="chart-figures")

    def show(self, history: Sequence[dict[str, Any]]) -> None:
        self.values = [None if h.get("value") is None else float(h["value"])
                       for h in history]
        numbers = [v for v in self.values if v is not None]
        line = self.query_one(Sparkline)
        line.data = numbers  # each run gets an equal share of the width
        line.set_class(not numbers, "-empty")
        self.query_one("#chart-title", Static).update(chart_title(history))
        self.query_one("#chart-figures", Static).update(chart_figures(history))
