"""The dashboard: is the agent alive, what each job did and does now, alerts, recent runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Static

from agent.view import ago
from tui.screens.base import SiltaScreen
from tui.text import SEVERITY_STYLE, plain, styled
from tui.widgets.common.paged_table import PagedTable
from tui.widgets.status.jobs_table import JobsTable, job_rows

RECENT = [("started_at", "started"), ("job", "run"), ("status", "status"), ("rows", "rows"),
          ("error", "error")]


def alerts_text(alerts: dict[str, Any]) -> Text:
    text = Text("open alerts: ", style="bold")
    if not alerts.get("open"):
        return text.append("none", style="green")
    for sev in ("critical", "warning", "info"):
        n = alerts["by_severity"].get(sev, 0)
        if n:
            text.append(f"{n} {sev}  ", style=SEVERITY_STYLE[sev])
    for a in alerts.get("latest", [])[:3]:
        text.append("\n")
        text.append_text(styled(a["severity"], SEVERITY_STYLE))
        text.append(" ")
        text.append_text(plain(a["what"].split(" / ", 1)[-1]))  # check / target: fits 80 cols
    return text


def commands_text(commands: list[dict[str, Any]], now: Any) -> Text:
    text = Text("your commands: ", style="bold")
    if not commands:
        return text.append("none yet", style="dim")
    for c in commands[:3]:
        text.append("\n")
        text.append_text(styled(c["status"]))
        text.append(f" #{c['id']} ")
        text.append_text(plain(f"{c['kind']} by {c['os_user']} {ago(c['created_at'], now)}"))
        if c.get("result"):
            text.append_text(plain(f": {c['result']}", "dim"))
    return text


class DashboardScreen(SiltaScreen):
    HELP = ("The dashboard: the agent's heartbeat, each sync and job with its last and next "
            "run and live progress, open alerts by severity, your latest commands and the "
            "recent runs. Enter on a job shows its runs; r queues a run of it now.")
    WRITE_ACTIONS = frozenset({"run_now"})
    DEFAULT_CSS = """
    DashboardScreen #jobs { height: 3fr; }
    DashboardScreen #strip { height: 4; }
    DashboardScreen #alerts-summary, DashboardScreen #commands {
        width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    DashboardScreen #recent { height: 2fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_now", "run now", id="dashboard.run-now",
                tooltip="queue a run of the job under the cursor"),
        Binding("enter", "open_runs", "runs", id="dashboard.runs", show=False,
                tooltip="the runs of the job under the cursor"),
    ]

    def body(self) -> Iterable[Any]:
        yield JobsTable(self.settings.clock, id="jobs")
        with Horizontal(id="strip"):
            yield Static(id="alerts-summary")
            yield Static(id="commands")
        yield PagedTable(RECENT, key="id", cells=self._recent_cells, id="recent")

    def on_mount(self) -> None:
        self.query_one("#jobs", JobsTable).border_title = "syncs and jobs"
        self.query_one("#recent", PagedTable).border_title = "recent runs"
        super().on_mount()

    def load(self) -> Any:
        return self.view.status(), self.view.commands(limit=3)

    def show(self, data: Any) -> None:
        status, commands = data
        now = self.settings.clock()
        self.query_one("#jobs", JobsTable).show(job_rows(status, now))
        self.query_one("#alerts-summary", Static).update(alerts_text(status["alerts"]))
        self.query_one("#commands", Static).update(commands_text(commands, now))
        self.query_one("#recent", PagedTable).show(status["recent"])

    def _recent_cells(self, r: dict[str, Any]) -> list[Any]:
        return [ago(r["started_at"], self.settings.clock()), f"{r['kind']}:{r['name']}",
                styled(r["status"]), f"{r['rows']:,}", (r["error"] or "").splitlines()[0]
                if r["error"] else ""]

    def action_run_now(self) -> None:
        row = self.query_one("#jobs", JobsTable).current
        if row is None:
            return
        job = row["job"]
        self.confirm_and_submit(f"Run {job} now?", f"The agent starts {job} as soon as it "
                                "reads the command (at once if it is running; otherwise "
                                "when it starts).", "job.run", lambda _: {"job": job},
                                confirm="Run")

    @on(PagedTable.RowSelected, "#jobs")
    def action_open_runs(self) -> None:
        row = self.query_one("#jobs", JobsTable).current
        if row is not None:
            self.silta.open_runs_of(row["job"])
