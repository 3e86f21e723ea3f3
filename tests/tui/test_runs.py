"""The runs screen: the list against the state store, its filters and pages, a run's
detail against its `_silta/runs` record, and the two actions (run now, replay)."""

from __future__ import annotations

import getpass
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import LoadedConfig
from agent.runs import get_run
from agent.state import FILE_NAME
from agent.stores import open_lake
from tests.tui.conftest import settle
from tui.app import SiltaApp
from tui.screens.runs import RunsScreen
from tui.widgets.common.confirm import ConfirmDialog
from tui.widgets.runs.runs_table import RunsTable

pytestmark = pytest.mark.asyncio

#: a sync or publish that moved nothing (the list hides these unless `i`)
IDLE = "(kind IN ('sync', 'publish') AND status = 'ok' AND rows = 0 AND files = 0)"


def _sql(loaded: LoadedConfig, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    con = sqlite3.connect(f"file:{loaded.state_dir / FILE_NAME}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def _ids(loaded: LoadedConfig, where: str = "1=1", params: tuple[Any, ...] = (), *,
         limit: int = 100, offset: int = 0) -> list[str]:
    return [r["id"] for r in _sql(
        loaded, f"SELECT id FROM runs WHERE {where} ORDER BY started_at DESC LIMIT ? "
        "OFFSET ?", (*params, limit, offset))]


def _table(app: Any) -> RunsTable:
    return app.screen.query_one("#runs", RunsTable)


def _shown(app: Any) -> list[str]:
    return [str(r["id"]) for r in _table(app).rows_shown]


def _detail(app: Any) -> str:
    from textual.widgets import Static

    rendered = app.screen.query_one("#run-detail-text", Static).render()
    return str(getattr(rendered, "plain", rendered))


def _commands_after(loaded: LoadedConfig, last: int) -> list[dict[str, Any]]:
    return _sql(loaded, "SELECT * FROM commands WHERE id > ? ORDER BY id", (last,))


def _last_command(loaded: LoadedConfig) -> int:
    rows = _sql(loaded, "SELECT COALESCE(MAX(id), 0) AS n FROM commands")
    return int(rows[0]["n"])


async def _highlight(pilot: Any, run_id: str) -> None:
    table = _table(pilot.app)
    table.move_cursor(row=_shown(pilot.app).index(run_id), animate=False)
    await settle(pilot)


def _copy_world(demo: LoadedConfig, tmp_path: Path) -> LoadedConfig:
    """The demo's config and lake with a copy of its state store (to add runs to)."""
    state = tmp_path / "state"
    state.mkdir()
    src = sqlite3.connect(f"file:{demo.state_dir / FILE_NAME}?mode=ro", uri=True)
    dst = sqlite3.connect(state / FILE_NAME)
    src.backup(dst)
    src.close()
    dst.close()
    agent = demo.config.agent.model_copy(update={"state_dir": str(state)})
    return LoadedConfig(demo.config.model_copy(update={"agent": agent}), demo.path)


def _insert_runs(loaded: LoadedConfig, rows: list[dict[str, Any]]) -> None:
    con = sqlite3.connect(loaded.state_dir / FILE_NAME)
    with con:
        con.executemany(
            "INSERT INTO runs (id, kind, name, trigger, status, agent, started_at, finished_at, "
            "files, rows, error, model, model_version) VALUES (:id, :kind, :name, :trigger, "
            ":status, 'demo-agent', :started_at, :started_at, :files, :rows, :error, :model, "
            ":model_version)", rows)
    con.close()


def _synthetic(n: int) -> list[dict[str, Any]]:
    """``n`` runs newer than the demo's (the year 2030), one a second."""
    kinds = ["sync", "publish", "train", "predict", "monitor"]
    return [{"id": f"bulk{i:05d}", "kind": kinds[i % 5], "name": f"bulk_{i % 7}",
             "trigger": "schedule", "status": ["ok", "failed", "partial"][i % 3],
             "started_at": f"2030-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                           ".000+00:00",
             "files": i % 4, "rows": i, "error": None,
             "model": "m" if kinds[i % 5] in ("train", "predict") else None,
             "model_version": 3 if kinds[i % 5] in ("train", "predict") else None}
            for i in range(n)]


# -- the list --------------------------------------------------------------------------------
async def test_the_list_is_the_state_stores_runs_newest_first_without_idle_ones(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    expected = _ids(demo, f"NOT {IDLE}")
    idle = _ids(demo, IDLE)
    assert idle, "the demo has an idle sync run (enterprise_register's second pass)"
    async with app_for(demo, screen="runs").run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert isinstance(pilot.app.screen, RunsScreen)
        assert _shown(pilot.app) == expected
        table = _table(pilot.app)
        total = len(_sql(demo, f"SELECT id FROM runs WHERE NOT {IDLE}"))
        assert table.page_label == f"1-{total} of {total}"
        for i, run_id in enumerate(expected):
            row = _sql(demo, "SELECT * FROM runs WHERE id = ?", (run_id,))[0]
            cells = [c.plain for c in table.get_row_at(i)]
            model = f"{row['model']}@{row['model_version']}" if row["model"] else "-"
            assert cells[1:] == [row["kind"], row["name"], row["status"], f"{row['rows']:,}",
                                 model, row["trigger"]]
            assert cells[0].endswith(" ago")
        await pilot.press("i")
        await settle(pilot)
        assert _shown(pilot.app) == _ids(demo)
        assert "idle shown" in str(table.border_title)


async def test_kind_and_status_filters_give_exactly_the_matching_runs(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        seen_kinds = []
        for kind in ("sync", "publish", "train", "predict", "monitor"):
            await pilot.press("k")
            await settle(pilot)
            assert _shown(pilot.app) == _ids(demo, f"kind = ? AND NOT {IDLE}", (kind,))
            assert f"kind {kind}" in str(_table(pilot.app).border_title)
            seen_kinds.append(bool(_shown(pilot.app)))
        assert all(seen_kinds)  # the demo has every kind, so each filter was tried for real
        await pilot.press("k")  # back to all
        await settle(pilot)
        assert _shown(pilot.app) == _ids(demo, f"NOT {IDLE}")
        for status in ("ok", "failed", "partial", "running", "interrupted", "skipped"):
            await pilot.press("s")
            await settle(pilot)
            assert _shown(pilot.app) == _ids(demo, f"status = ? AND NOT {IDLE}", (status,))
            assert f"status {status}" in str(_table(pilot.app).border_title)
        await pilot.press("k", "k", "k")  # kind train; status is still "skipped"
        await settle(pilot)
        assert _shown(pilot.app) == []
        await pilot.press("s")  # status all
        await settle(pilot)
        assert _shown(pilot.app) == _ids(demo, "kind = 'train'")


async def test_text_filter_searches_names(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"coded")
        await settle(pilot)
        expected = _ids(demo, f"(name LIKE '%coded%' OR id LIKE '%coded%' OR error LIKE "
                              f"'%coded%' OR trigger LIKE '%coded%') AND NOT {IDLE}")
        assert expected and _shown(pilot.app) == expected
        assert "“coded”" in str(_table(pilot.app).border_title)


async def test_a_jobs_runs_from_the_dashboard(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    async with app_for(demo).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app = pilot.app
        # a publish sync: its job is sync:NAME, its runs have kind publish
        app.open_runs_of("sync:publish_codes_db")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        expected = _ids(demo, f"kind IN ('sync', 'publish') AND name = ? AND NOT {IDLE}",
                        ("publish_codes_db",))
        assert len(expected) == 2 and _shown(app) == expected
        app.screen.filter_job("train:train_occupation_coder")
        await settle(pilot)
        expected = _ids(demo, "kind = 'train' AND name = ?", ("train_occupation_coder",))
        assert len(expected) == 2 and _shown(app) == expected
        assert "job train:train_occupation_coder" in str(_table(app).border_title)
        await pilot.press("c")
        await settle(pilot)
        assert _shown(app) == _ids(demo, f"NOT {IDLE}")


async def test_page_two_of_a_long_list(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], tmp_path: Path) -> None:
    world = _copy_world(demo, tmp_path)
    _insert_runs(world, _synthetic(1000))
    size = world.config.tui.page_size
    async with app_for(world, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        total = len(_sql(world, f"SELECT id FROM runs WHERE NOT {IDLE}"))
        assert total > 2 * size
        assert _shown(pilot.app) == _ids(world, f"NOT {IDLE}", limit=size)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        page2 = _ids(world, f"NOT {IDLE}", limit=size, offset=size)
        assert _shown(pilot.app) == page2 and len(page2) == size
        assert _table(pilot.app).page_label == f"{size + 1:,}-{2 * size:,} of {total:,}"
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert _shown(pilot.app) == _ids(world, f"NOT {IDLE}", limit=size)
        await pilot.press("k", "k", "k")  # train
        await settle(pilot)
        assert _shown(pilot.app) == _ids(world, "kind = 'train'", limit=size)


async def test_markup_in_a_runs_name_and_error_shows_literally(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp], tmp_path: Path) -> None:
    world = _copy_world(demo, tmp_path)
    error = "[red]boom[/] in [b]step[/b]\nTraceback line two"
    _insert_runs(world, [{"id": "markup00000001", "kind": "train", "name": "a[b]c",
                          "trigger": "[red]x[/]", "status": "failed", "files": 0, "rows": 0,
                          "started_at": "2031-01-01T00:00:00.000+00:00", "error": error,
                          "model": None, "model_version": None}])
    async with app_for(world, screen="runs").run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert _shown(pilot.app)[0] == "markup00000001"
        cells = [c.plain for c in _table(pilot.app).get_row_at(0)]
        assert cells[2] == "a[b]c" and cells[6] == "[red]x[/]"
        text = _detail(pilot.app)
        assert "[red]boom[/] in [b]step[/b]\nTraceback line two" in text
        assert "train:a[b]c" in text


# -- the detail ------------------------------------------------------------------------------
async def test_a_predict_runs_inputs_and_outputs_are_its_record(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    run_id = _ids(demo, "kind = 'predict'")[0]
    record = get_run(open_lake(demo), run_id)
    assert record["inputs"] and record["outputs"]
    async with app_for(demo, screen="runs").run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await _highlight(pilot, run_id)
        text = _detail(pilot.app)
        assert text.startswith(f"run {run_id}  predict:{record['name']}  ok")
        inputs = text.split("\ninputs\n")[1].split("\n\noutputs\n")[0].splitlines()
        outputs = text.split("\noutputs\n")[1].split("\n\n")[0].splitlines()
        assert len(inputs) == len(record["inputs"])
        assert len(outputs) == len(record["outputs"])
        for line, item in zip(inputs, record["inputs"], strict=True):
            if item.get("model"):
                assert f"model {item['model']}@{item['version']}" in line
                assert f"sha256 {item['artifact_sha256'][:12]}" in line
            else:
                ref = (f"{item['table']}@{item['to_version']}" if item["from_version"] is None
                       else f"{item['table']} ({item['from_version']}, {item['to_version']}]")
                assert line == f"  • {ref}"
        for line, item in zip(outputs, record["outputs"], strict=True):
            assert line == f"  • {item['table']}@{item['version']} {item['rows']:,} row(s)"
        for key, value in record["metrics"].items():
            assert f"\n  {key} " in text
            if isinstance(value, int):
                assert f"\n  {key} {value}\n" in text + "\n"
        first = record["outputs"][0]
        assert f"\nlineage\ntable {first['table']}@{first['version']}:" in text
        assert f"run {run_id} ok" in text.split("\nlineage\n")[1]


async def test_an_idle_runs_detail_says_it_has_no_record(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    run_id = _ids(demo, IDLE)[0]
    async with app_for(demo, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("i")
        await settle(pilot)
        await _highlight(pilot, run_id)
        text = _detail(pilot.app)
        assert text.startswith(f"run {run_id}")
        assert "no record in _silta/runs" in text and "\ninputs" not in text
        await pilot.press("enter")  # into the detail, to scroll it; Escape comes back
        assert pilot.app.focused is pilot.app.screen.query_one("#run-detail")
        await pilot.press("escape")
        assert pilot.app.focused is _table(pilot.app)


# -- actions ---------------------------------------------------------------------------------
async def test_run_now_queues_the_runs_job(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    publish = _ids(demo, "kind = 'publish' AND name = 'publish_predictions'")[0]
    async with app_for(demo, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _highlight(pilot, publish)
        before = _last_command(demo)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmDialog)
        await pilot.click("#cancel")
        await settle(pilot)
        assert isinstance(pilot.app.screen, RunsScreen)
        assert [c for c in _commands_after(demo, before) if c["kind"] == "job.run"] == []
        await pilot.press("n")
        await settle(pilot)
        await pilot.click("#confirm")
        await settle(pilot)
        new = [c for c in _commands_after(demo, before) if c["kind"] == "job.run"]
        assert len(new) == 1
        assert json.loads(new[0]["args"]) == {"job": "sync:publish_predictions"}
        assert new[0]["os_user"] == getpass.getuser() and new[0]["status"] == "queued"


async def test_replay_queues_a_predict_run_and_refuses_a_sync_run(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    predict = _ids(demo, "kind = 'predict' AND status = 'ok'")[0]
    sync = _ids(demo, f"kind = 'sync' AND NOT {IDLE}")[0]
    async with app_for(demo, screen="runs").run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = _last_command(demo)
        await _highlight(pilot, sync)
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(pilot.app.screen, RunsScreen)  # no dialog: told why instead
        assert any("only train and predict" in n.message
                   for n in pilot.app._notifications)
        assert [c for c in _commands_after(demo, before) if c["kind"] == "run.replay"] == []
        await _highlight(pilot, predict)
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmDialog)
        await pilot.click("#confirm")
        await settle(pilot)
        new = [c for c in _commands_after(demo, before) if c["kind"] == "run.replay"]
        assert len(new) == 1
        assert json.loads(new[0]["args"]) == {"run": predict}
        assert new[0]["os_user"] == getpass.getuser() and new[0]["status"] == "queued"


async def test_read_only_offers_neither_action(
        demo: LoadedConfig, app_for: Callable[..., SiltaApp]) -> None:
    predict = _ids(demo, "kind = 'predict' AND status = 'ok'")[0]
    async with app_for(demo, screen="runs", read_only=True).run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _highlight(pilot, predict)
        keys = set(pilot.app.screen.active_bindings)
        assert "k" in keys and "n" not in keys and "R" not in keys
        before = _last_command(demo)
        await pilot.press("n", "R")
        await settle(pilot)
        assert isinstance(pilot.app.screen, RunsScreen)
        assert _commands_after(demo, before) == []
