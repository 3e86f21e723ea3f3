"""The tables screen: every Delta table in the lake, one page at a time, and for the one
under the cursor its history, its schema and first rows at any version (time travel), the
difference between two versions, and its tags.

Read-only: nothing here changes the lake (tags are made with `silta tables tag`).
Names come cheap (``View.table_names``); a table's summary opens it, so summaries are read
only for the page in view, a few at a time, and reused for ``SUMMARY_TTL`` seconds by the
timed refresh.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from agent.view import ago
from tui.messages import LoadFailed
from tui.screens.base import SiltaScreen
from tui.text import plain
from tui.widgets.common.filter_bar import FilterBar
from tui.widgets.common.paged_table import PagedTable
from tui.widgets.tables.diff_view import HINT as DIFF_HINT
from tui.widgets.tables.diff_view import DiffView
from tui.widgets.tables.history_table import HistoryTable
from tui.widgets.tables.preview_view import PreviewView
from tui.widgets.tables.schema_view import SchemaView
from tui.widgets.tables.table_list import TableList, pending
from tui.widgets.tables.tags_view import TagsView
from tui.widgets.tables.version_dialog import VersionDialog

#: rows of the preview
PREVIEW_ROWS = 100
#: summaries read between two updates of the list (the first page shows at once)
SUMMARY_CHUNK = 20
#: seconds the timed refresh reuses a table's summary before reading it again
SUMMARY_TTL = 10.0
PANES = ("history", "schema", "preview", "diff", "tags")


def _error_text(e: BaseException) -> str:
    return getattr(e, "msg", None) or f"{type(e).__name__}: {e}"


def parse_version(text: str, latest: int) -> int | None:
    """A version typed by the operator ("3", "v3", "@3"); empty or "latest": None."""
    text = text.strip().lower().lstrip("v@").strip()
    if text in ("", "latest"):
        return None
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a version: type a number 0..{latest}")
    version = int(text)
    if version > latest:
        raise ValueError(f"there is no version {version}: the versions are 0..{latest}")
    return version


def parse_range(text: str, latest: int) -> tuple[int, int]:
    """Two versions "3..5" (also "3-5", "3 5", "3,5"; "5" alone: 4..5), older first."""
    parts = [p for p in re.split(r"\s*(?:\.\.|-|,|\s)\s*", text.strip().lower()) if p]
    try:
        versions = [parse_version(p, latest) for p in parts]
    except ValueError as e:
        raise ValueError(f"{e} (type two versions, e.g. 3..5)") from None
    numbers = [latest if v is None else v for v in versions]
    if len(numbers) == 1:
        numbers = [numbers[0] - 1, numbers[0]]
    if len(numbers) != 2 or min(numbers) < 0:
        raise ValueError(f"type two versions 0..{latest}, e.g. {max(latest - 1, 0)}..{latest}")
    older, newer = sorted(numbers)
    if older == newer:
        raise ValueError(f"{older}..{newer} is one version: type two different ones")
    return older, newer


@dataclass(frozen=True)
class ListQuery:
    """What the list shows: ``seq`` grows when the operator changes filter or page."""

    seq: int = 0
    text: str = ""
    offset: int = 0


@dataclass
class ListPage:
    query: ListQuery
    offset: int
    total: int
    rows: list[dict[str, Any]]
    #: summaries read for this page, by name (merged into the cache)
    read: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DetailRequest:
    table: str
    version: int | None  # None: the latest
    history_offset: int
    preview: bool
    stamp: Any  # the list row's version: a new commit reads the detail again


@dataclass
class Detail:
    request: DetailRequest
    latest: int | None = None
    version: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    schema: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    preview: tuple[list[str], list[dict[str, Any]]] | None = None
    error: str | None = None


class TablesScreen(SiltaScreen):
    HELP = ("The lake's tables (Silta's own under _silta/ too), a page at a time: version, "
            "rows and last commit. Below, the table under the cursor: its History (Enter "
            "on a version shows the data as it was then), its Schema and a Preview of its "
            "first rows at the version chosen with v (time travel; empty: the latest), the "
            "Diff between two versions (d: the version under the cursor in History against "
            "the one before it; D: two versions you type, e.g. 3..5), and its Tags. "
            "Nothing here changes the lake; tag a version with `silta tables tag`.")
    DEFAULT_CSS = """
    TablesScreen #tables { height: 40%; min-height: 6; }
    TablesScreen #detail-title { height: 1; padding: 0 1; background: $boost; }
    TablesScreen #detail { height: 1fr; }
    TablesScreen #detail > ContentSwitcher { height: 1fr; }
    TablesScreen #detail TabPane { height: 1fr; padding: 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter", id="tables.filter",
                tooltip="show only the tables whose name contains what you type"),
        Binding("v", "version", "version", id="tables.version",
                tooltip="time travel: the schema and first rows at a version you type"),
        Binding("d", "diff_previous", "diff", id="tables.diff",
                tooltip="what the version under the cursor in History changed"),
        Binding("D", "diff_range", "diff a..b", id="tables.diff-range",
                tooltip="the difference between two versions you type, e.g. 3..5"),
        Binding("h", "pane('history')", "history", id="tables.history", show=False,
                tooltip="the table's versions: time, operation, rows, source, run"),
        Binding("s", "pane('schema')", "schema", id="tables.schema", show=False,
                tooltip="the table's columns at the version chosen"),
        Binding("p", "pane('preview')", "preview", id="tables.preview", show=False,
                tooltip="the table's first rows at the version chosen"),
        Binding("t", "pane('tags')", "tags", id="tables.tags", show=False,
                tooltip="the table's tags (named versions)"),
        Binding("escape", "back", "back to list", id="tables.back", show=False,
                tooltip="back to the list of tables"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._query = ListQuery()
        self._reading: ListQuery | None = None  # the query of the list read last
        #: name -> (monotonic time read, summary); replaced, never changed in place
        self._known: dict[str, tuple[float, dict[str, Any]]] = {}
        self._summary: dict[str, Any] | None = None  # the list row of the table in detail
        self._table: str | None = None
        self._version: int | None = None  # chosen by the operator; None: the latest
        self._history_offset = 0
        self._wanted: DetailRequest | None = None
        self._busy = False
        self._shown: Detail | None = None
        self._diff_wanted: tuple[str, int, int] | None = None

    # -- layout -------------------------------------------------------------------------
    def body(self) -> Iterable[Any]:
        page = self.settings.page_size
        yield FilterBar(id="filter")
        yield TableList(self.settings.clock, page_size=page, id="tables")
        yield Static(id="detail-title")
        with TabbedContent(id="detail"):
            with TabPane("History", id="pane-history"):
                yield HistoryTable(page_size=page, id="history")
            with TabPane("Schema", id="pane-schema"):
                yield SchemaView(id="schema")
            with TabPane("Preview", id="pane-preview"):
                yield PreviewView(id="preview")
            with TabPane("Diff", id="pane-diff"):
                yield DiffView(id="diff")
            with TabPane("Tags", id="pane-tags"):
                yield TagsView(id="tags")

    def on_mount(self) -> None:
        self.query_one(TableList).border_title = "tables"
        self.query_one(HistoryTable).border_title = "history"
        self.query_one(TagsView).border_title = "tags"
        self.query_one(TableList).focus()
        super().on_mount()

    @property
    def table_list(self) -> TableList:
        return self.query_one(TableList)

    @property
    def tabs(self) -> TabbedContent:
        return self.query_one("#detail", TabbedContent)

    @property
    def pane(self) -> str:
        """The detail pane in view: history, schema, preview, diff or tags."""
        return (self.tabs.active or "pane-history").removeprefix("pane-")

    # -- the list -----------------------------------------------------------------------
    def reload(self) -> None:
        # a timed or resumed reload while the same list is being read would only read the
        # same summaries again
        if self._query == self._reading and any(
                w.group == "load" and w.node is self and not w.is_finished
                and not w.is_cancelled for w in self.app.workers):
            return
        self._reading = self._query
        super().reload()

    def load(self) -> ListPage | None:
        query, known = self._query, self._known
        size = self.settings.page_size
        names = self.view.table_names(query.text)
        total = len(names)
        offset = min(query.offset, max(total - 1, 0) // size * size)
        page = names[offset:offset + size]
        rows = [known[n][1] if n in known else pending(n) for n in page]
        now = time.monotonic()
        stale = [i for i, n in enumerate(page) if n not in known
                 or now - known[n][0] > SUMMARY_TTL]
        read: dict[str, dict[str, Any]] = {}
        worker = get_current_worker()
        for start in range(0, len(stale), SUMMARY_CHUNK):
            # what is known shows at once; each chunk of summaries fills in more
            self.app.call_from_thread(self._show_page,
                                      ListPage(query, offset, total, list(rows), dict(read)))
            if worker.is_cancelled:
                break  # what was read still goes into the cache
            chunk = stale[start:start + SUMMARY_CHUNK]
            for i, summary in zip(chunk, self.view.table_summaries([page[i] for i in chunk]),
                                  strict=True):
                rows[i] = read[summary["table"]] = summary
        return ListPage(query, offset, total, rows, read)

    def show(self, data: ListPage | None) -> None:
        if data is not None:
            self._show_page(data)

    def _show_page(self, page: ListPage) -> None:
        if page.read:
            stamp = time.monotonic()
            self._known = {**self._known, **{n: (stamp, s) for n, s in page.read.items()}}
        if page.query.seq != self._query.seq:
            return  # the operator asked for another filter or page meanwhile
        if page.offset != self._query.offset:
            self._query = ListQuery(page.query.seq, page.query.text, page.offset)
        self.table_list.show(page.rows, page.total, page.offset)
        self._select(self.table_list.current)

    def _ask(self, *, text: str | None = None, offset: int = 0) -> None:
        q = self._query
        self._query = ListQuery(q.seq + 1, q.text if text is None else text, offset)
        self.reload()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    @on(FilterBar.Changed)
    def _filtered(self, event: FilterBar.Changed) -> None:
        event.stop()
        if event.text != self._query.text:
            self._ask(text=event.text)

    @on(PagedTable.PageRequested, "#tables")
    def _list_page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._ask(offset=event.offset)

    @on(DataTable.RowHighlighted, "#tables")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._select(self.table_list.current)

    @on(DataTable.RowSelected, "#tables")
    def _open(self, event: DataTable.RowSelected) -> None:
        event.stop()
        pane = self.tabs.active_pane
        if pane is not None:
            focusable = [w for w in pane.query("*") if w.focusable]
            if focusable:
                focusable[0].focus()

    def action_back(self) -> None:
        self.table_list.focus()

    # -- the table under the cursor -----------------------------------------------------
    def _select(self, row: dict[str, Any] | None) -> None:
        if row is None:
            self._table = self._summary = self._wanted = self._shown = None
            self._clear_detail("no table matches the filter" if self._query.text
                               else "the lake has no tables yet")
            return
        if row["table"] != self._table:
            self._table, self._version, self._history_offset = row["table"], None, 0
            self._summary, self._shown = row, None
            self._diff_wanted = None
            self.query_one(DiffView).show_message(DIFF_HINT)
            self._clear_detail("reading…")
            self._request_detail()
            return
        before, self._summary = self._summary, row
        self._title()
        if _stamp(row) != _stamp(before):
            self._request_detail()

    def _latest(self) -> int | None:
        if self._shown is not None and self._shown.latest is not None:
            return self._shown.latest
        version = (self._summary or {}).get("version")
        return int(version) if version is not None else None

    def _title(self) -> None:
        row = self._summary
        if row is None:
            return
        text = plain(row["table"], "bold")
        if self._version is not None:
            text.append(f"  viewing version {self._version}", style="bold reverse")
        if row.get("error"):
            text.append("  ")
            text.append_text(plain(row["error"], "red"))
        elif not row.get("pending"):
            latest = self._latest()
            text.append(f"  version {latest}")
            if row.get("rows") is not None:
                text.append(f" · {row['rows']:,} rows · {row['columns']} columns")
            if row.get("last_commit"):
                text.append_text(plain(f" · {row.get('last_operation') or 'commit'} "
                                       f"{ago(row['last_commit'], self.settings.clock())}"))
        self.query_one("#detail-title", Static).update(text)

    def _clear_detail(self, why: str) -> None:
        if self._summary is None:
            self.query_one("#detail-title", Static).update(Text(why, style="dim"))
        else:
            self._title()
        self.query_one(HistoryTable).show([])
        self.query_one(SchemaView).show([])
        self.query_one(TagsView).show([])
        self.query_one(PreviewView).show_nothing(why)
        if self._summary is None:
            self.query_one(DiffView).show_message(why)

    def _request_detail(self) -> None:
        row = self._summary
        if self._table is None or row is None or row.get("pending"):
            self._wanted = None
            return
        if row.get("error"):
            self._wanted = None
            self._clear_detail("unreadable")
            return
        self._wanted = DetailRequest(self._table, self._version, self._history_offset,
                                     preview=self.pane == "preview", stamp=_stamp(row))
        if not self._busy:
            self._start_detail()

    def _start_detail(self) -> None:
        request = self._wanted
        if request is None:
            return
        self._busy = True
        self.run_in_thread(lambda: self._read_detail(request), self._detail_read,
                           group="table-detail")

    def _read_detail(self, request: DetailRequest) -> Detail:
        """In a worker thread: what the panes show (the preview only when in view)."""
        detail = Detail(request)
        name, offset = request.table, request.history_offset
        size = self.settings.page_size
        try:
            detail.history = self.view.table_history(name, limit=offset + size)[offset:]
            head = detail.history if offset == 0 else self.view.table_history(name, limit=1)
            detail.latest = int(head[0]["version"]) if head else None
            version = request.version if request.version is not None else detail.latest
            detail.version = version
            detail.schema = self.view.table_schema(name, version)
            detail.tags = self.view.table_tags(name)
            if request.preview:
                detail.preview = self.view.table_preview(name, version, PREVIEW_ROWS)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # also deltalake's Rust panics: the pane must not freeze
            detail.error = _error_text(e)
        return detail

    def _detail_read(self, detail: Detail) -> None:
        self._busy = False
        if detail.request != self._wanted:
            self._start_detail()  # the operator moved on meanwhile: read what is wanted now
            return
        if detail.error is not None:
            self._shown = None
            self._clear_detail("could not read the table")
            self.post_message(LoadFailed(f"table {self._table}", detail.error))
            return
        self._shown = detail
        self._title()
        latest, version = detail.latest, detail.version
        history = self.query_one(HistoryTable)
        history.show(detail.history, total=(latest + 1) if latest is not None else None,
                     offset=detail.request.history_offset)
        schema = self.query_one(SchemaView)
        if version is not None:
            schema.show_schema(detail.schema, version, latest)
        else:
            schema.show(detail.schema)
        self.query_one(TagsView).show(detail.tags)
        self.query_one(TagsView).border_subtitle = ("no tags" if not detail.tags else
                                                    f"{len(detail.tags)} tags")
        preview = self.query_one(PreviewView)
        if detail.preview is not None and version is not None:
            columns, rows = detail.preview
            preview.show_rows(columns, rows, version, latest, PREVIEW_ROWS)
        elif detail.preview is None:
            preview.show_nothing("preview: reading…" if self.pane == "preview" else "preview")

    @on(TabbedContent.TabActivated, "#detail")
    def _pane_changed(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        if self.pane == "preview" and (self._wanted is None or not self._wanted.preview):
            self._request_detail()

    @on(PagedTable.PageRequested, "#history")
    def _history_page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._history_offset = event.offset
        self._request_detail()

    @on(DataTable.RowSelected, "#history")
    def _travel(self, event: DataTable.RowSelected) -> None:
        """Enter on a version: the data as it was then."""
        event.stop()
        row = self.query_one(HistoryTable).current
        if row is not None:
            self._at_version(int(row["version"]))

    def _at_version(self, version: int | None) -> None:
        self._version = version
        self._title()
        if self.pane not in ("schema", "preview"):
            self.tabs.active = "pane-preview"  # its TabActivated reads the detail
        if self._wanted is None or self._wanted.version != version or not self._wanted.preview:
            self._request_detail()

    def action_pane(self, pane: str) -> None:
        if pane in PANES:
            self.tabs.active = f"pane-{pane}"

    def action_version(self) -> None:
        latest = self._latest()
        if self._table is None or latest is None:
            self.notify("no readable table under the cursor", severity="warning")
            return
        table = self._table

        def answered(text: str | None) -> None:
            if text is None or table != self._table:
                return
            try:
                version = parse_version(text, latest)
            except ValueError as e:
                self.notify(str(e), title="version", severity="error")
                return
            self._at_version(version)

        current = "" if self._version is None else str(self._version)
        self.app.push_screen(VersionDialog(
            f"Show {table} at version", f"0..{latest}; empty for the latest ({latest})",
            value=current, placeholder=f"0..{latest}"), answered)

    # -- diff ---------------------------------------------------------------------------
    def action_diff_previous(self) -> None:
        row = self.query_one(HistoryTable).current
        if self._table is None or row is None:
            self.notify("no version under the cursor in History", severity="warning")
            return
        version = int(row["version"])
        if version == 0:
            self.notify("version 0 is the table's first: there is nothing before it; "
                        "D compares two versions you type", severity="warning")
            return
        self._diff(version - 1, version)

    def action_diff_range(self) -> None:
        latest = self._latest()
        if self._table is None or latest is None:
            self.notify("no readable table under the cursor", severity="warning")
            return
        if latest == 0:
            self.notify("the table has one version (0): nothing to compare",
                        severity="warning")
            return
        table = self._table

        def answered(text: str | None) -> None:
            if text is None or table != self._table:
                return
            try:
                older, newer = parse_range(text, latest)
            except ValueError as e:
                self.notify(str(e), title="diff", severity="error")
                return
            self._diff(older, newer)

        self.app.push_screen(VersionDialog(
            f"Difference between two versions of {table}",
            f"older..newer, versions 0..{latest}", value=f"{latest - 1}..{latest}",
            placeholder="3..5"), answered)

    def _diff(self, older: int, newer: int) -> None:
        table = self._table
        if table is None:
            return
        key = (table, older, newer)
        self._diff_wanted = key
        self.query_one(DiffView).show_message(f"reading the difference {older}..{newer}…")
        self.tabs.active = "pane-diff"

        def read() -> tuple[tuple[str, int, int], dict[str, Any] | str]:
            try:
                return key, self.view.table_diff(table, older, newer)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # also deltalake's Rust panics
                return key, _error_text(e)

        self.run_in_thread(read, self._diff_read, group="table-diff")

    def _diff_read(self, result: tuple[tuple[str, int, int], dict[str, Any] | str]) -> None:
        key, diff = result
        if key != self._diff_wanted:
            return
        view = self.query_one(DiffView)
        if isinstance(diff, str):
            view.show_message(plain(f"could not compare {key[1]}..{key[2]}: {diff}", "red"))
            return
        view.show_diff(diff)


def _stamp(row: dict[str, Any] | None) -> Any:
    """What, in a list row, says the table changed: its version (or why it is unreadable)."""
    if row is None:
        return None
    return (row.get("version"), row.get("error"), bool(row.get("pending")))

