"""The models screen: the registry's models, their versions with metrics and aliases, a
version's model card, two versions side by side; promote, approve and roll back.

Promote, approve and rollback are queued as commands (``model.promote``,
``model.approve``, ``model.rollback``) after a confirmation: the agent moves the alias,
records who asked and why, and the alias history shows it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import events, on
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from connectors.errors import NotFoundError
from tui.screens.base import SiltaScreen
from tui.text import plain
from tui.widgets.common.filter_bar import FilterBar
from tui.widgets.common.paged_table import PagedTable
from tui.widgets.registry.alias_table import AliasTable
from tui.widgets.registry.card_view import CardView
from tui.widgets.registry.compare_view import CompareView
from tui.widgets.registry.model_list import ModelList
from tui.widgets.registry.version_detail import VersionDetail
from tui.widgets.registry.version_table import VersionTable

CHAMPION = "champion"
#: below this width the version's detail beside the list is hidden (the card tab has it)
WIDE = 110
CARDS_KEPT = 32
#: a reload re-reads the versions when the model's row changed, or after this long
VERSIONS_FRESH_SECONDS = 30.0


def champion_move(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The champion's latest move in ``history`` (``View.alias_history``, newest first)."""
    return next((h for h in history if h["alias"] == CHAMPION), None)


class ModelsScreen(SiltaScreen):
    HELP = ("The model registry. The top list has each model with its champion, challenger "
            "and the version waiting for approval; below are the versions of the model "
            "under the cursor (newest first) with aliases, state, primary metric and the "
            "data they were trained on. Enter shows a version's model card; space marks a "
            "version and c compares it with the one under the cursor (c alone: with the "
            "champion); h shows who moved which alias when and why. p promotes the version "
            "under the cursor, a approves the waiting version, b rolls the champion back "
            "to the one before it: each is confirmed, then queued for the agent.")
    WRITE_ACTIONS = frozenset({"promote", "approve", "rollback"})
    DEFAULT_CSS = """
    ModelsScreen #tabs { height: 1fr; }
    ModelsScreen #tabs > ContentSwitcher { height: 1fr; }
    ModelsScreen TabPane { height: 1fr; padding: 0; }
    ModelsScreen #versions { width: 1fr; }
    ModelsScreen.-narrow #version-detail { display: none; }
    ModelsScreen #aliases { height: 1fr; }
    ModelsScreen #alias-reason { height: auto; max-height: 4; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter", id="models.filter",
                tooltip="filter the models by name"),
        Binding("enter", "card", "card", id="models.card",
                tooltip="the model card of the version under the cursor"),
        Binding("space,m", "mark", "mark", id="models.mark",
                tooltip="mark the version under the cursor to compare (again: unmark)"),
        Binding("c", "compare", "compare", id="models.compare",
                tooltip="the marked version (or the champion) and the one under the "
                        "cursor side by side"),
        Binding("h", "history", "aliases", id="models.history",
                tooltip="who moved which alias to which version, when and why"),
        Binding("v,escape", "versions", "versions", id="models.versions", show=False,
                tooltip="back to the versions"),
        Binding("p", "promote", "promote", id="models.promote",
                tooltip="make the version under the cursor the champion"),
        Binding("a", "approve", "approve", id="models.approve",
                tooltip="approve the version waiting for approval as the champion"),
        Binding("b", "rollback", "rollback", id="models.rollback",
                tooltip="point the champion back at the version it had before"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._filter = ""
        self._models: list[dict[str, Any]] = []
        self._models_offset = 0
        self._model: str | None = None
        self._versions: list[dict[str, Any]] = []
        self._versions_offset = 0
        self._history: list[dict[str, Any]] = []
        self._history_offset = 0
        self._marked: tuple[str, int] | None = None
        self._cards: dict[tuple[str, int], tuple[str | None, str]] = {}
        self._focused = False
        self._read: tuple[Any, float] | None = None  # (the model row the versions are of, when)

    # -- layout -------------------------------------------------------------------------
    def body(self) -> Iterable[Any]:
        size = self.settings.page_size
        yield FilterBar(id="filter")
        yield ModelList(self.settings.clock, page_size=size, id="models")
        with TabbedContent(id="tabs", initial="tab-versions"):
            with TabPane("versions", id="tab-versions"), Horizontal():
                yield VersionTable(page_size=size, id="versions")
                yield VersionDetail(id="version-detail")
            with TabPane("card", id="tab-card"):
                yield CardView(id="card-view")
            with TabPane("compare", id="tab-compare"):
                yield CompareView(id="compare")
            with TabPane("aliases", id="tab-aliases"):
                yield AliasTable(page_size=size, id="aliases")
                yield Static(id="alias-reason", classes="detail")

    def on_mount(self) -> None:
        self.query_one("#models", ModelList).border_title = "models"
        self.query_one("#versions", VersionTable).border_title = "versions"
        self.query_one("#aliases", AliasTable).border_title = "alias history"
        self._fit(self.app.size.width)
        super().on_mount()

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        self.set_class(width < WIDE, "-narrow")

    @property
    def versions_table(self) -> VersionTable:
        return self.query_one("#versions", VersionTable)

    @property
    def tabs(self) -> TabbedContent:
        return self.query_one("#tabs", TabbedContent)

    # -- loading ------------------------------------------------------------------------
    def load(self) -> Any:
        models = self.view.models(self._filter)
        row = next((m for m in models if m["model"] == self._model),
                   models[0] if models else None)
        if row is None:
            return models, None
        read = self._read
        if read is not None and read[0] == row and \
                time.monotonic() - read[1] < VERSIONS_FRESH_SECONDS:
            return models, {"model": row["model"], "same": True}  # nothing moved: keep them
        return models, self._read_model(row["model"], row)

    def _read_model(self, model: str, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """Runs in a worker: every version of ``model`` and its alias moves."""
        return {"model": model, "row": row, "versions": self.view.model_versions(model),
                "history": self.view.alias_history(model), "at": time.monotonic()}

    def show(self, data: Any) -> None:
        models, detail = data
        self._models = models
        if self._model not in {m["model"] for m in models}:
            self._model = detail["model"] if detail is not None else None
            self._versions_offset = self._history_offset = 0
        self._show_models()
        if detail is None:
            self._show_detail({"model": None, "versions": [], "history": []})
        elif not detail.get("same"):
            self._show_detail(detail)

    def _show_models(self) -> None:
        table = self.query_one("#models", ModelList)
        size = table.page_size
        if self._models_offset >= len(self._models):
            self._models_offset = 0
        table.show(self._models[self._models_offset:self._models_offset + size],
                   len(self._models), self._models_offset)
        if self._filter:
            table.border_title = plain(f"models matching {self._filter!r}")
        else:
            table.border_title = "models"

    def _show_detail(self, detail: dict[str, Any]) -> None:
        if detail["model"] != self._model:
            return  # an answer for a model the cursor has left
        row = detail.get("row") or self._model_row()
        self._read = (row, detail["at"]) if row is not None and "at" in detail else None
        self._versions = detail["versions"]
        self._history = AliasTable.keyed(detail["history"])
        self._show_versions()
        self._show_history()
        self._version_moved()
        if not self._focused and self._versions:
            self._focused = True
            self.versions_table.focus()

    def _show_versions(self) -> None:
        table = self.versions_table
        size = table.page_size
        if self._versions_offset >= len(self._versions):
            self._versions_offset = 0
        marked = self._marked
        table.marked = marked[1] if marked and marked[0] == self._model else None
        table.show(self._versions[self._versions_offset:self._versions_offset + size],
                   len(self._versions), self._versions_offset)
        title = f"versions of {self._model}" if self._model else "versions"
        if table.marked is not None:
            title += f" · v{table.marked} marked"
        table.border_title = plain(title)

    def _show_history(self) -> None:
        table = self.query_one("#aliases", AliasTable)
        if self._history_offset >= len(self._history):
            self._history_offset = 0
        table.show(self._history[self._history_offset:self._history_offset + table.page_size],
                   len(self._history), self._history_offset)
        self._alias_moved()

    # -- the cursor ---------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#models")
    def _model_moved(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        row = self.query_one("#models", ModelList).current
        if row is None or row["model"] == self._model:
            return
        model = self._model = row["model"]
        self._versions_offset = self._history_offset = 0
        self.versions_table.border_title = plain(f"versions of {model}: reading…")
        self.run_in_thread(lambda: self._read_model(model), self._show_detail,
                           group="versions")

    @on(DataTable.RowSelected, "#models")
    def _model_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_versions()

    @on(DataTable.RowHighlighted, "#versions")
    def _version_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._version_moved()

    @on(DataTable.RowSelected, "#versions")
    def _version_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_card()

    def _version_moved(self) -> None:
        self.query_one("#version-detail", VersionDetail).show(self.versions_table.current,
                                                              self.settings.clock())
        if self.tabs.active == "tab-card":
            self._load_card()

    @on(DataTable.RowHighlighted, "#aliases")
    def _alias_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._alias_moved()

    def _alias_moved(self) -> None:
        row = self.query_one("#aliases", AliasTable).current
        text = plain(f"{row['alias']} → v{row['version']} by {row['by']}: "
                     f"{row['reason'] or 'no reason given'}") if row else plain("")
        self.query_one("#alias-reason", Static).update(text)

    @on(PagedTable.PageRequested, "#models")
    def _models_page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._models_offset = event.offset
        self._show_models()

    @on(PagedTable.PageRequested, "#versions")
    def _versions_page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._versions_offset = event.offset
        self._show_versions()
        self._version_moved()

    @on(PagedTable.PageRequested, "#aliases")
    def _aliases_page(self, event: PagedTable.PageRequested) -> None:
        event.stop()
        self._history_offset = event.offset
        self._show_history()

    @on(TabbedContent.TabActivated, "#tabs")
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        if event.pane.id == "tab-card":
            self._load_card()

    # -- the card -----------------------------------------------------------------------
    def _load_card(self) -> None:
        row = self.versions_table.current
        view = self.query_one("#card-view", CardView)
        if row is None or self._model is None:
            return
        key = (self._model, int(row["version"]))
        if view.shown == key:
            return
        if key in self._cards:
            view.show_card(*key, *self._cards[key])
            return
        view.loading_card(*key)

        def read() -> tuple[tuple[str, int], str | None, str]:
            try:
                return key, self.view.model_card(*key), ""
            except NotFoundError as e:
                return key, None, str(e)
        self.run_in_thread(read, self._card_read, group="card")

    def _card_read(self, answer: tuple[tuple[str, int], str | None, str]) -> None:
        key, card, why = answer
        if card is not None:  # a card never changes once written; a missing one may come
            if len(self._cards) >= CARDS_KEPT:
                self._cards.clear()
            self._cards[key] = (card, why)
        row = self.versions_table.current
        if row is not None and (self._model, row["version"]) == key:
            self.query_one("#card-view", CardView).show_card(*key, card, why)

    # -- moving between tabs ------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#filter", FilterBar).open()

    @on(FilterBar.Changed, "#filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        event.stop()
        if event.text != self._filter:
            self._filter = event.text
            self._models_offset = 0
            self.reload()

    def action_versions(self) -> None:
        self.tabs.active = "tab-versions"
        self.versions_table.focus()

    def action_card(self) -> None:
        self.tabs.active = "tab-card"
        self._load_card()
        self.query_one("#card-view", CardView).focus()

    def action_history(self) -> None:
        self.tabs.active = "tab-aliases"
        self.query_one("#aliases", AliasTable).focus()

    # -- side by side -------------------------------------------------------------------
    def action_mark(self) -> None:
        row = self.versions_table.current
        if row is None or self._model is None:
            return
        key = (self._model, int(row["version"]))
        self._marked = None if self._marked == key else key
        self._show_versions()
        if self._marked:
            self.notify(f"v{key[1]} marked: move to another version and press c",
                        title="compare")

    def _row(self, version: int | None) -> dict[str, Any] | None:
        return next((r for r in self._versions if r["version"] == version), None)

    def _champion(self) -> int | None:
        return next((r["version"] for r in self._versions if CHAMPION in r["aliases"]), None)

    def action_compare(self) -> None:
        row = self.versions_table.current
        if row is None or self._model is None:
            return
        marked = self._marked[1] if self._marked and self._marked[0] == self._model else None
        champion = self._champion()
        if marked is not None and marked != row["version"]:
            other, label = self._row(marked), f"v{marked} (marked)"
        elif champion is not None and champion != row["version"]:
            other, label = self._row(champion), f"v{champion} ({CHAMPION})"
        else:
            why = ("this is the champion" if champion is not None else
                   f"{self._model} has no champion")
            self.notify(f"{why}: mark a version with space, move to another, then press c",
                        title="nothing to compare with", severity="warning")
            return
        if other is None:
            return
        here = f"v{row['version']}" + (f" ({CHAMPION})" if row["version"] == champion else "")
        self.query_one("#compare", CompareView).show(self._model, other, row, label, here)
        self.tabs.active = "tab-compare"
        self.query_one("#compare", CompareView).focus()

    # -- actions ------------------------------------------------------------------------
    def _model_row(self) -> dict[str, Any] | None:
        return next((m for m in self._models if m["model"] == self._model), None)

    def action_promote(self) -> None:
        row, model = self.versions_table.current, self._model
        if row is None or model is None:
            return
        version = int(row["version"])
        champion = self._champion()
        if champion == version:
            self.notify(f"{model} v{version} is the champion already", title="not queued",
                        severity="warning")
            return
        now = f"now v{champion}" if champion is not None else "there is none yet"
        self.confirm_and_submit(
            f"Promote {model} v{version} to champion?",
            f"The champion of {model} ({now}) moves to v{version}, whatever the promotion "
            f"gate said; predictions use it from their next run. The reason goes into the "
            f"alias history with your user name. b rolls it back.",
            "model.promote",
            lambda answer: {"model": model, "version": version, "reason": answer.comment},
            confirm="Promote", comment="reason (kept in the alias history)")

    def action_approve(self) -> None:
        row, model = self.versions_table.current, self._model
        if row is None or model is None:
            return
        version = int(row["version"])
        found = self._model_row()
        waiting = found.get("waiting") if found else None
        if waiting != version:
            what = (f"the version waiting is v{waiting}" if waiting is not None
                    else "no version is waiting")
            self.notify(f"{model} v{version} is not waiting for approval ({what}); p "
                        "promotes any version", title="nothing to approve",
                        severity="warning")
            return
        champion = self._champion()
        now = f"v{champion}" if champion is not None else "none yet"
        self.confirm_and_submit(
            f"Approve {model} v{version}?",
            f"v{version} was left waiting for approval by its training; approving makes it "
            f"the champion of {model} (now {now}). The reason goes into the alias history "
            "with your user name.",
            "model.approve",
            lambda answer: {"model": model, "version": version, "reason": answer.comment},
            confirm="Approve", comment="reason (kept in the alias history)")

    def action_rollback(self) -> None:
        model = self._model
        if model is None:
            return
        move = champion_move(self._history)
        if move is None:
            self.notify(f"{model} has no champion to roll back", title="nothing to roll back",
                        severity="warning")
            return
        current, previous = move["version"], move["previous"]
        if previous is None:
            self.notify(f"{model} v{current} is the first champion; there is no earlier one "
                        "to go back to", title="nothing to roll back", severity="warning")
            return
        back = self._row(previous)
        if back is not None and back["state"] == "archived":
            self.notify(f"{model} v{previous} (the previous champion) is archived",
                        title="not queued", severity="warning")
            return
        self.confirm_and_submit(
            f"Roll back the champion of {model}?",
            f"The champion of {model} goes back from v{current} to v{previous}, the one it "
            f"had before {move['by']} moved it on {move['at']}. The reason goes into the "
            "alias history with your user name.",
            "model.rollback",
            lambda answer: {"model": model, "reason": answer.comment},
            confirm="Roll back", comment="reason (kept in the alias history)")
