"""The alerts of one page: id, severity, state, what, count, since; most severe first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual import events

from agent.view import ago
from tui.text import SEVERITY_STYLE, plain, styled
from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("id", "id"), ("severity", "severity"), ("state", "state"), ("what", "what"),
           ("count", "count"), ("since", "since")]
#: the narrowest the "what" column gets (its start is cut, its end stays)
MIN_WHAT = 16


def what(alert: dict[str, Any]) -> str:
    """``monitor / check / target``."""
    return f"{alert['monitor']} / {alert['check']} / {alert['target']}"


def clip_start(text: str, width: int) -> str:
    """``text`` in ``width`` characters, its start cut (the target is at the end)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def state_text(alert: dict[str, Any]) -> Text:
    text = styled(alert["state"])
    if alert.get("silenced_until") and alert["state"] != "resolved":
        text.append(" silenced", style="italic")
    return text


class AlertList(PagedTable):
    """One page of alerts; "what" takes the width the other columns leave."""

    def __init__(self, clock: Callable[[], dt.datetime], *, page_size: int = 100,
                 id: str | None = None) -> None:
        super().__init__(COLUMNS, key="id", cells=self._cells, page_size=page_size, id=id)
        self.clock = clock
        self.what_width = 60
        self._shown_width = 0

    def _cells(self, alert: dict[str, Any]) -> list[Any]:
        return [str(alert["id"]), styled(alert["severity"], SEVERITY_STYLE), state_text(alert),
                clip_start(what(alert), self.what_width), f"{alert['count']:,}",
                ago(alert["first_seen"], self.clock())]

    def show(self, rows: Sequence[dict[str, Any]], total: int | None = None,
             offset: int = 0) -> None:
        """One page, its columns as wide as this page's cells ("what" takes the rest)."""
        before = self.current
        self._shown_width = self.size.width
        widths = self._widths(rows)
        self.rows_shown = []  # the columns afresh: set widths, not the widest ever shown
        self.clear(columns=True)
        for field, label in self.spec:
            self.add_column(label, key=field, width=widths[field])
        super().show(rows, total, offset)
        index = next((i for i, r in enumerate(self.rows_shown)
                      if before is not None and r[self.key] == before[self.key]), None)
        if index is not None:
            self.move_cursor(row=index, animate=False)

    def _widths(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Each column's width, and :attr:`what_width` (where "what" is cut)."""
        self.what_width = 10**6
        cells = [self._cells(r) for r in rows]
        widths = {field: max([len(label), *(plain(c[i]).cell_len for c in cells)])
                  for i, (field, label) in enumerate(self.spec)}
        available = self.size.width or self.app.size.width - 2
        pad = 2 * self.cell_padding
        others = sum(w + pad for field, w in widths.items() if field != "what")
        # its own padding and room for the vertical scroll bar
        room = max(MIN_WHAT, available - others - pad - 2)
        self.what_width = min(widths["what"], room)
        widths["what"] = max(len("what"), self.what_width)
        return widths

    def on_resize(self, event: events.Resize) -> None:
        if self.rows_shown and event.size.width != self._shown_width:
            self.show(self.rows_shown, self.page_total, self.page_offset)
