"""The alert under the cursor: its figures and metric chart, its events, its notices."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from agent.view import ago
from tui.text import SEVERITY_STYLE, plain, styled
from tui.widgets.alerts.alert_list import state_text, what
from tui.widgets.alerts.metric_chart import MetricChart, number

EVENTS = [("at", "at"), ("event", "event"), ("by", "by"), ("detail", "detail")]
NOTIFICATIONS = [("channel", "channel"), ("event", "event"), ("status", "status"),
                 ("attempts", "attempts"), ("last_error", "last error")]
TABS = ("tab-alert", "tab-events", "tab-notifications")


def _label(text: Text, label: str) -> None:
    text.append(f"{label} ", style="dim")


def figures(alert: dict[str, Any], now: dt.datetime) -> Text:
    """The alert's figures in seven lines at 80 columns; every outside string is shown as
    text (never as markup)."""
    t = Text()
    t.append(f"#{alert['id']} ", style="bold")
    t.append_text(styled(alert["severity"], SEVERITY_STYLE))
    t.append(" ")
    t.append_text(state_text(alert))
    t.append("  ")
    _label(t, "model")
    t.append_text(plain(alert.get("model")))
    t.append("  ")
    _label(t, "seen")
    t.append(f"{alert['count']:,}×\n")
    t.append_text(plain(what(alert), "bold"))
    t.append("\n")
    t.append_text(plain(alert["summary"] or "(no summary)"))
    t.append("\n")
    _label(t, "value")
    t.append(f"{number(alert['value'])}  ", style="bold")
    _label(t, "threshold")
    t.append(f"{number(alert['threshold'])}  ")
    _label(t, "first seen")
    t.append_text(plain(ago(alert["first_seen"], now)))
    t.append("  ")
    _label(t, "last seen")
    t.append_text(plain(ago(alert["last_seen"], now)))
    t.append("\n")
    _label(t, "run")
    t.append_text(plain(alert.get("last_run_id")))
    t.append("  ")
    _label(t, "acknowledged")
    if alert.get("acked_at"):
        t.append_text(plain(f"by {alert['acked_by']} {ago(alert['acked_at'], now)}"))
        if alert.get("ack_comment"):
            t.append_text(plain(f": {alert['ack_comment']}", "italic"))
    else:
        t.append("no", style="dim")
    t.append("  ")
    _label(t, "resolved")
    if alert.get("resolved_at"):
        t.append_text(plain(f"by {alert['resolved_by']} {ago(alert['resolved_at'], now)}"))
    else:
        t.append("no", style="dim")
    t.append("  ")
    _label(t, "silenced")
    if alert.get("silenced_until"):
        t.append_text(plain(f"until {alert['silenced_until']} "
                            f"({ago(alert['silenced_until'], now)})"))
    else:
        t.append("no", style="dim")
    return t


class AlertDetail(Vertical):
    """Tabs: the alert (figures and chart), its events, its notifications."""

    DEFAULT_CSS = """
    AlertDetail { height: 1fr; }
    AlertDetail #alert-empty { display: none; padding: 1 2; color: $text-muted; }
    AlertDetail.-empty #alert-empty { display: block; }
    AlertDetail.-empty TabbedContent { display: none; }
    AlertDetail TabbedContent { height: 1fr; }
    AlertDetail TabPane { padding: 0 1; height: 1fr; }
    AlertDetail #alert-figures { height: auto; }
    AlertDetail DataTable { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, classes="-empty")
        #: the alert shown (as the facade returned it), or None
        self.alert: dict[str, Any] | None = None
        self.figures_text = Text()

    def compose(self) -> ComposeResult:
        yield Static(id="alert-empty")
        with TabbedContent(id="alert-tabs"):
            with TabPane("alert", id="tab-alert"), VerticalScroll():
                yield Static(id="alert-figures")
                yield MetricChart(id="alert-chart")
            with TabPane("events", id="tab-events"):
                yield DataTable(id="alert-events", cursor_type="row", zebra_stripes=True)
            with TabPane("notifications", id="tab-notifications"):
                yield DataTable(id="alert-notifications", cursor_type="row",
                                zebra_stripes=True)

    def on_mount(self) -> None:
        for table_id, columns in (("#alert-events", EVENTS),
                                  ("#alert-notifications", NOTIFICATIONS)):
            table = self.query_one(table_id, DataTable)
            for key, label in columns:
                table.add_column(label, key=key)

    def show(self, alert: dict[str, Any], now: dt.datetime) -> None:
        self.alert = alert
        self.remove_class("-empty")
        self.figures_text = figures(alert, now)
        self.query_one("#alert-figures", Static).update(self.figures_text)
        self.query_one(MetricChart).show(alert.get("history") or [])
        events = self.query_one("#alert-events", DataTable)
        events.clear()
        for e in alert.get("events") or []:
            events.add_row(plain(ago(e["at"], now)), styled(e["event"]), plain(e["by"]),
                           plain(e["detail"]))
        sent = self.query_one("#alert-notifications", DataTable)
        sent.clear()
        for n in alert.get("notifications") or []:
            sent.add_row(plain(n["channel"]), plain(n["event"]), styled(n["status"]),
                         plain(n["attempts"]), plain(n["last_error"]))
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("tab-events").label = f"events ({len(alert.get('events') or [])})"
        tabs.get_tab("tab-notifications").label = (
            f"notifications ({len(alert.get('notifications') or [])})")

    def show_empty(self, label: str) -> None:
        self.alert = None
        self.add_class("-empty")
        self.query_one("#alert-empty", Static).update(plain(label))

    @property
    def empty_label(self) -> str:
        return str(self.query_one("#alert-empty", Static).content) \
            if self.has_class("-empty") else ""

    def next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        index = TABS.index(tabs.active) if tabs.active in TABS else 0
        tabs.active = TABS[(index + 1) % len(TABS)]
