"""Runs: every run of this agent, newest first, filtered by kind, status, text or job;
the highlighted run in full (inputs, outputs, metrics, lineage, error); run its job
again now, or replay a training or prediction and compare."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from agent.view import Page, View
from tui.screens.base import SiltaScreen
from tui.widgets.common.filter_bar import FilterBar
from tui.widgets.common.paged_table import PagedTable
from tui.widgets.runs.run_detail import RunDetail, detail_text
from tui.widgets.runs.runs_table import RunsTable, run_cells

KINDS: tuple[str | None, ...] = (None, "sync", "publish", "train", "predict", "monitor")
STATUSES: tuple[str | None, ...] = (None, "ok", "failed", "partial", "running",
                                    "interrupted", "skipped")
#: run kinds `silta runs replay` can run again
REPLAYABLE = ("train", "predict")
#: rows read per query when a job's runs are picked out of a text match (see `fetch_runs`)
_SCAN = 1000


@dataclass(frozen=True)
class RunQuery:
    """What the list shows: filters and the page."""

    kind: str | None = None
    status: str | None = None
    text: str = ""
    idle: bool = False
    job: str | None = None
    """``kind:name`` of one job (from the dashboard): only its runs."""
    offset: int = 0

    @property
    def job_name(self) -> str | None:
        return self.job.partition(":")[2] or self.job if self.job else None

    @property
    def job_kind(self) -> str | None:
        """The run kind a job's runs have; None for a sync (its runs are sync or publish)."""
        if not self.job or ":" not in self.job:
            return None
        kind = self.job.partition(":")[0]
        return None if kind == "sync" else kind

    def title(self) -> Text:
        parts = ["runs"]
        if self.job:
            parts.append(f"job {self.job}")
        parts.append(f"kind {self.kind or 'all'}")
        parts.append(f"status {self.status or 'all'}")
        parts.append("idle shown" if self.idle else "idle hidden")
        if self.text:
            parts.append(f"“{self.text}”")
        return Text(" · ".join(parts))  # plain: the typed filter is not markup


def job_of(run: dict[str, Any]) -> str:
    """The job id (as `silta jobs` and ``job.run`` have it) that made ``run``: a publish
    is a sync that writes on-prem, so its job is ``sync:NAME``."""
    kind = "sync" if run["kind"] in ("sync", "publish") else run["kind"]
    return f"{kind}:{run['name']}"


def fetch_runs(view: View, q: RunQuery, limit: int) -> Page:
    """One page of runs for ``q`` (blocking: call in a worker)."""
    if q.job_kind and q.kind and q.kind != q.job_kind:
        return Page([], 0, q.offset, limit)  # a train job has no publish runs
    kind: str | tuple[str, ...] | None = q.kind or q.job_kind
    if q.job and kind is None:
        kind = ("sync", "publish")  # a sync job's runs
    return view.runs(kind=kind, status=q.status, text=q.text, idle=q.idle, name=q.job_name,
                     offset=q.offset, limit=limit)


def _cycle(values: tuple[str | None, ...], current: str | None) -> str | None:
    return values[(values.index(current) + 1) % len(values)] if current in values else None


class RunsScreen(SiltaScreen):
    HELP = ("Runs of this agent, newest first, one page at a time (] and [ turn pages). "
            "k and s cycle the kind and status shown, i shows the sync runs that found "
            "nothing to do (hidden by default), / searches names, ids, errors and triggers, "
            "c clears every filter. The pane below shows the highlighted run: trigger, "
            "times, error in full, inputs and outputs with their versions, metrics and the "
            "lineage of what it wrote (Tab to scroll it). n queues a run of the same job "
            "now; R replays a training or prediction from what it recorded and compares.")
    WRITE_ACTIONS = frozenset({"run_now", "replay"})
    AUTO_FOCUS = "#runs"
    DEFAULT_CSS = """
    RunsScreen #runs { height: 1fr; }
    RunsScreen #run-detail { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "cycle_kind", "kind", id="runs.kind",
                tooltip="show one kind of run: all, sync, publish, train, predict, monitor"),
        Binding("s", "cycle_status", "status", id="runs.status",
                tooltip="show one status: all, ok, failed, partial, running, interrupted, "
                        "skipped"),
        Binding("i", "toggle_idle", "idle", id="runs.idle",
                tooltip="show or hide the sync runs that found nothing to do"),
        Binding("slash", "filter", "filter", id="runs.filter",
                tooltip="search run names, ids, errors and triggers"),
        Binding("c", "clear_filters", "clear", id="runs.clear", show=False,
                tooltip="clear every filter (kind, status, text, job)"),
        Binding("enter", "open_detail", "detail", id="runs.detail", show=False,
                tooltip="move into the run's detail (to scroll it); Escape comes back"),
        Binding("escape", "back_to_list", "list", id="runs.list", show=False,
                tooltip="back to the list of runs"),
        Binding("n", "run_now", "run now", id="runs.run-now",
                tooltip="queue a run of the highlighted run's job now"),
        Binding("R", "replay", "replay", id="runs.replay",
                tooltip="run the highlighted training or prediction again from what it "
                        "recorded, and compare"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query_state = RunQuery()
        self._detail_key: tuple[Any, ...] | None = None
        self._detail_data: dict[str, Any] | None = None
        self._drawn: Any = None

    def body(self) -> Iterable[Any]:
        yield FilterBar(id="runs-filter")
        yield RunsTable(self.settings.clock, page_size=self.settings.page_size, id="runs")
        yield RunDetail(id="run-detail")

    def on_mount(self) -> None:
        self._table.border_title = self.query_state.title()
        self.query_one(RunDetail).border_title = "run"
        super().on_mount()

    @property
    def _table(self) -> RunsTable:
        return self.query_one("#runs", RunsTable)

    # -- the list -----------------------------------------------------------------------
    def load(self) -> Any:
        q = self.query_state
        return q, fetch_runs(self.view, q, self.settings.page_size)

    def show(self, data: Any) -> None:
        q, page = data
        if q != self.query_state:
            return  # an older read finished after the filters changed
        if not page.rows and q.offset > 0:
            self._set(replace(q, offset=0))  # the rows went away (filtered, or pruned)
            return
        table = self._table
        # a reload that changed nothing visible leaves the table alone (no redraw)
        now = self.settings.clock()
        drawn = (page.total, page.offset, [[str(c) for c in run_cells(r, now)]
                                           for r in page.rows])
        if drawn != self._drawn:
            self._drawn = drawn
            table.show(page.rows, page.total, page.offset)
        table.border_title = q.title()
        if not page.rows:
            self._detail_key = self._detail_data = None
            hint = " Idle sync runs are hidden: i shows them." if not q.idle else ""
            self.query_one(RunDetail).show_note(f"No runs match.{hint} c clears the "
                                                "filters.")
        else:
            self._request_detail()

    def _set(self, q: RunQuery) -> None:
        self.query_state = q
        if not self.is_mounted:
            return  # on_mount reads with it
        self._table.border_title = q.title()
        self.reload()

    def filter_job(self, job: str) -> None:
        """Show only the runs of ``job`` (``kind:name``), every kind and status of them."""
        self._set(RunQuery(idle=self.query_state.idle, job=job))

    @on(PagedTable.PageRequested, "#runs")
    def _page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._set(replace(self.query_state, offset=event.offset))

    @on(FilterBar.Changed, "#runs-filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        event.stop()
        if event.text != self.query_state.text:
            self._set(replace(self.query_state, text=event.text, offset=0))

    def action_cycle_kind(self) -> None:
        self._set(replace(self.query_state, kind=_cycle(KINDS, self.query_state.kind),
                          offset=0))

    def action_cycle_status(self) -> None:
        self._set(replace(self.query_state, status=_cycle(STATUSES, self.query_state.status),
                          offset=0))

    def action_toggle_idle(self) -> None:
        self._set(replace(self.query_state, idle=not self.query_state.idle, offset=0))

    def action_filter(self) -> None:
        self.query_one("#runs-filter", FilterBar).open()

    def action_clear_filters(self) -> None:
        bar = self.query_one("#runs-filter", FilterBar)
        bar.query_one(Input).value = ""
        bar.remove_class("-shown")
        self._set(RunQuery())

    # -- the detail ---------------------------------------------------------------------
    @on(DataTable.RowSelected, "#runs")
    def action_open_detail(self) -> None:
        self.query_one(RunDetail).focus()

    def action_back_to_list(self) -> None:
        self._table.focus()

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._request_detail()

    def _request_detail(self) -> None:
        run = self._table.current
        if run is None:
            return
        # a reload keeps the cursor: read again only when the run itself changed
        key = (run["id"], run["status"], run.get("finished_at"))
        if key == self._detail_key:
            return
        self._detail_key = key
        run_id = str(run["id"])
        self.run_in_thread(lambda: self._read_detail(run_id), self._show_detail,
                           group="run-detail")

    def _read_detail(self, run_id: str) -> tuple[str, dict[str, Any], Text]:
        from agent.lineage import render

        detail = self.view.run_detail(run_id)
        lineage = detail.get("lineage")
        text = detail_text(detail, self.settings.clock(), render(lineage) if lineage else None)
        return run_id, detail, text

    def _show_detail(self, result: tuple[str, dict[str, Any], Text]) -> None:
        run_id, detail, text = result
        current = self._table.current
        if current is None or str(current["id"]) != run_id:
            return  # the cursor moved on while this was read
        self._detail_data = detail
        pane = self.query_one(RunDetail)
        pane.border_title = Text(f"run {run_id}")
        pane.show_text(text)

    # -- actions ------------------------------------------------------------------------
    def action_run_now(self) -> None:
        run = self._table.current
        if run is None:
            self.notify("no run highlighted", severity="warning")
            return
        job = job_of(run)
        self.confirm_and_submit(f"Run {job} now?", f"The agent starts {job} as soon as it "
                                "reads the command (at once if it is running; otherwise "
                                "when it starts).", "job.run", lambda _: {"job": job},
                                confirm="Run")

    def action_replay(self) -> None:
        run = self._table.current
        if run is None:
            self.notify("no run highlighted", severity="warning")
            return
        run_id, what = str(run["id"]), f"{run['kind']} run {run['id']} ({run['name']})"
        why = None
        if run["kind"] not in REPLAYABLE:
            why = (f"{what}: only train and predict runs can be replayed (a sync's input is "
                   "on-prem, and its commits are verified by checksums)")
        elif run["status"] != "ok":
            why = f"{what} finished {run['status']}: only runs that finished ok can be replayed"
        elif (self._detail_data is not None and self._detail_data.get("run_id") == run_id
              and self._detail_data.get("record") is None):
            why = f"{what} is not in _silta/runs yet: a replay reads what the run recorded"
        if why is not None:
            self.notify(why, title="not replayable", severity="warning")
            return
        self.confirm_and_submit(
            f"Replay {what}?", "The agent runs it again from what it recorded (the tables "
            "at the versions it read, the model version by its checksum) and compares the "
            "output column by column. It writes nothing; the result comes back as a "
            "notification.", "run.replay", lambda _: {"run": run_id}, confirm="Replay")
