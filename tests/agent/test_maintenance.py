"""Compaction after syncs: few files in the latest version, same data, time travel intact."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from agent.maintenance import maintain
from tests.conftest import duck_rows


def _put(inbox: Path, name: str, text: str) -> None:
    (inbox / name).write_text(text, encoding="utf-8")
    old = time.time() - 60
    os.utime(inbox / name, (old, old))


def test_a_sync_that_gathers_small_files_compacts_its_table(make_engine: Any, tmp_path: Path,
                                                            duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "batch_max_files": 1}], compact_min_files=5)
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    for i in range(4):
        _put(inbox, f"a{i}.csv", f"id,n\n{i},{i * 10}\n")
    out = engine.run("s")
    assert (out.batches, out.table_version) == (4, 3)
    assert len(DeltaTable(str(table)).file_uris()) == 4  # 4 small files: not due yet

    for i in range(4, 6):
        _put(inbox, f"a{i}.csv", f"id,n\n{i},{i * 10}\n")
    out = engine.run("s")
    assert (out.batches, out.table_version) == (2, 5)
    dt = DeltaTable(str(table))
    assert dt.version() == 6  # the batches' versions 0-5, then the compaction
    assert len(dt.file_uris()) == 1
    latest = dt.history(1)[0]
    assert latest["operation"] == "OPTIMIZE"
    assert latest["silta.maintenance"] == "compact"
    assert latest["operationMetrics"]["numFilesRemoved"] == 6
    # and a checkpoint at the compacted version: opening skips the commits before it
    log_dir = table / "_delta_log"
    assert sorted(p.name for p in log_dir.glob("*.checkpoint.parquet")) == [
        "00000000000000000006.checkpoint.parquet"]
    assert json.loads((log_dir / "_last_checkpoint").read_text())["version"] == 6
    # the same rows, through an independent reader, each once
    assert duck_rows(duck, table, "SELECT id, n, _silta_source FROM t ORDER BY id") == [
        (i, i * 10, f"inbox:a{i}.csv") for i in range(6)]
    # time travel still sees the old versions with their own files
    dt.load_as_version(2)
    assert sorted(dt.to_pyarrow_table()["id"].to_pylist()) == [0, 1, 2]
    # exactly once still holds across the compaction: the app transaction is kept
    assert DeltaTable(str(table)).transaction_version("silta/s") == 6  # the 6th batch's seq
    _put(inbox, "a6.csv", "id,n\n6,60\n")
    again = engine.run("s")
    assert (again.batches, again.rows, again.table_version) == (1, 1, 7)
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [(7, 7)]


def test_compaction_off_and_a_missing_table_are_no_ops(make_engine: Any, tmp_path: Path
                                                       ) -> None:
    engine, loaded = make_engine([{"name": "s", "batch_max_files": 1}], compact_min_files=0)
    for i in range(3):
        _put(tmp_path / "inbox", f"a{i}.csv", f"id\n{i}\n")
    engine.run("s")
    table = tmp_path / "lake" / "raw" / "t"
    assert len(DeltaTable(str(table)).file_uris()) == 3
    assert DeltaTable(str(table)).version() == 2
    assert maintain(loaded, engine.lake, "raw/none", "a") is None
