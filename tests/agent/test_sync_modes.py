"""Sync modes: append, grouping into commits, redelivery, merge, snapshot, two syncs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from tests.agent.helpers import put, rows_both
from tests.conftest import duck_rows

LINEAGE = ["_silta_source", "_silta_batch", "_silta_ingested_at"]





def columns_both(duck: Any, path: Path) -> list[str]:
    names = DeltaTable(str(path)).to_pyarrow_dataset().schema.names
    desc = duck.execute(f"SELECT * FROM delta_scan('{path}') LIMIT 0").description
    assert [d[0] for d in desc] == names
    return list(names)


def history_by_version(path: Path) -> dict[int, dict[str, Any]]:
    return {int(h["version"]): h for h in DeltaTable(str(path)).history()}


# -- 1. append ----------------------------------------------------------------------------
def test_append_two_runs_land_once_with_lineage(make_engine: Any, tmp_path: Path,
                                                duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,name\n1,x\n2,y\n")
    before1 = dt.datetime.now(dt.UTC)
    out1 = engine.run("s")
    after1 = dt.datetime.now(dt.UTC)
    assert (out1.status, out1.batches, out1.files, out1.rows, out1.table_version) == (
        "ok", 1, 1, 2, 0)

    put(inbox, "b.csv", "id,name\n3,z\n", age=30)
    out2 = engine.run("s")
    assert (out2.status, out2.batches, out2.files, out2.rows, out2.table_version) == (
        "ok", 1, 1, 1, 1)

    out3 = engine.run("s")
    assert (out3.status, out3.batches, out3.files, out3.rows, out3.skipped) == ("ok", 0, 0, 0, 0)
    assert out3.table_version == 1
    assert DeltaTable(str(table)).version() == 1

    assert rows_both(duck, table, ["id", "name", "_silta_source", "_silta_batch"]) == [
        (1, "x", "inbox:a.csv", 1), (2, "y", "inbox:a.csv", 1), (3, "z", "inbox:b.csv", 2)]
    stamps = rows_both(duck, table, ["_silta_batch", "_silta_ingested_at"])
    first = {ts for batch, ts in stamps if batch == 1}
    second = {ts for batch, ts in stamps if batch == 2}
    assert len(first) == 1 and len(second) == 1  # one timestamp per batch
    (ts1,), (ts2,) = first, second
    assert before1 <= ts1 <= after1
    assert after1 <= ts2 <= dt.datetime.now(dt.UTC)
    assert columns_both(duck, table) == ["id", "name", *LINEAGE]


def test_append_without_lineage_columns(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "lineage_columns": False}])
    put(tmp_path / "inbox", "a.csv", "id,name\n1,x\n")
    out = engine.run("s")
    table = tmp_path / "lake" / "raw" / "t"
    assert (out.status, out.rows, out.table_version) == ("ok", 1, 0)
    assert columns_both(duck, table) == ["id", "name"]
    assert rows_both(duck, table, ["id", "name"]) == [(1, "x")]


# -- 2. grouping, commit metadata, app transaction ----------------------------------------
def test_small_files_grouped_with_commit_metadata(make_engine: Any, tmp_path: Path,
                                                  duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "batch_max_files": 3}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    names = [f"f{i}.csv" for i in range(7)]
    for i, name in enumerate(names):
        put(inbox, name, f"id,v\n{i},v{i}\n", age=100 - i)
    sha = {n: hashlib.sha256((inbox / n).read_bytes()).hexdigest() for n in names}
    size = {n: (inbox / n).stat().st_size for n in names}

    out = engine.run("s")
    assert (out.status, out.batches, out.files, out.rows, out.table_version) == (
        "ok", 3, 7, 7, 2)
    dtable = DeltaTable(str(table))
    assert dtable.version() == 2
    assert dtable.transaction_version("silta/s") == 3

    history = history_by_version(table)
    assert sorted(history) == [0, 1, 2]
    groups = [names[0:3], names[3:6], names[6:7]]
    for version, group in enumerate(groups):
        h = history[version]
        assert h["silta.seq"] == str(version + 1)
        assert h["silta.sync"] == "s"
        assert h["silta.app_id"] == "silta/s"
        assert h["silta.run_id"] == out.run_id
        assert h["silta.file_count"] == str(len(group))
        assert json.loads(h["silta.files"]) == [
            {"path": n, "size": size[n], "sha256": sha[n]} for n in group]
        assert h["operationMetrics"]["num_added_rows"] == len(group)

    assert rows_both(duck, table, ["id", "v", "_silta_batch"]) == [
        (i, f"v{i}", i // 3 + 1) for i in range(7)]
    ledger = sorted(engine.state.batches("s"), key=lambda b: b["seq"])
    assert [(b["seq"], b["status"], b["files"], b["rows"], b["table_version"])
            for b in ledger] == [(1, "committed", 3, 3, 0), (2, "committed", 3, 3, 1),
                                 (3, "committed", 1, 1, 2)]


def test_batch_max_bytes_splits_batches(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    inbox = tmp_path / "inbox"
    for i in range(4):
        put(inbox, f"f{i}.csv", f"id,v\n{i},{'x' * 20}\n", age=100 - i)
    one = (inbox / "f0.csv").stat().st_size
    engine, _ = make_engine([{"name": "s", "batch_max_bytes": 2 * one}])
    out = engine.run("s")
    table = tmp_path / "lake" / "raw" / "t"
    assert (out.batches, out.files, out.rows, out.table_version) == (2, 4, 4, 1)
    assert rows_both(duck, table, ["id", "_silta_batch"]) == [(0, 1), (1, 1), (2, 2), (3, 2)]


# -- 3. redelivery ------------------------------------------------------------------------
def test_same_name_redelivered(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    path = put(inbox, "a.csv", "id,name\n1,x\n2,y\n", age=100)
    assert engine.run("s").table_version == 0

    t = time.time() - 50  # touched: same bytes, new mtime
    os.utime(path, (t, t))
    out = engine.run("s")
    assert (out.status, out.skipped, out.batches, out.rows, out.table_version) == (
        "ok", 1, 0, 0, 0)
    assert DeltaTable(str(table)).version() == 0
    again = engine.run("s")  # the new mtime is remembered: not even hashed as new
    assert (again.skipped, again.batches, again.table_version) == (0, 0, 0)

    put(inbox, "a.csv", "id,name\n1,x-new\n", age=20)  # new content, same name
    out = engine.run("s")
    assert (out.status, out.skipped, out.batches, out.files, out.rows, out.table_version) == (
        "ok", 0, 1, 1, 1, 1)
    assert rows_both(duck, table, ["id", "name", "_silta_source", "_silta_batch"]) == [
        (1, "x", "inbox:a.csv", 1), (1, "x-new", "inbox:a.csv", 2), (2, "y", "inbox:a.csv", 1)]


# -- 4. merge -----------------------------------------------------------------------------
def test_merge_upserts_on_key_and_keeps_last_duplicate(make_engine: Any, tmp_path: Path,
                                                       duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"]}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,v\n1,a\n2,b\n1,a2\n", age=100)  # duplicate key in the first batch
    out1 = engine.run("s")
    assert (out1.status, out1.table_version) == ("ok", 0)
    assert rows_both(duck, table, ["id", "v"]) == [(1, "a2"), (2, "b")]

    put(inbox, "b.csv", "id,v\n2,B\n3,c\n3,C\n", age=50)  # update 2, insert 3 (last wins)
    out2 = engine.run("s")
    assert (out2.status, out2.batches, out2.table_version) == ("ok", 1, 1)
    assert rows_both(duck, table, ["id", "v", "_silta_batch", "_silta_source"]) == [
        (1, "a2", 1, "inbox:a.csv"), (2, "B", 2, "inbox:b.csv"), (3, "C", 2, "inbox:b.csv")]
    assert duck_rows(duck, table, "SELECT v FROM t WHERE id = 3") == [("C",)]
    assert history_by_version(table)[1]["operation"] == "MERGE"
    assert DeltaTable(str(table)).transaction_version("silta/s") == 2


def test_merge_duplicate_key_across_files_of_one_batch(make_engine: Any, tmp_path: Path,
                                                       duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"]}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,v\n1,a\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "b.csv", "id,v\n1,older\n2,x\n", age=50)
    put(inbox, "c.csv", "id,v\n1,newer\n", age=40)
    out = engine.run("s")
    assert (out.batches, out.files, out.table_version) == (1, 2, 1)
    assert rows_both(duck, table, ["id", "v"]) == [(1, "newer"), (2, "x")]


# -- 5. snapshot --------------------------------------------------------------------------
def test_snapshot_replaces_and_time_travel_keeps_old(make_engine: Any, tmp_path: Path,
                                                      duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "mode": "snapshot"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "s1.csv", "id,v\n1,a\n2,b\n3,c\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "s2.csv", "id,v\n10,x\n20,y\n", age=90)
    out = engine.run("s")
    assert (out.batches, out.table_version) == (1, 1)
    assert rows_both(duck, table, ["id", "v"]) == [(10, "x"), (20, "y")]
    assert rows_both(duck, table, ["id", "v"], version=0) == [(1, "a"), (2, "b"), (3, "c")]
    old = engine.lake.read("raw/t", version=0)
    assert sorted(zip(old["id"].to_pylist(), old["v"].to_pylist(), strict=True)) == [
        (1, "a"), (2, "b"), (3, "c")]

    # two files in one run: each replaces the table in its own commit, oldest first
    put(inbox, "s3.csv", "id,v\n30,p\n", age=80)
    put(inbox, "s4.csv", "id,v\n40,q\n41,r\n", age=70)
    out = engine.run("s")
    assert (out.batches, out.files, out.table_version) == (2, 2, 3)
    assert rows_both(duck, table, ["id", "v", "_silta_source"]) == [
        (40, "q", "inbox:s4.csv"), (41, "r", "inbox:s4.csv")]
    assert rows_both(duck, table, ["id", "v"], version=2) == [(30, "p")]
    assert rows_both(duck, table, ["id", "v"], version=1) == [(10, "x"), (20, "y")]
    assert engine.lake.read("raw/t", version=1).num_rows == 2


# -- 13. two syncs, one folder ------------------------------------------------------------
def test_second_sync_other_glob_other_table(make_engine: Any, tmp_path: Path,
                                            duck: Any) -> None:
    engine, _ = make_engine([
        {"name": "all", "source": "inbox:*.csv", "target": "lake:raw/t"},
        {"name": "orders", "source": "inbox:orders_*.csv", "target": "lake:raw/orders",
         "mode": "merge", "key": ["order_id"]},
    ])
    inbox = tmp_path / "inbox"
    t_path, o_path = tmp_path / "lake" / "raw" / "t", tmp_path / "lake" / "raw" / "orders"
    put(inbox, "people.csv", "id,name\n1,x\n", age=100)
    put(inbox, "orders_1.csv", "order_id,qty\n7,1\n", age=90)

    out_o = engine.run("orders")
    assert (out_o.status, out_o.files, out_o.rows, out_o.table_version) == ("ok", 1, 1, 0)
    assert not DeltaTable.is_deltatable(str(t_path))
    out_a = engine.run("all")
    assert (out_a.status, out_a.files, out_a.rows, out_a.table_version) == ("ok", 2, 2, 0)

    put(inbox, "orders_2.csv", "order_id,qty\n7,5\n8,2\n", age=80)
    out_o = engine.run("orders")
    assert (out_o.files, out_o.table_version) == (1, 1)
    assert rows_both(duck, o_path, ["order_id", "qty", "_silta_source"]) == [
        (7, 5, "inbox:orders_2.csv"), (8, 2, "inbox:orders_2.csv")]
    # the other sync has its own ledger: it still sees orders_2.csv as new
    out_a = engine.run("all")
    assert (out_a.files, out_a.rows, out_a.table_version) == (1, 2, 1)
    assert rows_both(duck, t_path, ["_silta_source"]) == [
        ("inbox:orders_1.csv",), ("inbox:orders_2.csv",), ("inbox:orders_2.csv",),
        ("inbox:people.csv",)]
    assert DeltaTable(str(t_path)).transaction_version("silta/all") == 2
    assert DeltaTable(str(t_path)).transaction_version("silta/orders") is None
    assert DeltaTable(str(o_path)).transaction_version("silta/orders") == 2
    assert DeltaTable(str(o_path)).transaction_version("silta/all") is None


def test_merge_adds_new_column_with_schema_merge(make_engine: Any, tmp_path: Path,
                                                 duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"]}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,v\n1,a\n2,b\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "b.csv", "id,v,extra\n2,B,e2\n3,c,e3\n", age=50)
    out = engine.run("s")
    assert (out.status, out.table_version) == ("ok", 1)
    assert rows_both(duck, table, ["id", "v", "extra"]) == [
        (1, "a", None), (2, "B", "e2"), (3, "c", "e3")]


def test_merge_file_without_key_column_is_quarantined(make_engine: Any, tmp_path: Path,
                                                      duck: Any) -> None:
    """A file that lacks the key cannot be merged: it goes aside and the files after it land
    (today the run fails on it, every run, and nothing after it ever lands)."""
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"],
                              "batch_max_files": 1}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,v\n1,a\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "nokey.csv", "ident,v\n2,b\n", age=60)
    put(inbox, "ok.csv", "id,v\n3,c\n", age=50)
    out = engine.run("s")
    engine.run("s")
    assert rows_both(duck, table, ["id", "v"]) == [(1, "a"), (3, "c")]
    assert (out.status, [p for p, _ in out.quarantined], out.error) == (
        "partial", ["nokey.csv"], None)
    assert (tmp_path / "inbox" / ".silta-quarantine" / "nokey.csv").is_file()


def test_merge_keyless_file_in_mixed_batch_adds_no_null_keys(make_engine: Any, tmp_path: Path,
                                                             duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"]}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,v\n1,a\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "nokey.csv", "ident,v\n2,b\n", age=60)
    put(inbox, "ok.csv", "id,v\n3,c\n", age=50)
    out = engine.run("s")
    assert duck_rows(duck, table, "SELECT count(*) FROM t WHERE id IS NULL") == [(0,)]
    assert rows_both(duck, table, ["id", "v"]) == [(1, "a"), (3, "c")]
    assert (out.status, [p for p, _ in out.quarantined]) == ("partial", ["nokey.csv"])


def test_snapshot_same_name_back_to_earlier_content(make_engine: Any, tmp_path: Path,
                                                    duck: Any) -> None:
    """status.csv goes A -> B -> A: the table must end at A (the latest delivery)."""
    engine, _ = make_engine([{"name": "s", "mode": "snapshot"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    a, b = "id,state\n1,open\n", "id,state\n1,closed\n"
    put(inbox, "status.csv", a, age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "status.csv", b, age=90)
    assert engine.run("s").table_version == 1
    put(inbox, "status.csv", a, age=80)
    out = engine.run("s")
    assert rows_both(duck, table, ["id", "state"]) == [(1, "open")]
    assert (out.skipped, out.batches, out.table_version) == (0, 1, 2)


def test_merge_same_name_back_to_earlier_content(make_engine: Any, tmp_path: Path,
                                                 duck: Any) -> None:
    """prices.csv goes A -> B -> A under merge: the latest delivery's values must win."""
    engine, _ = make_engine([{"name": "s", "mode": "merge", "key": ["id"]}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    a, b = "id,price\n1,10\n", "id,price\n1,12\n"
    put(inbox, "prices.csv", a, age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "prices.csv", b, age=90)
    assert engine.run("s").table_version == 1
    put(inbox, "prices.csv", a, age=80)
    out = engine.run("s")
    assert rows_both(duck, table, ["id", "price"]) == [(1, 10)]
    assert (out.skipped, out.batches, out.table_version) == (0, 1, 2)
