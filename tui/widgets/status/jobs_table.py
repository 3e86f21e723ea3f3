"""Every sync and job: its last run, outcome, rows, next run and live progress."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text

from agent.view import ago
from tui.text import human_bytes, styled
from tui.widgets.common.paged_table import PagedTable

COLUMNS = [("job", "job"), ("last", "last run"), ("outcome", "outcome"), ("rows", "rows"),
           ("next", "next run / now")]


def progress_text(live: dict[str, Any] | None, started_at: str, now: dt.datetime) -> Text:
    """"running 12 s: 3/10 files, 1.2/4.0 MiB, 5,000 rows, 2.1 MiB/s"."""
    text = Text(f"running {ago(started_at, now).removesuffix(' ago')}", style="cyan")
    if live:
        if live.get("files_total"):
            text.append(f": {live['files_done']}/{live['files_total']} files")
        if live.get("bytes_total"):
            text.append(f", {human_bytes(live['bytes_done'])}/"
                        f"{human_bytes(live['bytes_total'])}")
        text.append(f", {live.get('rows', 0):,} rows, "
                    f"{human_bytes(live.get('bytes_per_s', 0))}/s")
    return text


def job_rows(status: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
    running = {r["job"]: r for r in status.get("running", [])}
    rows = []
    for s in status["syncs"]:
        job = f"sync:{s['sync']}"
        rows.append({"key": job, "job": job, "last_run": s["last_run"],
                     "outcome": s["outcome"], "rows": s["rows"], "next_run": s["next_run"],
                     "enabled": s["enabled"], "error": s["error"],
                     "watch": s["watch"], "running": running.get(job)})
    for j in status["jobs"]:
        rows.append({"key": j["job"], "job": j["job"], "last_run": j["last_run"],
                     "outcome": j["outcome"], "rows": j["rows"], "next_run": j["next_run"],
                     "enabled": j["enabled"], "error": j["error"], "watch": False,
                     "running": running.get(j["job"])})
    return rows


class JobsTable(PagedTable):
    def __init__(self, clock: Any, id: str | None = None) -> None:
        super().__init__(COLUMNS, key="key", cells=self._cells, id=id)
        self.clock = clock

    def _cells(self, row: dict[str, Any]) -> list[Any]:
        now = self.clock()
        live = row["running"]
        if live:
            nxt: Any = progress_text(live["progress"], live["started_at"], now)
        elif not row["enabled"]:
            nxt = Text("disabled", style="dim")
        elif row["next_run"]:
            nxt = ago(row["next_run"], now)
        else:
            nxt = Text("on arrival" if row["watch"] else "after others", style="dim")
        return [row["job"], ago(row["last_run"], now), styled(row["outcome"] or "never"),
                f"{row['rows']:,}" if row["rows"] is not None else None, nxt]
