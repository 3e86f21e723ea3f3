"""Source files: schema policy, quarantine, settling and temporary names, disposal, formats."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from tests.agent.helpers import put, rows_both
from tests.conftest import duck_rows

QUARANTINE = ".silta-quarantine"





def data_columns(path: Path) -> list[str]:
    names = DeltaTable(str(path)).to_pyarrow_dataset().schema.names
    return [n for n in names if not n.startswith("_silta_")]


def ledger_files(engine: Any, sync: str) -> dict[str, str]:
    rows = engine.state.query("SELECT path, status FROM files WHERE sync=?", (sync,))
    return {r["path"]: r["status"] for r in rows}


# -- 6. schema policy ---------------------------------------------------------------------
def test_schema_merge_adds_column(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "schema": "merge"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,name\n1,x\n2,y\n", age=100)
    assert engine.run("s").table_version == 0
    put(inbox, "b.csv", "id,name,city\n3,z,Oulu\n", age=50)
    out = engine.run("s")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 1, 1)
    assert data_columns(table) == ["id", "name", "city"]
    assert rows_both(duck, table, ["id", "name", "city"]) == [
        (1, "x", None), (2, "y", None), (3, "z", "Oulu")]


def test_schema_strict_quarantines_changed_files(make_engine: Any, tmp_path: Path,
                                                 duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "schema": "strict"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id,name\n1,x\n", age=100)
    assert engine.run("s").table_version == 0

    put(inbox, "extra.csv", "id,name,city\n2,y,Oulu\n", age=60)
    put(inbox, "fewer.csv", "id\n3\n", age=55)
    put(inbox, "ok.csv", "id,name\n4,w\n", age=50)
    out = engine.run("s")
    assert out.status == "partial"
    reasons = dict(out.quarantined)
    assert sorted(reasons) == ["extra.csv", "fewer.csv"]
    assert "strict" in reasons["extra.csv"] and "city" in reasons["extra.csv"]
    assert "strict" in reasons["fewer.csv"] and "name" in reasons["fewer.csv"]
    assert (out.files, out.rows, out.table_version) == (1, 1, 1)
    assert data_columns(table) == ["id", "name"]
    assert rows_both(duck, table, ["id", "name", "_silta_source"]) == [
        (1, "x", "inbox:a.csv"), (4, "w", "inbox:ok.csv")]
    for name in ("extra.csv", "fewer.csv"):
        assert not (inbox / name).exists()
        assert (inbox / QUARANTINE / name).is_file()
        assert "strict" in (inbox / QUARANTINE / f"{name}.reason.txt").read_text()


# -- 7. quarantine ------------------------------------------------------------------------
def test_corrupt_csv_quarantined_others_land_once(make_engine: Any, tmp_path: Path,
                                                  duck: Any) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "good1.csv", "id,name,n\n1,x,10\n2,y,20\n", age=100)
    bad_bytes = b"id,name,n\n3,z,30\n4,w,40,extra,cells\n5,v,50\n"
    bad = put(inbox, "bad.csv", bad_bytes, age=90)
    bad_mtime = bad.stat().st_mtime_ns
    put(inbox, "good2.csv", "id,name,n\n6,u,60\n", age=80)

    out = engine.run("s")
    assert out.status == "partial"
    assert [p for p, _ in out.quarantined] == ["bad.csv"]
    assert (out.files, out.rows, out.table_version) == (2, 3, 0)
    assert rows_both(duck, table, ["id", "name", "n"]) == [
        (1, "x", 10), (2, "y", 20), (6, "u", 60)]
    assert not (inbox / "bad.csv").exists()
    assert (inbox / QUARANTINE / "bad.csv").read_bytes() == bad_bytes
    note = (inbox / QUARANTINE / "bad.csv.reason.txt").read_text()
    assert "file: bad.csv" in note and f"run: {out.run_id}" in note
    assert "reason: " + out.quarantined[0][1] in note
    assert ledger_files(engine, "s") == {"good1.csv": "committed", "good2.csv": "committed",
                                         "bad.csv": "quarantined"}

    later = engine.run("s")
    assert (later.status, later.quarantined, later.batches, later.table_version) == (
        "ok", [], 0, 0)
    # even put back unchanged (same bytes, same mtime), the ledger refuses it by identity
    shutil.copyfile(inbox / QUARANTINE / "bad.csv", inbox / "bad.csv")
    os.utime(inbox / "bad.csv", ns=(bad_mtime, bad_mtime))
    again = engine.run("s")
    assert (again.status, again.quarantined, again.batches, again.table_version) == (
        "ok", [], 0, 0)
    # ... and moves it aside again (a crash between recording and moving ends the same way)
    assert not (inbox / "bad.csv").exists()
    sha = hashlib.sha256(bad_bytes).hexdigest()[:12]
    assert (inbox / QUARANTINE / f"bad.csv.{sha}").read_bytes() == bad_bytes
    assert DeltaTable(str(table)).version() == 0
    assert duck_rows(duck, table, "SELECT count(*) FROM t") == [(3,)]


def test_invalid_parquet_quarantined(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "p", "source": "inbox:*.parquet", "format": "parquet"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64())}), inbox / "good.parquet")
    os.utime(inbox / "good.parquet", (time.time() - 100,) * 2)
    put(inbox, "bad.parquet", b"PAR1 this is not a parquet file at all", age=90)
    out = engine.run("p")
    assert out.status == "partial"
    assert [p for p, _ in out.quarantined] == ["bad.parquet"]
    assert (out.files, out.rows, out.table_version) == (1, 2, 0)
    assert (inbox / QUARANTINE / "bad.parquet").is_file()
    assert (inbox / QUARANTINE / "bad.parquet.reason.txt").is_file()
    assert rows_both(duck, table, ["id"]) == [(1,), (2,)]
    later = engine.run("p")
    assert (later.status, later.quarantined, later.table_version) == ("ok", [], 0)


# -- 8. settling and temporary names ------------------------------------------------------
def test_unsettled_file_waits_until_old_enough(make_engine: Any, tmp_path: Path,
                                               duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "settle_seconds": 30}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    path = put(inbox, "a.csv", "id\n1\n2\n", age=0)
    out = engine.run("s")
    assert (out.status, out.waiting, out.files, out.batches) == ("ok", 1, 0, 0)
    assert out.next_check is not None and 0 < out.next_check <= 30
    assert out.table_version is None
    assert not DeltaTable.is_deltatable(str(table))
    assert ledger_files(engine, "s") == {}

    t = time.time() - 31
    os.utime(path, (t, t))
    out = engine.run("s")
    assert (out.status, out.waiting, out.files, out.rows, out.table_version) == (
        "ok", 0, 1, 2, 0)
    assert rows_both(duck, table, ["id"]) == [(1,), (2,)]


def test_temporary_and_hidden_names_never_read(make_engine: Any, tmp_path: Path,
                                               duck: Any) -> None:
    engine, _ = make_engine([{"name": "s", "source": "inbox:*"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    ignored = ["x.tmp", "y.part", ".hidden.csv", "~$x.csv"]
    for i, name in enumerate(ignored):
        put(inbox, name, f"id,name\n{100 + i},{name}\n", age=100)
    put(inbox, "good.csv", "id,name\n1,good\n", age=100)
    out = engine.run("s")
    assert (out.status, out.files, out.rows, out.waiting, out.quarantined) == (
        "ok", 1, 1, 0, [])
    assert rows_both(duck, table, ["id", "name"]) == [(1, "good")]
    assert ledger_files(engine, "s") == {"good.csv": "committed"}
    assert all((inbox / n).exists() for n in ignored)
    assert engine.run("s").batches == 0


# -- 10. on_success -----------------------------------------------------------------------
@pytest.mark.parametrize("on_success", ["delete", "move", "keep"])
def test_on_success_disposal(make_engine: Any, tmp_path: Path, duck: Any,
                             on_success: str) -> None:
    engine, _ = make_engine([{"name": "s", "source": "inbox:**/*.csv",
                              "on_success": on_success}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    content = {"sub/a.csv": b"id\n1\n2\n", "b.csv": b"id\n3\n"}
    for i, (name, data) in enumerate(content.items()):
        put(inbox, name, data, age=100 - i)
    out = engine.run("s")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 2, 3, 0)
    for name, data in content.items():
        done = inbox / ".silta-done" / name
        if on_success == "keep":
            assert (inbox / name).read_bytes() == data and not done.exists()
        elif on_success == "move":
            assert not (inbox / name).exists() and done.read_bytes() == data
        else:
            assert not (inbox / name).exists() and not done.exists()
    again = engine.run("s")
    assert (again.status, again.files, again.skipped, again.table_version) == ("ok", 0, 0, 0)
    assert rows_both(duck, table, ["id", "_silta_source"]) == [
        (1, "inbox:sub/a.csv"), (2, "inbox:sub/a.csv"), (3, "inbox:b.csv")]
    disposed = engine.state.query("SELECT path, disposed FROM files WHERE sync='s'")
    assert {r["path"]: r["disposed"] for r in disposed} == {
        "sub/a.csv": int(on_success != "keep"), "b.csv": int(on_success != "keep")}


# -- 12. formats --------------------------------------------------------------------------
def test_parquet_source_keeps_types(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "p", "source": "inbox:*.parquet", "format": "parquet"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    pq.write_table(pa.table({
        "id": pa.array([1, 2], pa.int64()),
        "small": pa.array([7, 8], pa.int32()),
        "score": pa.array([1.5, None], pa.float64()),
        "name": pa.array(["ä", "b"], pa.string()),
        "ok": pa.array([True, False], pa.bool_()),
        "day": pa.array([dt.date(2024, 1, 31), dt.date(2024, 2, 29)], pa.date32()),
        "at": pa.array([when, when + dt.timedelta(seconds=1)], pa.timestamp("us", tz="UTC")),
    }), inbox / "a.parquet")
    os.utime(inbox / "a.parquet", (time.time() - 100,) * 2)
    out = engine.run("p")
    assert (out.status, out.rows, out.table_version) == ("ok", 2, 0)
    schema = DeltaTable(str(table)).to_pyarrow_dataset().schema
    assert [(f.name, f.type) for f in schema if not f.name.startswith("_silta_")] == [
        ("id", pa.int64()), ("small", pa.int32()), ("score", pa.float64()),
        ("name", pa.string()), ("ok", pa.bool_()), ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC"))]
    assert rows_both(duck, table, ["id", "small", "score", "name", "ok", "day", "at"]) == [
        (1, 7, 1.5, "ä", True, dt.date(2024, 1, 31), when),
        (2, 8, None, "b", False, dt.date(2024, 2, 29), when + dt.timedelta(seconds=1))]
    assert duck_rows(duck, table, "SELECT typeof(id), typeof(score), typeof(day) FROM t "
                     "LIMIT 1") == [("BIGINT", "DOUBLE", "DATE")]


def test_jsonl_source_infers_types(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    engine, _ = make_engine([{"name": "j", "source": "inbox:*.jsonl", "format": "jsonl"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    lines = [{"id": 1, "name": "a", "score": 1.5, "ok": True},
             {"id": 2, "name": "Ö", "score": 2.25, "ok": False}]
    put(inbox, "a.jsonl", "".join(json.dumps(r) + "\n" for r in lines), age=100)
    out = engine.run("j")
    assert (out.status, out.rows, out.table_version) == ("ok", 2, 0)
    schema = DeltaTable(str(table)).to_pyarrow_dataset().schema
    assert {f.name: f.type for f in schema if not f.name.startswith("_silta_")} == {
        "id": pa.int64(), "name": pa.string(), "score": pa.float64(), "ok": pa.bool_()}
    assert rows_both(duck, table, ["id", "name", "score", "ok", "_silta_source"]) == [
        (1, "a", 1.5, True, "inbox:a.jsonl"), (2, "Ö", 2.25, False, "inbox:a.jsonl")]
    put(inbox, "b.jsonl", json.dumps({"id": 3, "name": "c", "score": 3.0, "ok": True}) + "\n",
        age=50)
    out = engine.run("j")
    assert (out.rows, out.table_version) == (1, 1)
    assert duck_rows(duck, table, "SELECT count(*), sum(score) FROM t") == [(3, 6.75)]


def test_parse_error_past_probe_quarantines_only_that_file(make_engine: Any, tmp_path: Path,
                                                           duck: Any) -> None:
    """A ragged row beyond the probed first MiB fails during the commit's read: the bad file
    is taken out of the batch, and the batch is retried with the rest under the same seq."""
    engine, _ = make_engine([{"name": "s"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "good1.csv", "id,name\n1,x\n", age=100)
    body = "id,name\n" + "".join(f"{i},n{i}\n" for i in range(10, 120_000))
    assert len(body) > (1 << 20) + 100_000
    put(inbox, "late_bad.csv", body + "999,too,many,cells\n", age=90)
    put(inbox, "good2.csv", "id,name\n2,y\n", age=80)
    out = engine.run("s")
    assert out.status == "partial"
    assert [p for p, _ in out.quarantined] == ["late_bad.csv"]
    assert (out.batches, out.files, out.rows, out.table_version) == (1, 2, 2, 0)
    assert rows_both(duck, table, ["id", "name", "_silta_batch"]) == [(1, "x", 1), (2, "y", 1)]
    assert DeltaTable(str(table)).transaction_version("silta/s") == 1
    assert ledger_files(engine, "s") == {"good1.csv": "committed", "good2.csv": "committed",
                                         "late_bad.csv": "quarantined"}
    assert (inbox / QUARANTINE / "late_bad.csv").is_file()
    # the next batch gets a higher seq than every earlier one
    put(inbox, "good3.csv", "id,name\n3,z\n", age=70)
    nxt = engine.run("s")
    assert (nxt.status, nxt.files, nxt.table_version) == ("ok", 1, 1)
    assert DeltaTable(str(table)).transaction_version("silta/s") > 1
    assert duck_rows(duck, table, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]


def test_second_bad_file_with_same_name_keeps_first_quarantined_copy(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{"name": "s"}])
    inbox = tmp_path / "inbox"
    first = b"id,n\n1,2,3\n"
    put(inbox, "bad.csv", first, age=100)
    assert [p for p, _ in engine.run("s").quarantined] == ["bad.csv"]
    second = b"id,n\n4,5,6,7\n"
    put(inbox, "bad.csv", second, age=50)
    out = engine.run("s")
    assert [p for p, _ in out.quarantined] == ["bad.csv"]
    sha = hashlib.sha256(second).hexdigest()[:12]
    assert (inbox / QUARANTINE / "bad.csv").read_bytes() == first
    assert (inbox / QUARANTINE / f"bad.csv.{sha}").read_bytes() == second
    assert (inbox / QUARANTINE / f"bad.csv.{sha}.reason.txt").is_file()


@pytest.mark.parametrize("on_success", ["delete", "move"])
def test_redelivered_identical_file_is_disposed(make_engine: Any, tmp_path: Path, duck: Any,
                                                on_success: str) -> None:
    """An identical copy delivered again is skipped, and then disposed like the first one."""
    engine, _ = make_engine([{"name": "s", "on_success": on_success}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    put(inbox, "a.csv", "id\n1\n", age=100)
    assert engine.run("s").table_version == 0
    assert not (inbox / "a.csv").exists()
    put(inbox, "a.csv", "id\n1\n", age=50)  # the sender delivers the same file again
    out = engine.run("s")
    assert (out.status, out.skipped, out.batches, out.table_version) == ("ok", 1, 0, 0)
    assert rows_both(duck, table, ["id"]) == [(1,)]
    engine.run("s")
    assert not (inbox / "a.csv").exists()


def test_jsonl_integer_field_widened_by_late_decimal(make_engine: Any, tmp_path: Path,
                                                     duck: Any) -> None:
    """As for CSV: a field that looks integer in the probed first MiB and has a decimal later
    in the same file is widened to double; the file is not quarantined."""
    engine, _ = make_engine([{"name": "j", "source": "inbox:*.jsonl", "format": "jsonl"}])
    inbox, table = tmp_path / "inbox", tmp_path / "lake" / "raw" / "t"
    n = 60_000
    body = "".join(json.dumps({"id": i, "val": i}) + "\n" for i in range(n))
    assert len(body) > (1 << 20) + 100_000
    put(inbox, "a.jsonl", body + json.dumps({"id": n, "val": 1.5}) + "\n", age=100)
    out = engine.run("j")
    assert (out.status, out.quarantined, out.rows, out.table_version) == ("ok", [], n + 1, 0)
    schema = DeltaTable(str(table)).to_pyarrow_dataset().schema
    assert schema.field("val").type == pa.float64()
    assert duck_rows(duck, table, f"SELECT val FROM t WHERE id IN (5, {n}) ORDER BY id") == [
        (5.0,), (1.5,)]
