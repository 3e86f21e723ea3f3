"""CSV options through the whole sync: dialects, encodings, headers, types, widening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from connectors.formats import CsvFormat, probe_schema
from tests.agent.helpers import put, rows_both
from tests.conftest import duck_rows


def types_of(path: Path) -> dict[str, pa.DataType]:
    schema = DeltaTable(str(path)).to_pyarrow_dataset().schema
    return {f.name: f.type for f in schema if not f.name.startswith("_silta_")}


def probed_type(path: Path, column: str) -> pa.DataType:
    """The type the engine's probe infers for ``column`` (from the file's first MiB)."""
    return probe_schema(lambda: open(path, "rb"), "csv", CsvFormat(), {}).field(column).type


def sync_one(make_engine: Any, tmp_path: Path, data: str | bytes, csv: dict[str, Any],
             name: str = "a.csv") -> Path:
    """Sync one file with the given [syncs.csv] options; returns the table path."""
    engine, _ = make_engine([{"name": "s", "csv": csv}])
    put(tmp_path / "inbox", name, data)
    out = engine.run("s")
    assert (out.status, out.quarantined, out.files, out.table_version) == ("ok", [], 1, 0), (
        out.error, out.quarantined)
    return tmp_path / "lake" / "raw" / "t"


def test_semicolon_and_decimal_comma(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    table = sync_one(make_engine, tmp_path, "id;temp;label\n1;37,5;a\n2;-0,25;b\n",
                     {"delimiter": ";", "decimal": ","})
    assert types_of(table) == {"id": pa.int64(), "temp": pa.float64(), "label": pa.string()}
    assert rows_both(duck, table, ["id", "temp", "label"]) == [(1, 37.5, "a"), (2, -0.25, "b")]


def test_cp1252_encoding(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    data = "id,nimi\n1,Äiti\n2,Jyväskylä ö\n".encode("cp1252")
    assert b"\xc4" in data  # really not UTF-8
    table = sync_one(make_engine, tmp_path, data, {"encoding": "cp1252"})
    assert rows_both(duck, table, ["id", "nimi"]) == [(1, "Äiti"), (2, "Jyväskylä ö")]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_bom_not_in_first_column_name(make_engine: Any, tmp_path: Path, duck: Any,
                                      encoding: str) -> None:
    data = "\ufeffid,kunta\n1,Pori\n2,Töölö\n".encode()
    assert data.startswith(b"\xef\xbb\xbf")
    table = sync_one(make_engine, tmp_path, data, {"encoding": encoding})
    assert list(types_of(table)) == ["id", "kunta"]
    assert types_of(table)["id"] == pa.int64()
    assert rows_both(duck, table, ["id", "kunta"]) == [(1, "Pori"), (2, "Töölö")]


def test_quoted_newlines_inside_values(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    data = 'id,text\n1,"line one\nline two"\n2,"say ""hi"", ok"\n3,plain\n'
    table = sync_one(make_engine, tmp_path, data, {})
    assert rows_both(duck, table, ["id", "text"]) == [
        (1, "line one\nline two"), (2, 'say "hi", ok'), (3, "plain")]


def test_no_header_with_column_names(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    table = sync_one(make_engine, tmp_path, "1,Helsinki\n2,Oulu\n",
                     {"header": False, "column_names": ["id", "city"]})
    assert list(types_of(table)) == ["id", "city"]
    assert rows_both(duck, table, ["id", "city"]) == [(1, "Helsinki"), (2, "Oulu")]


def test_column_names_replace_header_line(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    table = sync_one(make_engine, tmp_path, "ID (raw),Town\n1,Helsinki\n2,Oulu\n",
                     {"column_names": ["id", "city"]})
    assert list(types_of(table)) == ["id", "city"]
    assert rows_both(duck, table, ["id", "city"]) == [(1, "Helsinki"), (2, "Oulu")]


def test_column_types_keep_leading_zeros(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    table = sync_one(make_engine, tmp_path, "zip,city,n\n00100,Helsinki,1\n90100,Oulu,2\n",
                     {"column_types": {"zip": "string", "n": "int32"}})
    assert types_of(table) == {"zip": pa.string(), "city": pa.string(), "n": pa.int32()}
    assert rows_both(duck, table, ["zip", "city", "n"]) == [
        ("00100", "Helsinki", 1), ("90100", "Oulu", 2)]


def test_integer_column_widened_by_late_decimal(make_engine: Any, tmp_path: Path,
                                                duck: Any) -> None:
    n = 150_000
    head = "id,val\n" + "".join(f"{i},{i}\n" for i in range(n))
    assert len(head) > (1 << 20) + 100_000  # the decimal is well past the probed first MiB
    put(tmp_path, "probe.csv", head + f"{n},1.5\n")
    assert probed_type(tmp_path / "probe.csv", "val") == pa.int64()  # so the read must widen
    table = sync_one(make_engine, tmp_path, head + f"{n},1.5\n", {})
    assert types_of(table) == {"id": pa.int64(), "val": pa.float64()}
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id), typeof(max(val)) "
                     "FROM t") == [(n + 1, n + 1, "DOUBLE")]
    assert duck_rows(duck, table, f"SELECT id, val FROM t WHERE id IN (7, {n}) ORDER BY id"
                     ) == [(7, 7.0), (n, 1.5)]
    data = DeltaTable(str(table)).to_pyarrow_dataset().to_table(columns=["id", "val"])
    assert data.num_rows == n + 1
    assert data.filter(pa.compute.equal(data["id"], n))["val"].to_pylist() == [1.5]
    assert pa.compute.sum(data["val"]).as_py() == sum(range(n)) + 1.5


def test_widen_retry_when_decimal_after_first_read_block(make_engine: Any, tmp_path: Path,
                                                         duck: Any) -> None:
    """The decimal sits past the 8 MiB read block: batches already streamed are discarded."""
    n = 1_100_000
    head = "id,val\n" + "".join(f"{i},{i % 1000}\n" for i in range(n))
    assert len(head) > (8 << 20) + 100_000
    put(tmp_path, "probe.csv", head + f"{n},2.5\n")
    assert probed_type(tmp_path / "probe.csv", "val") == pa.int64()
    table = sync_one(make_engine, tmp_path, head + f"{n},2.5\n", {})
    assert types_of(table)["val"] == pa.float64()
    assert DeltaTable(str(table)).version() == 0
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id), sum(val) FROM t") == [
        (n + 1, n + 1, float(sum(i % 1000 for i in range(n))) + 2.5)]


def test_skip_rows_and_null_values(make_engine: Any, tmp_path: Path, duck: Any) -> None:
    data = "Report 2024\nexported by X\nid,score,note\n1,NA,a\n2,3,\n3,-,c\n"
    table = sync_one(make_engine, tmp_path, data,
                     {"skip_rows": 2, "null_values": ["NA", "-", ""]})
    assert types_of(table) == {"id": pa.int64(), "score": pa.int64(), "note": pa.string()}
    assert rows_both(duck, table, ["id", "score", "note"]) == [
        (1, None, "a"), (2, 3, None), (3, None, "c")]
