"""``_silta/runs``: every run that did something lands once, even across crashes and outages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from agent.runs import RUNS_TABLE, RunRecord, flush, read_runs
from agent.state import StateStore, now
from connectors.errors import StateStoreError, StoreError
from connectors.lake import DeltaLake
from tests.conftest import duck_rows


def _record(state: StateStore, name: str, status: str = "ok") -> str:
    run_id = state.start_run("train", name, "test", "agent-a")
    row = RunRecord(run_id=run_id, kind="train", name=name, trigger="test", status=status,
                    agent="agent-a", started_at=now(), finished_at=now(),
                    inputs=[{"table": "raw/x", "version": 3}],
                    outputs=[{"model": "m", "version": 1}], model="m", model_version=1,
                    metrics={"accuracy": 0.9}, error=None if status == "ok" else "boom")
    state.finish_run(run_id, status=status, lake_row=row.as_row())
    return run_id


def test_records_land_once_with_their_fields(tmp_path: Path, duck: Any) -> None:
    state, lake = StateStore(tmp_path / "state"), DeltaLake(str(tmp_path / "lake"))
    ids = [_record(state, "a"), _record(state, "b", status="failed")]
    assert flush(state, lake) == 2
    assert flush(state, lake) == 0  # nothing left: no second commit
    assert lake.require(RUNS_TABLE).version() == 0
    rows = {r["run_id"]: r for r in read_runs(lake)}
    assert set(rows) == set(ids)
    a = rows[ids[0]]
    assert (a["kind"], a["name"], a["status"], a["model"], a["model_version"]) == (
        "train", "a", "ok", "m", 1)
    assert a["inputs"] == [{"table": "raw/x", "version": 3}]
    assert a["metrics"] == {"accuracy": 0.9}
    assert a["started_at"].tzinfo is not None and a["duration_seconds"] >= 0
    assert rows[ids[1]]["error"] == "boom"
    # an independent reader sees the same, JSON as text
    assert sorted(duck_rows(duck, tmp_path / "lake" / RUNS_TABLE,
                            "SELECT run_id, status, inputs FROM t")) == sorted(
        [(ids[0], "ok", '[{"table": "raw/x", "version": 3}]'),
         (ids[1], "failed", '[{"table": "raw/x", "version": 3}]')])
    assert [r["name"] for r in read_runs(lake, status="failed")] == ["b"]
    state.close()


def test_a_crash_after_the_commit_does_not_write_the_records_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, lake = StateStore(tmp_path / "state"), DeltaLake(str(tmp_path / "lake"))
    first = _record(state, "a")

    def crash(seq: int) -> None:
        raise StateStoreError("simulated crash after the lake commit")

    monkeypatch.setattr(state, "outbox_flushed", crash)
    with pytest.raises(StateStoreError):
        flush(state, lake)
    monkeypatch.undo()
    assert lake.count_rows(RUNS_TABLE) == 1
    second = _record(state, "b")  # arrives while the first is still marked planned
    assert flush(state, lake) == 1  # the planned one is recognised, the new one written
    runs = read_runs(lake)
    assert sorted(r["run_id"] for r in runs) == sorted([first, second])
    assert lake.count_rows(RUNS_TABLE) == 2
    assert state.outbox_open() == []
    state.close()


def test_records_wait_while_the_lake_is_away(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    state, lake = StateStore(tmp_path / "state"), DeltaLake(str(tmp_path / "lake"))
    run_id = _record(state, "a")
    real = lake.commit_batch

    def away(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("lake unreachable (simulated)", retriable=True)

    monkeypatch.setattr(lake, "commit_batch", away)
    with pytest.raises(StoreError):
        flush(state, lake)
    assert lake.open(RUNS_TABLE) is None
    assert [r[0] for r in state.outbox_open()] == [run_id]
    monkeypatch.setattr(lake, "commit_batch", real)
    assert flush(state, lake) == 1
    assert [r["run_id"] for r in read_runs(lake)] == [run_id]
    state.close()


def test_a_lost_state_folder_never_reuses_a_landed_seq(tmp_path: Path) -> None:
    lake = DeltaLake(str(tmp_path / "lake"))
    state = StateStore(tmp_path / "state")
    _record(state, "a")
    flush(state, lake)
    store_id = state.store_id()
    state.close()
    # the folder is restored from an old backup: same store id, empty outbox
    import shutil

    shutil.rmtree(tmp_path / "state")
    state = StateStore(tmp_path / "state")
    with state.tx() as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='store_id'", (store_id,))
    later = _record(state, "b")
    assert flush(state, lake) == 1
    assert later in {r["run_id"] for r in read_runs(lake)}
    assert lake.count_rows(RUNS_TABLE) == 2
    state.close()


def test_sync_runs_that_moved_data_are_recorded_and_idle_ones_are_not(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{"name": "s"}])
    (tmp_path / "inbox" / "a.csv").write_text("id,x\n1,a\n2,b\n", encoding="utf-8")
    old = dt.datetime.now().timestamp() - 60
    import os

    os.utime(tmp_path / "inbox" / "a.csv", (old, old))
    busy = engine.run("s")
    idle = engine.run("s")
    assert (busy.batches, idle.batches) == (1, 0)
    runs = read_runs(engine.lake)
    assert [r["run_id"] for r in runs] == [busy.run_id]
    r = runs[0]
    assert (r["kind"], r["status"], r["inputs"], r["outputs"]) == (
        "sync", "ok", [{"connector": "inbox", "path": "*.csv", "files": 1,
                        "bytes": busy.bytes}], [{"table": "raw/t", "version": 0}])
    assert r["metrics"]["rows"] == 2


def test_records_in_the_lake_leave_the_outbox_after_a_while(tmp_path: Path) -> None:
    state, lake = StateStore(tmp_path / "state"), DeltaLake(str(tmp_path / "lake"))
    old = _record(state, "a")
    flush(state, lake)
    with state.tx() as conn:  # flushed eight days ago
        conn.execute("UPDATE lake_outbox SET flushed_at=? WHERE run_id=?",
                     ((dt.datetime.now(dt.UTC) - dt.timedelta(days=8)).isoformat(), old))
    new = _record(state, "b")
    flush(state, lake)
    kept = [r[0] for r in state.query("SELECT run_id FROM lake_outbox")]
    assert kept == [new]
    assert sorted(r["run_id"] for r in read_runs(lake)) == sorted([old, new])
    assert lake.count_rows(RUNS_TABLE) == 2
    state.close()
