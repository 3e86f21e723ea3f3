"""The tables screen: the lake's tables a page at a time, and the highlighted table's
history, schema, preview at any version, diff between versions and tags, checked against
DuckDB's delta_scan and deltalake read directly (not through the facade)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from agent.config import LoadedConfig, load_config
from connectors.lake import DeltaLake
from tests.tui.conftest import settle
from tui.app import SiltaApp
from tui.screens.tables import SUMMARY_CHUNK, TablesScreen, parse_range, parse_version
from tui.widgets.tables.diff_view import DiffView
from tui.widgets.tables.history_table import HistoryTable
from tui.widgets.tables.preview_view import PreviewView
from tui.widgets.tables.schema_view import SchemaView
from tui.widgets.tables.table_list import TableList
from tui.widgets.tables.tags_view import TagsView
from tui.widgets.tables.version_dialog import VersionDialog

SURVEY = "raw/survey_responses"
WEIRD = "weird[b]x"
MARKUP_VALUE = "[red]boom[/]"


# -- helpers ----------------------------------------------------------------------------
def _lake(loaded: LoadedConfig) -> Path:
    return Path(loaded.lake_uri)


def _delta_tables(root: Path) -> list[str]:
    """Every folder below ``root`` holding a _delta_log (an independent listing)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if "_delta_log" in dirnames:
            found.append(Path(dirpath).relative_to(root).as_posix())
            dirnames.clear()
    return sorted(found)


def _duck(duck: Any, path: Path, sql: str, version: int | None = None) -> list[Any]:
    at = f", version => {version}" if version is not None else ""
    return list(duck.execute(
        f"WITH t AS (SELECT * FROM delta_scan('{path}'{at})) {sql}").fetchall())


def _cells(table: Any, row: int) -> list[str]:
    return [c.plain for c in table.get_row_at(row)]


def _screen(pilot: Any) -> TablesScreen:
    screen = pilot.app.screen
    assert isinstance(screen, TablesScreen)
    return screen


def _screen_text(pilot: Any) -> str:
    return "\n".join(strip.text for strip in pilot.app.screen._compositor.render_strips())


async def _open(pilot: Any, name: str) -> TablesScreen:
    """Move the list's cursor to ``name`` (on the page shown) and wait for its detail."""
    screen = _screen(pilot)
    tables = screen.query_one(TableList)
    index = [r["table"] for r in tables.rows_shown].index(name)
    tables.focus()
    tables.move_cursor(row=index)
    await settle(pilot)
    assert tables.current is not None and tables.current["table"] == name
    return screen


async def _type(pilot: Any, text: str) -> None:
    """Replace what the version dialog holds with ``text`` and press Enter."""
    assert isinstance(pilot.app.screen, VersionDialog)
    pilot.app.screen.query_one("#version").value = ""
    await pilot.press(*text, "enter")
    await settle(pilot)


def _tiny_config(root: Path, page_size: int = 100) -> Path:
    """A config of a lake at ``root``/lake, no syncs; the agent never ran."""
    (root / "lake").mkdir(parents=True, exist_ok=True)
    path = root / "silta.toml"
    path.write_text('[agent]\nname = "tables-test"\nstate_dir = "state"\n'
                    f'[lake]\nuri = "lake"\n[tui]\npage_size = {page_size}\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake of 120 one-row tables t000..t119, 50 a page."""
    root = tmp_path_factory.mktemp("many-tables")
    config = _tiny_config(root, page_size=50)
    for i in range(120):
        write_deltalake(str(root / "lake" / f"t{i:03d}"), pa.table({"i": [i]}))
    return config


@pytest.fixture
def odd(tmp_path: Path) -> Iterator[Path]:
    """A small lake: ``weird[b]x`` (markup in its name and values, two versions) and
    ``plain`` (a column added in version 1; version 0 tagged)."""
    config = _tiny_config(tmp_path)
    lake = tmp_path / "lake"
    # deltalake refuses to write below a path with "[" (it takes it for a URL), but reads
    # one: such a folder comes from another tool, or a rename, as here
    staging = lake / "weird_staging"
    write_deltalake(str(staging), pa.table({"id": [1, 2, 3], "s": [MARKUP_VALUE, "b", "c"]}))
    write_deltalake(str(staging), pa.table({"id": [4, 5], "s": ["d", "[b]e"]}), mode="append")
    staging.rename(lake / WEIRD)
    write_deltalake(str(lake / "plain"), pa.table({"x": [1.5]}))
    write_deltalake(str(lake / "plain"), pa.table({"x": [2.5], "y": ["new"]}), mode="append",
                    schema_mode="merge")
    DeltaLake(str(lake)).add_tag("plain", "first", 0, by="tester", note="[i]kept[/i]")
    yield config


# -- the list ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_list_shows_every_table_with_version_and_rows_as_delta_reads_them(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    lake = _lake(demo)
    expected = _delta_tables(lake)
    assert SURVEY in expected and "_silta/runs" in expected
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tables = _screen(pilot).query_one(TableList)
        assert [r["table"] for r in tables.rows_shown] == expected
        for i, name in enumerate(expected):
            version = DeltaTable(str(lake / name)).version()
            rows = _duck(duck, lake / name, "SELECT COUNT(*) FROM t")[0][0]
            assert _cells(tables, i)[:3] == [name, str(version), f"{rows:,}"]
        assert tables.page_label == f"1-{len(expected)} of {len(expected)}"


@pytest.mark.asyncio
async def test_filter_narrows_the_list_and_escape_brings_all_back(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    every = _delta_tables(_lake(demo))
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tables = _screen(pilot).query_one(TableList)
        await pilot.press("slash", *"raw/", "enter")
        await settle(pilot)
        narrowed = [r["table"] for r in tables.rows_shown]
        assert narrowed == [n for n in every if "raw/" in n]
        assert 0 < len(narrowed) < len(every)
        await pilot.press("slash", "escape")
        await settle(pilot)
        assert [r["table"] for r in tables.rows_shown] == every


@pytest.mark.asyncio
async def test_pages_of_a_long_list_read_summaries_only_for_the_page_shown(
        many: Path, app_for: Callable[..., SiltaApp], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tui.screens.tables.SUMMARY_TTL", 3600.0)
    loaded = load_config(many)
    app = app_for(loaded, screen="tables")
    asked: list[list[str]] = []
    summaries = app.view.table_summaries

    def spy(names: Any) -> list[dict[str, Any]]:
        asked.append(list(names))
        return summaries(names)

    app.view.table_summaries = spy  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tables = _screen(pilot).query_one(TableList)
        assert [r["table"] for r in tables.rows_shown] == [f"t{i:03d}" for i in range(50)]
        assert tables.page_label == "1-50 of 120"
        assert sorted(n for call in asked for n in call) == [f"t{i:03d}" for i in range(50)]
        assert max(len(call) for call in asked) <= SUMMARY_CHUNK
        assert [_cells(tables, 49)[:3]] == [["t049", "0", "1"]]
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert [r["table"] for r in tables.rows_shown] == [f"t{i:03d}" for i in range(50, 100)]
        assert tables.page_label == "51-100 of 120"
        assert sorted(n for call in asked for n in call) == [f"t{i:03d}" for i in range(100)]
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert [r["table"] for r in tables.rows_shown] == [f"t{i:03d}" for i in range(100, 120)]
        await pilot.press("left_square_bracket", "left_square_bracket")
        await settle(pilot)
        assert tables.page_label == "1-50 of 120"
        # the pages were read once each: going back reuses what was read
        assert len([n for call in asked for n in call]) == 120


# -- the detail ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_history_rows_are_the_delta_log_versions_and_operations(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    lake = _lake(demo)
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for name in (SURVEY, "_silta/runs", "raw/coded_sample"):
            screen = await _open(pilot, name)
            expected = DeltaTable(str(lake / name)).history()
            history = screen.query_one(HistoryTable)
            assert [(r["version"], r["operation"]) for r in history.rows_shown] == [
                (e["version"], e["operation"]) for e in expected]
            for i, entry in enumerate(expected):
                cells = _cells(history, i)
                assert cells[0] == str(entry["version"])
                assert cells[2] == entry["operation"]
                assert cells[4] == (entry.get("silta.run_id") or "-")
        title = str(screen.query_one("#detail-title").render())
        assert title.startswith("raw/coded_sample")


@pytest.mark.asyncio
async def test_schema_columns_and_types_are_exact(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    path = _lake(demo) / SURVEY
    columns = [r[0] for r in duck.execute(
        f"DESCRIBE SELECT * FROM delta_scan('{path}')").fetchall()]
    arrow = pa.schema(DeltaTable(str(path)).schema().to_arrow())
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, SURVEY)
        await pilot.press("s")
        await settle(pilot)
        schema = screen.query_one(SchemaView)
        assert schema.region.height > 3
        assert [r["column"] for r in schema.rows_shown] == columns
        assert [_cells(schema, i)[:2] for i in range(len(columns))] == [
            [f.name, str(f.type)] for f in arrow]
        assert schema.border_title == "schema at version 1 (latest)"


@pytest.mark.asyncio
async def test_preview_travels_back_to_an_older_version(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    path = _lake(demo) / SURVEY
    at_0 = {r[0] for r in _duck(duck, path, "SELECT response_id FROM t", version=0)}
    at_1 = {r[0] for r in _duck(duck, path, "SELECT response_id FROM t", version=1)}
    assert len(at_0) == 2400 and len(at_1 - at_0) == 1600
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, SURVEY)
        await pilot.press("p")
        await settle(pilot)
        preview = screen.query_one(PreviewView)
        assert preview.border_title == "preview at version 1 (latest)"
        assert preview.region.height > 3 and preview.row_count == 100
        await pilot.press("v")
        await settle(pilot)
        await _type(pilot, "0")
        assert preview.border_title == "preview at version 0 of 1"
        ids = [r["response_id"] for r in preview.rows_shown]
        assert len(ids) == 100 and set(ids) <= at_0
        assert _cells(preview, 0)[0] == ids[0]
        assert "viewing version 0" in str(screen.query_one("#detail-title").render())
        # the schema follows the version chosen; an empty answer goes back to the latest
        await pilot.press("s")
        await settle(pilot)
        assert screen.query_one(SchemaView).border_title == "schema at version 0 of 1"
        await pilot.press("v")
        await settle(pilot)
        await _type(pilot, "")
        await pilot.press("p")
        await settle(pilot)
        assert preview.border_title == "preview at version 1 (latest)"
        assert "viewing" not in str(screen.query_one("#detail-title").render())
        # a version the table does not have changes nothing
        await pilot.press("v")
        await settle(pilot)
        await _type(pilot, "9")
        assert preview.border_title == "preview at version 1 (latest)"


@pytest.mark.asyncio
async def test_enter_on_a_history_row_shows_the_data_of_that_version(
        odd: Path, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    path = odd.parent / "lake" / WEIRD
    at_0 = sorted(_duck(duck, path, "SELECT id, s FROM t", version=0))
    assert len(at_0) == 3
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, WEIRD)
        await pilot.press("enter")  # into the History pane
        await pilot.press("down", "enter")  # version 0
        await settle(pilot)
        preview = screen.query_one(PreviewView)
        assert screen.query_one("#detail").active == "pane-preview"
        assert preview.border_title == "preview at version 0 of 1"
        assert sorted((r["id"], r["s"]) for r in preview.rows_shown) == at_0
        assert preview.border_subtitle == "all 3 rows"


@pytest.mark.asyncio
async def test_diff_of_the_version_under_the_cursor_shows_the_rows_it_added(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    path = _lake(demo) / SURVEY
    count = [_duck(duck, path, "SELECT COUNT(*) FROM t", version=v)[0][0] for v in (0, 1)]
    added = {r[0] for r in _duck(duck, path, "SELECT response_id FROM t", version=1)} - {
        r[0] for r in _duck(duck, path, "SELECT response_id FROM t", version=0)}
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, SURVEY)
        await pilot.press("d")  # History's cursor is on the newest version, 1
        await settle(pilot)
        view = screen.query_one(DiffView)
        assert screen.query_one("#detail").active == "pane-diff"
        assert view.diff is not None
        assert (view.diff["older"], view.diff["newer"]) == (0, 1)
        assert view.diff["rows_added"] == count[1] - count[0] == len(added)
        assert view.diff["rows_removed"] == 0
        summary = str(view.summary.render())
        assert f"+{len(added):,} rows" in summary and f"{count[0]:,} -> {count[1]:,}" in summary
        assert "columns: unchanged" in summary
        assert view.rows_shown and all(sign == "+" for sign, _ in view.rows_shown)
        assert {r["response_id"] for _, r in view.rows_shown} <= added
        table = view.table
        assert table.region.height > 0 and _cells(table, 0)[0] == "+"
        # D asks for two versions; a bad answer keeps what is shown
        await pilot.press("D")
        await settle(pilot)
        await _type(pilot, "3..9")
        assert view.diff is not None and view.diff["rows_added"] == len(added)


@pytest.mark.asyncio
async def test_diff_of_two_typed_versions_shows_exactly_the_rows_added(
        odd: Path, app_for: Callable[..., SiltaApp], duck: Any) -> None:
    path = odd.parent / "lake" / WEIRD
    rows = [sorted(_duck(duck, path, "SELECT id, s FROM t", version=v)) for v in (0, 1)]
    added = sorted(set(rows[1]) - set(rows[0]))
    assert added == [(4, "d"), (5, "[b]e")]
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, WEIRD)
        await pilot.press("D")
        await settle(pilot)
        await _type(pilot, "0..1")
        view = screen.query_one(DiffView)
        assert view.diff is not None and view.diff["rows_added"] == 2
        assert sorted((r["id"], r["s"]) for _, r in view.rows_shown) == added
        shown = sorted(tuple(_cells(view.table, i)) for i in range(view.table.row_count))
        assert shown == [("+", "4", "d"), ("+", "5", "[b]e")]  # markup in values: text


@pytest.mark.asyncio
async def test_diff_shows_the_columns_a_version_added(
        odd: Path, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, "plain")
        await pilot.press("d")
        await settle(pilot)
        view = screen.query_one(DiffView)
        assert view.diff is not None and view.diff["columns_added"] == ["y"]
        summary = str(view.summary.render())
        assert "columns: added y" in summary and "+1 rows" in summary
        assert [_cells(view.table, 0)] == [["+", "2.5", "new"]]


@pytest.mark.asyncio
async def test_an_unreadable_table_says_why_and_the_others_stay_readable(
        odd: Path, app_for: Callable[..., SiltaApp]) -> None:
    (odd.parent / "lake" / "broken" / "_delta_log").mkdir(parents=True)
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = _screen(pilot)
        tables = screen.query_one(TableList)
        assert [r["table"] for r in tables.rows_shown] == ["_silta/tags", "broken", "plain",
                                                           WEIRD]
        assert _cells(tables, 1)[1] == "unreadable"
        await _open(pilot, "broken")
        title = str(screen.query_one("#detail-title").render())
        assert title.startswith("broken  unreadable:")
        assert screen.query_one(HistoryTable).row_count == 0
        screen = await _open(pilot, "plain")
        assert screen.query_one(HistoryTable).row_count == 2


@pytest.mark.asyncio
async def test_tags_pane_lists_tag_version_by_and_note(
        odd: Path, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, "plain")
        await pilot.press("t")
        await settle(pilot)
        tags = screen.query_one(TagsView)
        assert tags.region.height > 3
        assert [_cells(tags, 0)[:4]] == [["first", "0", "tester", "[i]kept[/i]"]]
        screen = await _open(pilot, WEIRD)
        assert tags.row_count == 0


@pytest.mark.asyncio
async def test_markup_in_table_names_and_values_shows_literally(
        odd: Path, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(load_config(odd), screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = _screen(pilot)
        tables = screen.query_one(TableList)
        assert [r["table"] for r in tables.rows_shown] == ["_silta/tags", "plain", WEIRD]
        assert _cells(tables, 2)[:3] == [WEIRD, "1", "5"]
        await _open(pilot, WEIRD)
        await pilot.press("p")
        await settle(pilot)
        preview = screen.query_one(PreviewView)
        values = [_cells(preview, i)[1] for i in range(preview.row_count)]
        assert MARKUP_VALUE in values and "[b]e" in values
        text = _screen_text(pilot)
        assert WEIRD in text and MARKUP_VALUE in text
        assert str(screen.query_one("#detail-title").render()).startswith(WEIRD)


@pytest.mark.asyncio
async def test_the_screen_changes_nothing(
        odd: Path, app_for: Callable[..., SiltaApp]) -> None:
    lake = odd.parent / "lake"

    def files() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in lake.rglob("*")}

    before = files()
    assert not TablesScreen.WRITE_ACTIONS
    async with app_for(load_config(odd), screen="tables", read_only=True).run_test(
            size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, WEIRD)
        shown = {b.binding.action for b in screen.active_bindings.values()}
        assert {"version", "diff_previous", "diff_range", "filter"} <= shown  # read-only too
        await pilot.press("p", "s", "t", "h", "d")
        await settle(pilot)
    assert files() == before
    assert not (odd.parent / "state").exists()  # no command queued, no store made


@pytest.mark.asyncio
async def test_the_detail_of_the_last_table_wins_when_the_cursor_moves_fast(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    lake = _lake(demo)
    every = _delta_tables(lake)
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*["down"] * (len(every) - 1))  # no waiting in between
        await settle(pilot)
        screen = _screen(pilot)
        last = every[-1]
        history = screen.query_one(HistoryTable)
        assert [r["version"] for r in history.rows_shown] == [
            e["version"] for e in DeltaTable(str(lake / last)).history()]
        assert str(screen.query_one("#detail-title").render()).startswith(last)


@pytest.mark.asyncio
async def test_panes_are_readable_at_80x24(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="tables").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, SURVEY)
        tables = screen.query_one(TableList)
        assert tables.region.height >= 6 and tables.region.width == 80
        title = screen.query_one("#detail-title")
        assert title.region.height == 1 and title.region.y > tables.region.bottom - 1
        for key, widget in (("h", HistoryTable), ("s", SchemaView), ("p", PreviewView),
                            ("t", TagsView)):
            await pilot.press(key)
            await settle(pilot)
            region = screen.query_one(widget).region
            assert region.width == 80 and region.height >= 6, (key, region)
            assert region.bottom <= 23  # above the footer
        await pilot.press("d")
        await settle(pilot)
        diff = screen.query_one(DiffView)
        assert diff.region.height >= 6 and diff.table.region.height >= 2
        assert "version 0 -> 1" in _screen_text(pilot)


# -- typed versions ----------------------------------------------------------------------
def test_versions_typed_by_the_operator() -> None:
    assert parse_version("", 5) is None and parse_version("latest", 5) is None
    assert parse_version("3", 5) == 3 and parse_version(" v4 ", 5) == 4
    assert parse_version("@0", 5) == 0
    for bad in ("6", "-1", "x", "1.5"):
        with pytest.raises(ValueError):
            parse_version(bad, 5)
    assert parse_range("3..5", 5) == (3, 5) and parse_range("5..3", 5) == (3, 5)
    assert parse_range("2-4", 5) == (2, 4) and parse_range("1 2", 5) == (1, 2)
    assert parse_range("5", 5) == (4, 5) and parse_range("0..latest", 5) == (0, 5)
    for bad in ("3..3", "0", "4..9", "a..b", "1..2..3", ""):
        with pytest.raises(ValueError):
            parse_range(bad, 5)
