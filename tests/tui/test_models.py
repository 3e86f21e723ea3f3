"""The models screen against the real demo world (occupation_coder v1 and v2, v2 the
champion), copies of it with a waiting version, a missing card or markup in the alias
history, and the fixed world with 1,000 versions a model."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Markdown

from agent.config import LoadedConfig, load_config
from agent.ml.registry import ModelRegistry
from agent.state import FILE_NAME
from agent.stores import open_lake
from tests.conftest import duck_rows
from tests.tui.conftest import settle
from tests.tui.worlds import AT, build_world
from tui.app import SiltaApp
from tui.screens.models import ModelsScreen
from tui.widgets.common.confirm import ConfirmDialog
from tui.widgets.registry.alias_table import AliasTable
from tui.widgets.registry.card_view import CardView
from tui.widgets.registry.compare_view import CompareView, compare_rows, exact
from tui.widgets.registry.model_list import ModelList
from tui.widgets.registry.version_detail import VersionDetail
from tui.widgets.registry.version_table import VersionTable

MODEL = "occupation_coder"


# -- independent reads ------------------------------------------------------------------
def lake_dir(loaded: LoadedConfig) -> Path:
    return Path(loaded.lake_uri)


def registry_rows(duck: Any, loaded: LoadedConfig) -> dict[int, dict[str, Any]]:
    """The registry's versions of MODEL by DuckDB: version -> metrics, data, who."""
    rows = duck_rows(duck, lake_dir(loaded) / "_silta" / "registry",
                     f"SELECT version, metrics, training_data, created_by, created_at FROM t "
                     f"WHERE model = '{MODEL}' ORDER BY version")
    return {int(v): {"metrics": json.loads(m), "training_data": json.loads(d), "by": by,
                     "at": at} for v, m, d, by, at in rows}


def current_aliases(duck: Any, loaded: LoadedConfig) -> dict[str, int]:
    """Each alias of MODEL -> the version of its latest move, by DuckDB."""
    rows = duck_rows(duck, lake_dir(loaded) / "_silta" / "aliases",
                     f"SELECT alias, version FROM t WHERE model = '{MODEL}' "
                     "QUALIFY row_number() OVER (PARTITION BY alias ORDER BY seq DESC) = 1")
    return {a: int(v) for a, v in rows}


def card_headings(loaded: LoadedConfig, version: int) -> list[str]:
    """The headings of the version's card.md as the lake folder has it."""
    text = (lake_dir(loaded) / "_silta" / "artifacts" / MODEL / str(version)
            / "card.md").read_text(encoding="utf-8")
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.*)", line)):
            out.append(m.group(1).strip())
    return out


def db(loaded: LoadedConfig) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{loaded.state_dir / FILE_NAME}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    return con


def last_command_id(loaded: LoadedConfig) -> int:
    with db(loaded) as con:
        return int(con.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()[0])


def commands_after(loaded: LoadedConfig, after: int) -> list[dict[str, Any]]:
    """The model commands queued since ``after`` (the world may be shared with other
    screens' tests, which queue their own kinds)."""
    with db(loaded) as con:
        return [dict(r) for r in con.execute(
            "SELECT * FROM commands WHERE id > ? AND kind LIKE 'model.%' ORDER BY id",
            (after,))]


# -- the screen -------------------------------------------------------------------------
def screen_of(pilot: Any) -> ModelsScreen:
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    return screen


def cells(table: Any, row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


def text_of(pilot: Any) -> str:
    """What the terminal shows, line by line."""
    return "\n".join(s.text for s in pilot.app.screen._compositor.render_strips())


async def to_version(pilot: Any, version: int) -> None:
    table = pilot.app.screen.query_one(VersionTable)
    table.focus()
    where = [r["version"] for r in table.rows_shown]
    assert version in where, f"v{version} is not on the page"
    step = where.index(version) - table.cursor_row
    await pilot.press(*(["down"] * step if step > 0 else ["up"] * -step))
    await settle(pilot)
    assert table.current is not None and table.current["version"] == version


def notes_of(app: Any) -> list[str]:
    """Every notification the app shows from now on, as "title: message"."""
    seen: list[str] = []
    original = app.notify

    def notify(message: str, *, title: str = "", **kwargs: Any) -> None:
        seen.append(f"{title}: {message}")
        original(message, title=title, **kwargs)
    app.notify = notify
    return seen


async def card_shown(pilot: Any) -> Markdown:
    """The card's Markdown widget once it has rendered every block."""
    view: CardView = pilot.app.screen.query_one(CardView)
    for _ in range(100):
        await settle(pilot)
        if view.rendering is not None and view.rendering.is_done:
            return view.markdown
    raise AssertionError("the card never rendered")


def headings(markdown: Markdown) -> list[str]:
    """The headings of the blocks the widget mounted (its table of contents)."""
    return [label for _, label, _ in markdown.table_of_contents]


@pytest.fixture
def copy_of(demo_config: Path, tmp_path: Path) -> Callable[[], LoadedConfig]:
    """``copy_of()``: a copy of the demo world to change (the shared one stays as it is)."""
    def make() -> LoadedConfig:
        root = tmp_path / "world"
        for part in ("config", "var"):
            shutil.copytree(demo_config.parent.parent / part, root / part)
        return load_config(root / "config" / demo_config.name)
    return make


# -- models and versions ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_models_and_versions_are_the_registrys(demo: LoadedConfig, duck: Any,
                                                     app_for: Callable[..., SiltaApp]) -> None:
    expected = registry_rows(duck, demo)
    aliases = current_aliases(duck, demo)
    assert sorted(expected) == [1, 2] and aliases == {"champion": 2}
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        models = pilot.app.screen.query_one(ModelList)
        assert models.row_count == 1
        assert cells(models, 0)[:5] == [MODEL, "2", "v2", "-", "-"]
        table = pilot.app.screen.query_one(VersionTable)
        assert table.has_focus
        assert [r["version"] for r in table.rows_shown] == [2, 1]  # newest first
        for i, version in enumerate([2, 1]):
            want = expected[version]
            overall = want["metrics"]["overall"]
            primary = want["metrics"]["primary_metric"]
            data = want["training_data"]
            got = cells(table, i)
            assert got[1:] == [
                f"v{version}",
                " ".join(a for a, v in sorted(aliases.items()) if v == version),
                "active", f"{primary} {overall[primary]:.4f}",
                want["at"].strftime("%Y-%m-%d %H:%M"), want["by"],
                f"{data['table']}@{data['version']}"]
            assert table.rows_shown[i]["metrics"] == overall
        assert str(table.border_title) == f"versions of {MODEL}"
        # the alias history: every move, newest first
        await pilot.press("h")
        await settle(pilot)
        history = pilot.app.screen.query_one(AliasTable)
        moves = duck_rows(duck, lake_dir(demo) / "_silta" / "aliases",
                          f"SELECT alias, version, previous_version, set_by, reason FROM t "
                          f"WHERE model = '{MODEL}' ORDER BY seq DESC")
        assert history.row_count == len(moves) == 2
        for i, (alias, version, previous, by, reason) in enumerate(moves):
            got = cells(history, i)
            assert got[1:] == [alias, (f"v{previous} → " if previous else "→ ") + f"v{version}",
                               by, reason]
        assert history.has_focus
        assert moves[0][4] in " ".join(text_of(pilot).split())  # the full reason, wrapped


@pytest.mark.asyncio
async def test_the_detail_beside_the_versions_is_shown_when_wide(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="models").run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        detail = pilot.app.screen.query_one(VersionDetail)
        assert detail.display and detail.region.width > 0
        assert "trained on    raw/survey_responses@1 (973 rows)" in str(detail.render())
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert detail.region.width == 0  # hidden: the versions keep the width
        assert "v2" in text_of(pilot) and "versions of occupation_coder" in text_of(pilot)


@pytest.mark.asyncio
async def test_the_filter_narrows_the_models(demo: LoadedConfig,
                                             app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"nothing-like-it")
        await settle(pilot)
        assert pilot.app.screen.query_one(ModelList).row_count == 0
        assert pilot.app.screen.query_one(VersionTable).row_count == 0
        assert str(pilot.app.screen.query_one(VersionDetail).render()) == "no version"
        await pilot.press("escape")
        await settle(pilot)
        assert pilot.app.screen.query_one(ModelList).row_count == 1
        assert pilot.app.screen.query_one(VersionTable).row_count == 2


@pytest.mark.asyncio
async def test_a_thousand_versions_are_paged(tmp_path: Path,
                                             app_for: Callable[..., SiltaApp]) -> None:
    loaded = load_config(build_world(tmp_path / "big", versions=2000))
    async with app_for(loaded, screen="models", clock=lambda: AT).run_test(
            size=(80, 24)) as pilot:
        await settle(pilot)
        models = pilot.app.screen.query_one(ModelList)
        assert [cells(models, i)[:3] for i in range(models.row_count)] == [
            ["industry_coder", "1,000", "v1000"], ["occupation_coder", "1,000", "v1000"]]
        table = pilot.app.screen.query_one(VersionTable)
        size = loaded.config.tui.page_size  # 50 by default
        assert table.row_count == size and table.page_label == f"1-{size} of 1,000"
        assert table.rows_shown[0]["version"] == 1000
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert table.row_count == size
        assert table.page_label == f"{size + 1}-{2 * size} of 1,000"
        assert [r["version"] for r in table.rows_shown[:2]] == [1000 - size, 999 - size]
        # the other model: its own versions, from its first page
        models.focus()
        await pilot.press("down")
        await settle(pilot)
        assert table.page_label == f"1-{size} of 1,000"
        assert str(table.border_title) == "versions of occupation_coder"


# -- the card ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_card_is_the_versions_card_md(demo: LoadedConfig,
                                                app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        markdown = await card_shown(pilot)
        assert screen_of(pilot).tabs.active == "tab-card"
        assert headings(markdown) == card_headings(demo, 2)
        assert headings(markdown)[0] == "Model card: occupation_coder v2"
        await pilot.press("escape")  # back to the versions, then the older one
        await to_version(pilot, 1)
        await pilot.press("enter")
        markdown = await card_shown(pilot)
        assert headings(markdown) == card_headings(demo, 1)
        assert headings(markdown)[0] == "Model card: occupation_coder v1"


@pytest.mark.asyncio
async def test_a_missing_card_says_so(copy_of: Callable[[], LoadedConfig],
                                      app_for: Callable[..., SiltaApp]) -> None:
    loaded = copy_of()
    (lake_dir(loaded) / "_silta" / "artifacts" / MODEL / "1" / "card.md").unlink()
    async with app_for(loaded, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        await pilot.press("enter")
        await settle(pilot)
        view = pilot.app.screen.query_one(CardView)
        assert view.has_class("-missing") and not view.markdown.display
        note = str(view.query_one("#card-note").render())
        assert note.startswith(f"no model card for {MODEL} v1: model card "
                               f"'{MODEL}@1' not found")
        assert f"no model card for {MODEL} v1" in text_of(pilot)


# -- side by side -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_compare_with_the_champion_shows_both_values_exactly(
        demo: LoadedConfig, duck: Any, app_for: Callable[..., SiltaApp]) -> None:
    expected = registry_rows(duck, demo)
    f1 = {v: expected[v]["metrics"]["overall"]["macro_f1"] for v in (1, 2)}
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        await pilot.press("c")
        await settle(pilot)
        assert screen_of(pilot).tabs.active == "tab-compare"
        view = pilot.app.screen.query_one(CompareView)
        assert view.labels == ("v2 (champion)", "v1")
        row = next(r for r in view.rows if r.field == "macro_f1")
        assert (row.a, row.b) == (f1[2], f1[1]) and row.differs
        assert row.delta == f"{f1[1] - f1[2]:+.4f}"
        shown = text_of(pilot)
        line = next(ln for ln in shown.splitlines() if "macro_f1" in ln)
        assert f"{f1[2]:.6f}" in line and f"{f1[1]:.6f}" in line
        assert line.index(f"{f1[2]:.6f}") < line.index(f"{f1[1]:.6f}")
        fields = {r.field: r for r in view.rows}
        overall = set(expected[1]["metrics"]["overall"]) | set(expected[2]["metrics"]["overall"])
        assert overall <= set(fields)
        assert fields["training data"].a == "raw/survey_responses@1"
        assert fields["training data"].b == "raw/survey_responses@0"
        assert fields["config sha256"].differs is False  # the same config trained both
        assert fields["macro_f1"].field in shown and "≠ macro_f1" in shown
        assert "≠ config sha256" not in shown


@pytest.mark.asyncio
async def test_mark_then_compare(demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        await pilot.press("space")
        await settle(pilot)
        table = pilot.app.screen.query_one(VersionTable)
        assert table.marked == 1 and cells(table, 1)[0] == "●"
        assert str(table.border_title) == f"versions of {MODEL} · v1 marked"
        await to_version(pilot, 2)
        await pilot.press("c")
        await settle(pilot)
        assert pilot.app.screen.query_one(CompareView).labels == ("v1 (marked)",
                                                                  "v2 (champion)")


@pytest.mark.asyncio
async def test_compare_on_the_champion_alone_says_what_to_do(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        notes = notes_of(pilot.app)
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert screen_of(pilot).tabs.active == "tab-versions"
        assert notes == ["nothing to compare with: this is the champion: mark a version "
                         "with space, move to another, then press c"]


def test_compare_rows_take_segments_when_the_row_has_them(demo: LoadedConfig) -> None:
    """The primary metric by segment, from the registry's own metrics."""
    reg = ModelRegistry(open_lake(demo))
    rows = {v: {"version": v, "primary_metric": "macro_f1",
                "metrics": reg.get(MODEL, v).metrics["overall"],
                "segments": reg.get(MODEL, v).metrics["segments"]} for v in (1, 2)}
    got = {r.field: r for r in compare_rows(rows[2], rows[1])
           if r.group == "macro_f1 by segment"}
    segments = rows[2]["segments"]
    assert set(got) >= {f"{d}={v}" for d in segments for v in segments[d]}
    assert got["language=fi"].a == segments["language"]["fi"]["macro_f1"]
    assert got["language=fi"].b == rows[1]["segments"]["language"]["fi"]["macro_f1"]
    assert exact(0.1 + 0.2) == "0.300000" and exact(None) == "-"


# -- actions ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_promote_v1_queues_a_command(demo: LoadedConfig,
                                           app_for: Callable[..., SiltaApp]) -> None:
    before = last_command_id(demo)
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        await pilot.press("p")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert dialog.title_text == f"Promote {MODEL} v1 to champion?"
        assert "(now v2)" in dialog.body
        await pilot.press(*"v1 is safer")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ModelsScreen)
    new = commands_after(demo, before)
    assert len(new) == 1
    assert new[0]["kind"] == "model.promote" and new[0]["status"] == "queued"
    assert json.loads(new[0]["args"]) == {"model": MODEL, "version": 1, "reason": "v1 is safer"}
    assert new[0]["os_user"] == getpass.getuser()


@pytest.mark.asyncio
async def test_cancel_queues_nothing(demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    before = last_command_id(demo)
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        for key in ("p", "b"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(pilot.app.screen, ConfirmDialog)
            await pilot.press(*"no")
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(pilot.app.screen, ModelsScreen)
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_promote_the_champion_is_refused_here(demo: LoadedConfig,
                                                    app_for: Callable[..., SiltaApp]) -> None:
    before = last_command_id(demo)
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        notes = notes_of(pilot.app)
        await settle(pilot)
        await to_version(pilot, 2)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ModelsScreen)
        assert notes == [f"not queued: {MODEL} v2 is the champion already"]
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_approve_a_version_not_waiting_says_why_and_queues_nothing(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    before = last_command_id(demo)
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        notes = notes_of(pilot.app)
        await settle(pilot)
        await to_version(pilot, 1)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ModelsScreen)
        assert notes == [f"nothing to approve: {MODEL} v1 is not waiting for approval (no "
                         "version is waiting); p promotes any version"]
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_approve_the_waiting_version(copy_of: Callable[[], LoadedConfig],
                                           app_for: Callable[..., SiltaApp]) -> None:
    loaded = copy_of()
    ModelRegistry(open_lake(loaded)).set_alias(
        MODEL, "challenger", 1, by="trainer@host",
        reason="v1 beats the champion; waiting for approval (promotion manual)")
    before = last_command_id(loaded)
    async with app_for(loaded, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert cells(pilot.app.screen.query_one(ModelList), 0)[3:5] == ["v1", "v1"]
        await to_version(pilot, 2)
        await pilot.press("a")  # v2 is not the waiting one
        await settle(pilot)
        assert isinstance(pilot.app.screen, ModelsScreen)
        await to_version(pilot, 1)
        await pilot.press("a")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert dialog.title_text == f"Approve {MODEL} v1?" and "(now v2)" in dialog.body
        dialog.query_one("#comment", Input).value = "checked the Swedish answers"
        await pilot.click("#confirm")
        await settle(pilot)
    new = commands_after(loaded, before)
    assert [(c["kind"], json.loads(c["args"]), c["os_user"], c["status"]) for c in new] == [
        ("model.approve", {"model": MODEL, "version": 1,
                           "reason": "checked the Swedish answers"},
         getpass.getuser(), "queued")]


@pytest.mark.asyncio
async def test_rollback_names_both_champions_and_queues_it(
        demo: LoadedConfig, duck: Any, app_for: Callable[..., SiltaApp]) -> None:
    last = duck_rows(duck, lake_dir(demo) / "_silta" / "aliases",
                     f"SELECT version, previous_version FROM t WHERE model = '{MODEL}' AND "
                     "alias = 'champion' ORDER BY seq DESC LIMIT 1")[0]
    assert last == (2, 1)
    before = last_command_id(demo)
    async with app_for(demo, screen="models").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert f"goes back from v{last[0]} to v{last[1]}" in dialog.body
        await pilot.press(*"v2 codes Swedish badly", "enter")
        await settle(pilot)
    new = commands_after(demo, before)
    assert [(c["kind"], json.loads(c["args"]), c["os_user"]) for c in new] == [
        ("model.rollback", {"model": MODEL, "reason": "v2 codes Swedish badly"},
         getpass.getuser())]


@pytest.mark.asyncio
async def test_read_only_hides_and_refuses_the_actions(demo: LoadedConfig,
                                                       app_for: Callable[..., SiltaApp]) -> None:
    before = last_command_id(demo)
    async with app_for(demo, screen="models", read_only=True).run_test(
            size=(80, 24)) as pilot:
        await settle(pilot)
        await to_version(pilot, 1)
        active = pilot.app.screen.active_bindings
        for key in ("p", "a", "b"):
            assert key not in active
        assert "c" in active and "h" in active
        for key in ("p", "a", "b"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(pilot.app.screen, ModelsScreen)
        titles = [t for t, _, _ in screen_of(pilot).palette_commands()]
        assert "compare" in titles and not {"promote", "approve", "rollback"} & set(titles)
    assert commands_after(demo, before) == []


@pytest.mark.asyncio
async def test_markup_in_the_alias_history_shows_as_text(
        copy_of: Callable[[], LoadedConfig], app_for: Callable[..., SiltaApp]) -> None:
    loaded = copy_of()
    ModelRegistry(open_lake(loaded)).set_alias(MODEL, "champion", 1, by="[b]eve",
                                               reason="[red]x[/] went wrong")
    async with app_for(loaded, screen="models").run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        history = pilot.app.screen.query_one(AliasTable)
        assert cells(history, 0)[3:] == ["[b]eve", "[red]x[/] went wrong"]
        shown = text_of(pilot)
        assert "champion → v1 by [b]eve: [red]x[/] went wrong" in shown
        await pilot.press("v")
        await to_version(pilot, 2)
        await pilot.press("c")
        await settle(pilot)
        assert pilot.app.screen.query_one(CompareView).labels == ("v1 (champion)", "v2")
