"""The alerts screen: firing, acknowledged and resolved alerts, most severe first; the one
under the cursor in detail (figures, a chart of its metric over the monitor's runs, events,
notifications); acknowledge, silence or resolve it through the agent's command queue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from agent.config_base import parse_duration
from agent.view import ALERT_STATES, Page
from tui.screens.base import SiltaScreen
from tui.text import plain
from tui.widgets.alerts.alert_detail import AlertDetail
from tui.widgets.alerts.alert_list import AlertList, what
from tui.widgets.common.confirm import Confirmed
from tui.widgets.common.filter_bar import FilterBar

#: the state filters ``t`` cycles through: (name, states)
STATE_FILTERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("open", ("firing", "acknowledged")), ("firing", ("firing",)),
    ("acknowledged", ("acknowledged",)), ("resolved", ("resolved",)), ("all", ALERT_STATES))
#: points of the metric chart (the monitor's latest runs)
POINTS = 30
DEFAULT_SILENCE = "2h"
#: what the detail pane was last loaded for: a changed alert is read again
_Seen = tuple[Any, ...]


def _seen(alert: dict[str, Any]) -> _Seen:
    return tuple(alert.get(k) for k in ("id", "state", "count", "last_seen", "acked_at",
                                        "resolved_at", "silenced_until"))


class AlertsScreen(SiltaScreen):
    HELP = ("Alerts raised by the monitors, most severe first. t cycles the list through "
            "open (firing and acknowledged), firing, acknowledged, resolved and all; / "
            "filters by monitor, check, target, model or summary. The pane below shows the "
            "alert under the cursor: its figures, its metric over the monitor's latest runs, "
            "its events and notifications (v switches between them). a acknowledges it "
            "with a comment, s silences its notifications for a while, x resolves it by "
            "hand: each is queued for the agent, which records your user name.")
    WRITE_ACTIONS = frozenset({"ack", "silence", "resolve"})
    AUTO_FOCUS = "#alert-list"
    DEFAULT_CSS = """
    AlertsScreen #alert-list { height: 1fr; min-height: 6; }
    AlertsScreen #alert-detail { height: 40%; min-height: 14; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "cycle_states", "states", id="alerts.states",
                tooltip="show open, firing, acknowledged, resolved or all alerts"),
        Binding("slash", "filter", "filter", id="alerts.filter",
                tooltip="filter by monitor, check, target, model or summary"),
        Binding("v", "next_tab", "detail tab", id="alerts.detail-tab", show=False,
                tooltip="the alert's figures, its events or its notifications"),
        Binding("a", "ack", "acknowledge", id="alerts.ack",
                tooltip="acknowledge the alert under the cursor, with a comment"),
        Binding("s", "silence", "silence", id="alerts.silence",
                tooltip="hold back the alert's notifications for a while"),
        Binding("x", "resolve", "resolve", id="alerts.resolve",
                tooltip="resolve the alert under the cursor by hand"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state_filter = 0
        self.filter_text = ""
        self.list_offset = 0
        self._detail_seen: _Seen | None = None

    # -- layout -------------------------------------------------------------------------
    def body(self) -> Iterable[Any]:
        yield FilterBar(id="alert-filter")
        yield AlertList(self.settings.clock, page_size=self.settings.page_size,
                        id="alert-list")
        yield AlertDetail(id="alert-detail")

    @property
    def alert_list(self) -> AlertList:
        return self.query_one("#alert-list", AlertList)

    @property
    def detail(self) -> AlertDetail:
        return self.query_one("#alert-detail", AlertDetail)

    @property
    def states_name(self) -> str:
        return STATE_FILTERS[self.state_filter][0]

    @property
    def _matching(self) -> str:
        return f" matching {self.filter_text!r}" if self.filter_text else ""

    # -- loading ------------------------------------------------------------------------
    def load(self) -> Any:
        _, states = STATE_FILTERS[self.state_filter]
        return self.view.alerts(states=states, text=self.filter_text, offset=self.list_offset,
                                limit=self.settings.page_size)

    def show(self, data: Any) -> None:
        page: Page = data
        table = self.alert_list
        table.show(page.rows, page.total, page.offset)
        # a Text: the filter text is shown as typed, never read as markup
        table.border_title = plain(f"alerts: {self.states_name} ({page.total:,}){self._matching}")
        self._detail_for(table.current)

    def _detail_for(self, alert: dict[str, Any] | None) -> None:
        if alert is None:
            self._detail_seen = None
            self.detail.show_empty(f"no {self.states_name} alerts{self._matching}")
            return
        seen = _seen(alert)
        if seen == self._detail_seen:
            return
        self._detail_seen = seen
        alert_id = int(alert["id"])
        self.run_in_thread(lambda: self.view.alert_detail(alert_id, points=POINTS),
                           self._show_detail, group="alert-detail")

    def _show_detail(self, alert: dict[str, Any]) -> None:
        current = self.alert_list.current
        if current is None or int(current["id"]) != int(alert["id"]):
            return  # the cursor moved on while it was read
        self.detail.show(alert, self.settings.clock())

    @on(DataTable.RowHighlighted, "#alert-list")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._detail_for(self.alert_list.current)

    @on(AlertList.PageRequested, "#alert-list")
    def _page(self, event: AlertList.PageRequested) -> None:
        event.stop()
        self.list_offset = event.offset
        self.reload()

    @on(FilterBar.Changed, "#alert-filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        event.stop()
        if event.text != self.filter_text:
            self.filter_text, self.list_offset = event.text, 0
            self.reload()

    # -- browsing -----------------------------------------------------------------------
    def action_cycle_states(self) -> None:
        self.state_filter = (self.state_filter + 1) % len(STATE_FILTERS)
        self.list_offset = 0
        self.reload()

    def action_filter(self) -> None:
        self.query_one("#alert-filter", FilterBar).open()

    def action_next_tab(self) -> None:
        self.detail.next_tab()

    # -- actions ------------------------------------------------------------------------
    def _target(self) -> dict[str, Any] | None:
        alert = self.alert_list.current
        if alert is None:
            self.notify("no alert under the cursor", severity="warning", markup=False)
        return alert

    def _refuse(self, title: str, alert: dict[str, Any]) -> None:
        """Say why an action does not apply to ``alert`` (no dialog, nothing queued)."""
        by = alert["acked_by"] if alert["state"] == "acknowledged" else alert["resolved_by"]
        self.notify(f"alert {alert['id']} is already {alert['state']}"
                    + (f" by {by}" if by else ""), title=title, severity="warning",
                    markup=False)

    def action_ack(self) -> None:
        alert = self._target()
        if alert is None:
            return
        alert_id = int(alert["id"])
        if alert["state"] != "firing":
            self._refuse("not acknowledged", alert)
            return
        self.confirm_and_submit(
            f"Acknowledge alert {alert_id}?",
            f"{what(alert)}: {alert['summary']}  The alert stays open until its check "
            "passes or someone resolves it; its repeat notifications stop.",
            "alert.ack", lambda answer: {"alert": alert_id, "comment": answer.comment},
            confirm="Acknowledge", comment="comment: what you are doing about it")

    def action_silence(self) -> None:
        alert = self._target()
        if alert is None:
            return
        alert_id = int(alert["id"])

        def args(answer: Confirmed) -> dict[str, Any]:
            seconds = parse_duration(answer.duration or DEFAULT_SILENCE)  # ValueError: shown
            return {"alert": alert_id, "seconds": seconds, "comment": answer.comment}

        self.confirm_and_submit(
            f"Silence alert {alert_id}?",
            f"{what(alert)}: its notifications (and those of a later alert of the same "
            "check) are held back for the time below; the alert itself still counts.",
            "alert.silence", args, confirm="Silence",
            duration=f"for how long: 90s, 30m, 2h, 1d (default {DEFAULT_SILENCE})",
            comment="comment: why")

    def action_resolve(self) -> None:
        alert = self._target()
        if alert is None:
            return
        alert_id = int(alert["id"])
        if alert["state"] == "resolved":
            self._refuse("not resolved", alert)
            return
        self.confirm_and_submit(
            f"Resolve alert {alert_id} by hand?",
            f"{what(alert)}: it is closed now; if its check fails again in a later "
            "monitor run, a new alert fires.",
            "alert.resolve", lambda answer: {"alert": alert_id, "comment": answer.comment},
            confirm="Resolve", comment="comment: why it is over")

