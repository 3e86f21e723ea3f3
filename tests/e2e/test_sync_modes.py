"""Merge (upsert) and snapshot syncs through the CLI, read back with time travel and DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import silta, write_csv

pytestmark = pytest.mark.timeout(120)


def _once(root: Path, config: Path) -> dict[str, Any]:
    r = silta(root, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    (outcome,) = r.json()
    return dict(outcome)


def _history(root: Path, config: Path, table: str) -> list[dict[str, Any]]:
    r = silta(root, "tables", "history", table, "--json", "--config", config)
    assert r.code == 0, r
    return list(r.json())


def _at(path: Path, version: int) -> list[tuple[Any, ...]]:
    data = DeltaTable(str(path), version=version).to_pyarrow_dataset().to_table()
    return sorted(zip(data["id"].to_pylist(), data["v"].to_pylist(), strict=True))


def test_merge_upserts_on_the_key(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "m", "target": "lake:raw/m", "mode": "merge",
                                      "key": ["id"], "on_success": "move"}])
    inbox = tmp_path / "inbox"
    table = tmp_path / "lake" / "raw" / "m"

    write_csv(inbox / "sub" / "one.csv", "id,v", ["a,1", "b,2", "c,3"])
    write_csv(inbox / "two.csv", "id,v", ["b,20", "d,4", "d,40"])  # d twice: the last wins
    assert _once(tmp_path, config)["files"] == 1  # `*.csv` does not reach into sub/
    (inbox / "sub" / "one.csv").rename(inbox / "one.csv")
    outcome = _once(tmp_path, config)
    assert (outcome["status"], outcome["files"]) == ("ok", 1)

    assert _at(table, 0) == [("b", 20), ("d", 40)]
    # the later file's b wins
    assert _at(table, 1) == [("a", 1), ("b", 2), ("c", 3), ("d", 40)]
    assert duck_rows(duck, table, "SELECT id, v FROM t ORDER BY id") == [
        ("a", 1), ("b", 2), ("c", 3), ("d", 40)]
    # the merged files were moved aside once their commit was durable
    assert sorted(p.name for p in (inbox / ".silta-done").iterdir()) == ["one.csv", "two.csv"]
    assert sorted(p.name for p in inbox.iterdir()) == [".silta-done", "sub"]

    history = _history(tmp_path, config, "raw/m")
    assert [(h["version"], h["operation"], h["batch"]) for h in history] == [
        (1, "MERGE", 2), (0, "WRITE", 1)]
    # one.csv brought a, b, c against b, d: two new keys (a, c), one updated (b)
    assert (history[0]["rows_added"], history[0]["rows_updated"]) == (2, 1)
    assert (history[1]["rows_added"], history[1]["rows_updated"]) == (2, None)


def test_snapshot_replaces_the_table_and_keeps_old_versions(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "s", "target": "lake:raw/s",
                                      "mode": "snapshot"}])
    inbox = tmp_path / "inbox"
    table = tmp_path / "lake" / "raw" / "s"

    write_csv(inbox / "jan.csv", "id,v", ["a,1", "b,2"])
    assert _once(tmp_path, config)["table_version"] == 0
    write_csv(inbox / "feb.csv", "id,v", ["a,10", "c,30", "d,40"])
    outcome = _once(tmp_path, config)
    assert (outcome["batches"], outcome["files"], outcome["rows"], outcome["table_version"]) \
        == (1, 1, 3, 1)

    assert duck_rows(duck, table, "SELECT id, v, _silta_source FROM t ORDER BY id") == [
        ("a", 10, "inbox:feb.csv"), ("c", 30, "inbox:feb.csv"), ("d", 40, "inbox:feb.csv")]
    assert _at(table, 0) == [("a", 1), ("b", 2)]
    r = silta(tmp_path, "tables", "show", "raw/s", "--version", "0", "--json", "--config",
              config)
    assert r.code == 0, r
    assert sorted((row["id"], row["v"]) for row in r.json()["rows"]) == [("a", 1), ("b", 2)]
    r = silta(tmp_path, "tables", "list", "--json", "--config", config)
    assert [(t["table"], t["version"], t["rows"]) for t in r.json()] == [("raw/s", 1, 3)]
