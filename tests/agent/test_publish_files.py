"""Publish: a Delta table's new rows out to an on-prem folder, one file per version range.

The source tables are written with deltalake directly (the lake side is not under test);
the published files are read back with pyarrow and json, independently of Silta's writer.
Crashes are simulated by a store that raises a BaseException at a chosen point (the
engine only catches Exception, so the run stops there like a killed process) and by
setting up the ledger and the folder by hand.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from agent.status import collect_status
from connectors.abc import FileInfo
from connectors.folder import FolderStore
from tests.agent.helpers import put

PUB: dict[str, Any] = {"name": "pub", "source": "lake:out/codes",
                       "target": "inbox:outgoing/codes_{version}.csv", "mode": "append"}
SEMICOLON = {"delimiter": ";", "decimal": ","}
COLUMNS = ["id", "code", "share"]
Row = tuple[int, str | None, float]

SCHEMA = pa.schema([
    pa.field("id", pa.int64()), pa.field("code", pa.string()),
    pa.field("share", pa.float64()), pa.field("_silta_source", pa.string()),
    pa.field("_silta_batch", pa.int64()),
])


def table_path(root: Path) -> Path:
    return root / "lake" / "out" / "codes"


def commit(root: Path, rows: list[Row], *, batch: int = 1, cdf: bool = False) -> int:
    """Append ``rows`` (with lineage columns) as one Delta commit; returns its version."""
    data = pa.table({
        "id": [r[0] for r in rows], "code": [r[1] for r in rows],
        "share": [r[2] for r in rows], "_silta_source": [f"inbox:f{batch}.csv"] * len(rows),
        "_silta_batch": [batch] * len(rows),
    }, schema=SCHEMA)
    uri = str(table_path(root))
    config = {"delta.enableChangeDataFeed": "true"} if cdf else None
    write_deltalake(uri, data, mode="append", configuration=config)
    return int(DeltaTable(uri).version())


def rows_of(first: int, last: int) -> list[Row]:
    return [(i, f"C{i:03d}", i * 0.25) for i in range(first, last + 1)]


def outgoing(root: Path) -> list[str]:
    """Every entry of the publish folder, hidden (temporary) ones included."""
    folder = root / "inbox" / "outgoing"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def read_csv(path: Path, *, delimiter: str = ",", decimal: str = ".") -> pa.Table:
    return pacsv.read_csv(
        path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
        convert_options=pacsv.ConvertOptions(decimal_point=decimal))


def sorted_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    names = table.column_names
    return sorted(tuple(r[c] for c in names) for r in table.to_pylist())


def ledger(engine: Any) -> list[tuple[int, str, int | None, int | None]]:
    return [(b["seq"], b["status"], b["table_version"], b["rows"])
            for b in sorted(engine.state.batches("pub"), key=lambda b: b["seq"])]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. incremental ---------------------------------------------------------------------------
def test_append_publishes_each_new_version_range_once_as_one_csv(make_engine: Any,
                                                                 tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "csv": SEMICOLON}])
    assert commit(tmp_path, rows_of(1, 3)) == 0

    first = engine.run("pub")
    assert (first.status, first.error, first.batches, first.files, first.rows,
            first.table_version) == ("ok", None, 1, 1, 3, 0)
    assert outgoing(tmp_path) == ["codes_0.csv"]
    file0 = tmp_path / "inbox" / "outgoing" / "codes_0.csv"
    data = read_csv(file0, delimiter=";", decimal=",")
    assert data.column_names == COLUMNS  # lineage columns stay in the lake
    assert sorted_rows(data) == [(1, "C001", 0.25), (2, "C002", 0.5), (3, "C003", 0.75)]
    assert first.bytes == file0.stat().st_size
    content0 = file0.read_bytes()
    assert b"0,25" in content0 and b"0.25" not in content0  # the decimal comma, as configured

    assert commit(tmp_path, rows_of(4, 5), batch=2) == 1
    assert commit(tmp_path, [(6, "C;6", 1.5)], batch=3) == 2
    second = engine.run("pub")
    assert (second.status, second.batches, second.files, second.rows,
            second.table_version) == ("ok", 1, 1, 3, 2)
    assert outgoing(tmp_path) == ["codes_0.csv", "codes_2.csv"]
    assert file0.read_bytes() == content0
    data = read_csv(tmp_path / "inbox" / "outgoing" / "codes_2.csv", delimiter=";",
                    decimal=",")
    assert data.column_names == COLUMNS
    assert sorted_rows(data) == [(4, "C004", 1.0), (5, "C005", 1.25), (6, "C;6", 1.5)]

    idle = engine.run("pub")
    assert (idle.status, idle.batches, idle.files, idle.rows, idle.table_version) == (
        "ok", 0, 0, 0, 2)
    assert outgoing(tmp_path) == ["codes_0.csv", "codes_2.csv"]
    assert ledger(engine) == [(1, "committed", 0, 3), (2, "committed", 2, 3)]
    details = [json.loads(b["detail"]) for b in sorted(engine.state.batches("pub"),
                                                       key=lambda b: b["seq"])]
    assert [(d["from_version"], d["to_version"], d["target"], d["tmp"]) for d in details] == [
        (0, 0, "outgoing/codes_0.csv", "outgoing/.codes_0.csv.silta-0.tmp"),
        (1, 2, "outgoing/codes_2.csv", "outgoing/.codes_2.csv.silta-2.tmp")]


def test_columns_select_and_order_the_published_columns_parquet_inferred(
        make_engine: Any, tmp_path: Path) -> None:
    engine, loaded = make_engine([{**PUB, "target": "inbox:outgoing/codes_{version}.parquet",
                                   "columns": ["code", "id", "_silta_batch"]}])
    assert loaded.config.syncs[0].file_format == "parquet"
    commit(tmp_path, rows_of(1, 2), batch=7)
    out = engine.run("pub")
    assert (out.status, out.files, out.rows) == ("ok", 1, 2)
    assert outgoing(tmp_path) == ["codes_0.parquet"]
    data = pq.read_table(tmp_path / "inbox" / "outgoing" / "codes_0.parquet")
    assert data.column_names == ["code", "id", "_silta_batch"]
    assert [str(t) for t in data.schema.types][1:] == ["int64", "int64"]
    assert sorted_rows(data) == [("C001", 1, 7), ("C002", 2, 7)]

    commit(tmp_path, [(3, "C003", 0.0)], batch=8)
    commit(tmp_path, [(4, None, 9.5)], batch=9)
    assert (engine.run("pub").rows, outgoing(tmp_path)) == (
        2, ["codes_0.parquet", "codes_2.parquet"])
    data = pq.read_table(tmp_path / "inbox" / "outgoing" / "codes_2.parquet")
    assert sorted(data.to_pylist(), key=lambda r: r["id"]) == [
        {"code": "C003", "id": 3, "_silta_batch": 8},
        {"code": None, "id": 4, "_silta_batch": 9}]


def test_jsonl_with_both_version_placeholders(make_engine: Any, tmp_path: Path) -> None:
    engine, loaded = make_engine([{
        **PUB, "target": "inbox:outgoing/codes_{from_version}-{to_version}.jsonl"}])
    assert loaded.config.syncs[0].file_format == "jsonl"
    commit(tmp_path, rows_of(1, 2))
    commit(tmp_path, [(3, "Ä ö\n\"q\"", 2.5)], batch=2)
    assert engine.run("pub").rows == 3
    commit(tmp_path, [(4, "C004", -0.125)], batch=3)
    assert engine.run("pub").rows == 1
    assert outgoing(tmp_path) == ["codes_0-1.jsonl", "codes_2-2.jsonl"]

    def lines(name: str) -> list[dict[str, Any]]:
        text = (tmp_path / "inbox" / "outgoing" / name).read_text(encoding="utf-8")
        assert text.endswith("\n")
        return sorted((json.loads(line) for line in text.splitlines()), key=lambda r: r["id"])

    assert lines("codes_0-1.jsonl") == [
        {"id": 1, "code": "C001", "share": 0.25}, {"id": 2, "code": "C002", "share": 0.5},
        {"id": 3, "code": "Ä ö\n\"q\"", "share": 2.5}]
    assert lines("codes_2-2.jsonl") == [{"id": 4, "code": "C004", "share": -0.125}]


def test_csv_with_a_bom_encoding_has_one_bom_at_the_start(make_engine: Any,
                                                          tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "csv": {"encoding": "utf-8-sig"}}])
    for b in range(1, 4):  # three commits: three data files, three record batches
        commit(tmp_path, rows_of(b * 10, b * 10 + 1), batch=b)
    assert engine.run("pub").rows == 6
    raw = (tmp_path / "inbox" / "outgoing" / "codes_2.csv").read_bytes()
    bom = b"\xef\xbb\xbf"
    assert raw.startswith(bom)
    assert raw.count(bom) == 1, raw
    data = pacsv.read_csv(io.BytesIO(raw[len(bom):]))
    assert data.column_names == COLUMNS
    assert sorted_rows(data) == sorted(rows_of(10, 11) + rows_of(20, 21) + rows_of(30, 31))


def test_a_column_that_is_not_in_the_table_fails_the_run_before_anything_is_planned(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "columns": ["id", "colour"]}])
    commit(tmp_path, rows_of(1, 1))
    out = engine.run("pub")
    assert out.status == "failed"
    assert out.error == (
        "sync 'pub': column(s) ['colour'] are not in table 'out/codes'; its columns: id, code, "
        "share, _silta_source, _silta_batch")
    assert (outgoing(tmp_path), ledger(engine)) == ([], [])
    (run,) = engine.state.runs(name="pub")
    assert (run["kind"], run["status"], run["error"]) == ("publish", "failed", out.error)


def test_the_date_placeholder_is_the_utc_date_of_the_run(make_engine: Any,
                                                        tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "target": "inbox:outgoing/{date}/codes_{version}.csv"}])
    commit(tmp_path, rows_of(1, 1))
    before = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert engine.run("pub").files == 1
    after = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    folders = sorted(p.name for p in (tmp_path / "inbox" / "outgoing").iterdir())
    assert len(folders) == 1 and folders[0] in {before, after}, folders
    published = tmp_path / "inbox" / "outgoing" / folders[0] / "codes_0.csv"
    assert sorted_rows(read_csv(published)) == rows_of(1, 1)


def test_a_stop_request_mid_write_leaves_no_file_and_the_next_run_publishes_once(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    for b in range(1, 4):  # three data files: the stop lands between record batches
        commit(tmp_path, rows_of(b * 10, b * 10 + 2), batch=b)
    stop = threading.Event()
    out = engine.run("pub", cancel=stop, on_progress=lambda _progress: stop.set())
    assert (out.status, out.files, out.rows) == ("failed", 0, 0)
    assert out.error == ("stopped before the publish was complete; it is written again on "
                         "the next run")
    assert outgoing(tmp_path) == [".codes_2.csv.silta-2.tmp"]  # removed by the next run
    assert [(s, st) for s, st, _ in engine.state.open_units("pub")] == [(1, "pending")]

    again = engine.run("pub")
    assert (again.status, again.files, again.rows, again.table_version) == ("ok", 1, 9, 2)
    assert outgoing(tmp_path) == ["codes_2.csv"]
    published = read_csv(tmp_path / "inbox" / "outgoing" / "codes_2.csv")
    assert sorted_rows(published) == rows_of(10, 12) + rows_of(20, 22) + rows_of(30, 32)
    assert ledger(engine) == [(1, "abandoned", None, None), (2, "committed", 2, 9)]


# -- 2. OPTIMIZE and the change data feed -------------------------------------------------------
@pytest.mark.parametrize("cdf", [False, True], ids=["file-diff", "change-feed"])
def test_optimize_is_stepped_over_and_never_republishes(make_engine: Any, tmp_path: Path,
                                                        cdf: bool) -> None:
    engine, _ = make_engine([{**PUB, "csv": SEMICOLON}])
    commit(tmp_path, rows_of(1, 2), cdf=cdf)
    commit(tmp_path, rows_of(3, 3), batch=2)
    assert engine.run("pub").rows == 3
    uri = str(table_path(tmp_path))

    DeltaTable(uri).optimize.compact()
    assert DeltaTable(uri).version() == 2
    assert len(DeltaTable(uri).file_uris()) == 1
    after_optimize = engine.run("pub")
    assert (after_optimize.status, after_optimize.files, after_optimize.rows,
            after_optimize.table_version) == ("ok", 0, 0, 2)
    assert outgoing(tmp_path) == ["codes_1.csv"]

    # new rows, then a compaction, then more rows: only the new rows go out
    commit(tmp_path, rows_of(4, 5), batch=3)
    DeltaTable(uri).optimize.compact()
    commit(tmp_path, rows_of(6, 6), batch=4)
    assert DeltaTable(uri).version() == 5
    out = engine.run("pub")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 3, 5)
    assert outgoing(tmp_path) == ["codes_1.csv", "codes_5.csv"]
    published = read_csv(tmp_path / "inbox" / "outgoing" / "codes_5.csv", delimiter=";",
                         decimal=",")
    assert sorted_rows(published) == rows_of(4, 6)

    # a range that ends with a compaction
    commit(tmp_path, rows_of(7, 7), batch=5)
    DeltaTable(uri).optimize.compact()
    out = engine.run("pub")
    assert (out.files, out.rows, out.table_version) == (1, 1, 7)
    published = read_csv(tmp_path / "inbox" / "outgoing" / "codes_7.csv", delimiter=";",
                         decimal=",")
    assert sorted_rows(published) == rows_of(7, 7)
    assert ledger(engine) == [(1, "committed", 1, 3), (2, "committed", 2, 0),
                              (3, "committed", 5, 3), (4, "committed", 7, 1)]


def test_change_feed_publishes_only_inserted_and_updated_rows_of_a_merge(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "target": "inbox:outgoing/codes_{version}.parquet"}])
    commit(tmp_path, rows_of(1, 4), cdf=True)
    assert engine.run("pub").rows == 4
    uri = str(table_path(tmp_path))

    upsert = pa.table({"id": [2, 3, 9], "code": ["C002", "X003", "C009"],
                       "share": [0.5, 7.0, 2.25], "_silta_source": ["m"] * 3,
                       "_silta_batch": [2] * 3}, schema=SCHEMA)
    (DeltaTable(uri).merge(upsert, "t.id = s.id", source_alias="s", target_alias="t")
     .when_matched_update_all().when_not_matched_insert_all().execute())
    out = engine.run("pub")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 3, 1)
    data = pq.read_table(tmp_path / "inbox" / "outgoing" / "codes_1.parquet")
    # row 2 was "updated" to the same values: still a post-image in the feed
    assert sorted_rows(data) == [(2, "C002", 0.5), (3, "X003", 7.0), (9, "C009", 2.25)]

    DeltaTable(uri).delete("id = 1")
    out = engine.run("pub")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 0, 0, 2)
    assert outgoing(tmp_path) == ["codes_0.parquet", "codes_1.parquet"]


# -- 3. snapshot ------------------------------------------------------------------------------
def test_snapshot_writes_the_whole_table_at_its_version_each_time(make_engine: Any,
                                                                  tmp_path: Path) -> None:
    engine, _ = make_engine([
        {**PUB, "target": "inbox:outgoing/codes.csv", "mode": "snapshot"},
        {**PUB, "name": "snap", "target": "inbox:outgoing/codes_{version}.parquet",
         "mode": "snapshot"}])
    commit(tmp_path, rows_of(1, 2))
    assert (engine.run("pub").rows, engine.run("snap").rows) == (2, 2)
    fixed = tmp_path / "inbox" / "outgoing" / "codes.csv"
    assert sorted_rows(read_csv(fixed)) == rows_of(1, 2)

    commit(tmp_path, rows_of(3, 3), batch=2)
    DeltaTable(str(table_path(tmp_path))).update({"code": "'Z001'"}, predicate="id = 1")
    pub, snap = engine.run("pub"), engine.run("snap")
    assert (pub.status, pub.files, pub.rows, pub.table_version) == ("ok", 1, 3, 2)
    assert (snap.status, snap.files, snap.rows, snap.table_version) == ("ok", 1, 3, 2)
    expected = [(1, "Z001", 0.25), (2, "C002", 0.5), (3, "C003", 0.75)]
    assert sorted_rows(read_csv(fixed)) == expected
    assert outgoing(tmp_path) == ["codes.csv", "codes_0.parquet", "codes_2.parquet"]
    assert sorted_rows(pq.read_table(fixed.with_name("codes_0.parquet"))) == rows_of(1, 2)
    assert sorted_rows(pq.read_table(fixed.with_name("codes_2.parquet"))) == expected

    idle = engine.run("pub")
    assert (idle.batches, idle.files, idle.rows) == (0, 0, 0)
    assert [d for d in (json.loads(b["detail"]) for b in engine.state.batches("pub"))
            if d["after"] is not None] == []


# -- 4. crash recovery -------------------------------------------------------------------------
class Crash(BaseException):
    """The process dies here (the engine catches Exception only)."""


class CrashingStore(FolderStore):
    """A folder whose ``write_atomic`` dies at one point of the publish protocol."""

    def __init__(self, path: Path, at: str) -> None:
        super().__init__(path)
        self.at = at

    def write_atomic(self, path: str, chunks: Iterable[bytes], *, tmp_name: str | None = None,
                     on_staged: Callable[[FileInfo], None] | None = None) -> FileInfo:
        if self.at == "writing":
            def first_chunk_only() -> Iterator[bytes]:
                for chunk in chunks:
                    yield chunk[: len(chunk) // 2]
                    raise Crash

            return super().write_atomic(path, first_chunk_only(), tmp_name=tmp_name,
                                        on_staged=on_staged)
        if self.at == "staged":
            def staged_then_die(info: FileInfo) -> None:
                assert on_staged is not None
                on_staged(info)
                raise Crash

            return super().write_atomic(path, chunks, tmp_name=tmp_name,
                                        on_staged=staged_then_die)
        super().write_atomic(path, chunks, tmp_name=tmp_name, on_staged=on_staged)
        raise Crash  # renamed; the ledger never heard of it


def crash_at(engine: Any, tmp_path: Path, at: str) -> None:
    engine.stores["inbox"] = CrashingStore(tmp_path / "inbox", at)
    with pytest.raises(Crash):
        engine.run("pub")


def test_pending_unit_with_a_partial_temp_file_is_written_again_once(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([{**PUB, "csv": SEMICOLON}])
    commit(tmp_path, rows_of(1, 2))
    commit(tmp_path, rows_of(3, 4), batch=2)
    crash_at(engine, tmp_path, "writing")
    tmp = tmp_path / "inbox" / "outgoing" / ".codes_1.csv.silta-1.tmp"
    assert outgoing(tmp_path) == [tmp.name]
    ((seq, status, detail),) = engine.state.open_units("pub")
    assert (seq, status, detail["tmp"], detail["target"]) == (
        1, "pending", "outgoing/.codes_1.csv.silta-1.tmp", "outgoing/codes_1.csv")
    partial_size = tmp.stat().st_size
    assert partial_size > 0

    restarted, _ = make_engine([{**PUB, "csv": SEMICOLON}])
    out = restarted.run("pub")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 4, 1)
    assert outgoing(tmp_path) == ["codes_1.csv"]
    data = read_csv(tmp.with_name("codes_1.csv"), delimiter=";", decimal=",")
    assert sorted_rows(data) == rows_of(1, 4)
    assert tmp.with_name("codes_1.csv").stat().st_size > partial_size
    assert ledger(restarted) == [(1, "abandoned", None, None), (2, "committed", 1, 4)]
    assert restarted.state.open_units("pub") == []
    assert restarted.run("pub").files == 0


def test_pending_unit_from_the_ledger_and_newer_versions_are_published_in_one_file(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    commit(tmp_path, rows_of(1, 2))
    # the crash, set up by hand: unit planned, half a temporary file under its recorded name
    detail = {"kind": "publish", "after": None, "from_version": 0, "to_version": 0,
              "mode": "append", "columns": COLUMNS, "target": "outgoing/codes_0.csv",
              "tmp": "outgoing/.codes_0.csv.silta-0.tmp"}
    assert engine.state.plan_unit("pub", "crashed-run", detail) == 1
    partial = tmp_path / "inbox" / "outgoing" / ".codes_0.csv.silta-0.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"id,code,share\n1,C0")
    commit(tmp_path, rows_of(3, 3), batch=2)  # the table moved on while the agent was down

    out = engine.run("pub")
    assert (out.status, out.files, out.rows, out.table_version) == ("ok", 1, 3, 1)
    assert outgoing(tmp_path) == ["codes_1.csv"]
    assert sorted_rows(read_csv(partial.with_name("codes_1.csv"))) == rows_of(1, 3)
    assert ledger(engine) == [(1, "abandoned", None, None), (2, "committed", 1, 3)]


def test_staged_unit_with_its_complete_temp_file_is_renamed_not_written_again(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    commit(tmp_path, rows_of(1, 3))
    crash_at(engine, tmp_path, "staged")
    tmp = tmp_path / "inbox" / "outgoing" / ".codes_0.csv.silta-0.tmp"
    assert outgoing(tmp_path) == [tmp.name]
    staged_bytes = tmp.read_bytes()
    ((seq, status, detail),) = engine.state.open_units("pub")
    assert (seq, status, detail["staged_size"], detail["sha256"]) == (
        1, "staged", len(staged_bytes), sha256(tmp))

    restarted, _ = make_engine([PUB])
    out = restarted.run("pub")
    assert (out.status, out.error, out.files) == ("ok", None, 0)
    assert outgoing(tmp_path) == ["codes_0.csv"]
    final = tmp.with_name("codes_0.csv")
    assert final.read_bytes() == staged_bytes
    assert sorted_rows(read_csv(final)) == rows_of(1, 3)
    assert restarted.state.open_units("pub") == []
    (unit,) = restarted.state.batches("pub")
    assert (unit["status"], unit["table_version"], unit["bytes"]) == (
        "committed", 0, len(staged_bytes))
    assert json.loads(unit["detail"])["verified"] is True
    # what the unit published counts in the totals `silta status` shows
    assert restarted.state.ledger_summary("pub")["rows"] == 3

    commit(tmp_path, rows_of(4, 4), batch=2)
    again = restarted.run("pub")
    assert (again.files, again.rows) == (1, 1)
    assert outgoing(tmp_path) == ["codes_0.csv", "codes_1.csv"]
    assert sorted_rows(read_csv(tmp.with_name("codes_1.csv"))) == rows_of(4, 4)


def test_staged_unit_whose_file_was_renamed_and_taken_is_committed_not_written_again(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    commit(tmp_path, rows_of(1, 3))
    crash_at(engine, tmp_path, "renamed")
    assert outgoing(tmp_path) == ["codes_0.csv"]
    assert [(s, st) for s, st, _ in engine.state.open_units("pub")] == [(1, "staged")]
    taken = (tmp_path / "inbox" / "outgoing" / "codes_0.csv").read_bytes()
    (tmp_path / "inbox" / "outgoing" / "codes_0.csv").unlink()  # the consumer took it
    assert sorted_rows(pacsv.read_csv(io.BytesIO(taken))) == rows_of(1, 3)

    restarted, _ = make_engine([PUB])
    out = restarted.run("pub")
    assert (out.status, out.error, out.files, out.rows) == ("ok", None, 0, 0)
    assert outgoing(tmp_path) == []
    assert ledger(restarted)[0][:3] == (1, "committed", 0)
    assert restarted.state.open_units("pub") == []
    assert (restarted.run("pub").files, outgoing(tmp_path)) == (0, [])


def test_staged_unit_whose_temp_file_has_the_wrong_size_is_left_for_an_operator(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    commit(tmp_path, rows_of(1, 3))
    crash_at(engine, tmp_path, "staged")
    tmp = tmp_path / "inbox" / "outgoing" / ".codes_0.csv.silta-0.tmp"
    size = tmp.stat().st_size
    tmp.write_bytes(b"truncated")

    restarted, _ = make_engine([PUB])
    out = restarted.run("pub")
    assert out.status == "failed"
    assert out.error == (f"staged file outgoing/.codes_0.csv.silta-0.tmp has 9 bytes, {size} "
                         "were written; leaving it for an operator to inspect")
    assert outgoing(tmp_path) == [tmp.name]
    assert [(s, st) for s, st, _ in restarted.state.open_units("pub")] == [(1, "staged")]


def test_a_staged_file_changed_while_the_agent_was_down_is_reported_after_the_rename(
        make_engine: Any, tmp_path: Path) -> None:
    engine, _ = make_engine([PUB])
    commit(tmp_path, rows_of(1, 3))
    crash_at(engine, tmp_path, "staged")
    tmp = tmp_path / "inbox" / "outgoing" / ".codes_0.csv.silta-0.tmp"
    raw = tmp.read_bytes()
    tmp.write_bytes(raw.replace(b"C001", b"X001"))  # same size, other content

    restarted, _ = make_engine([PUB])
    out = restarted.run("pub")
    assert out.status == "partial"
    assert out.verified is not None and out.verified.startswith(
        "MISMATCH: outgoing/codes_0.csv: wrote"), out
    (run,) = [r for r in restarted.state.runs(name="pub") if r["id"] == out.run_id]
    assert (run["status"], run["verified"]) == ("partial", out.verified)


# -- 5. verification ---------------------------------------------------------------------------
class TamperedStore(FolderStore):
    """A target whose read-back differs from what was written (same size, other bytes)."""

    def open_read(self, path: str) -> BinaryIO:
        with super().open_read(path) as f:
            data = f.read()
        return cast(BinaryIO, io.BytesIO(b"#" * len(data)))


def test_the_verification_is_in_the_outcome_the_run_record_and_status(
        make_engine: Any, tmp_path: Path) -> None:
    engine, loaded = make_engine([PUB])
    commit(tmp_path, rows_of(1, 3))
    out = engine.run("pub")
    assert out.verified == "ok: rows read 3 = written 3"
    (run,) = engine.state.runs(name="pub")
    assert (run["id"], run["kind"], run["status"], run["verified"], run["files"],
            run["rows"], run["table_version"]) == (
        out.run_id, "publish", "ok", "ok: rows read 3 = written 3", 1, 3, 0)
    (unit,) = engine.state.batches("pub")
    detail = json.loads(unit["detail"])
    final = tmp_path / "inbox" / "outgoing" / "codes_0.csv"
    assert (detail["verified"], detail["sha256"], detail["staged_size"]) == (
        True, sha256(final), final.stat().st_size)

    (status,) = collect_status(loaded)["syncs"]
    assert (status["sync"], status["direction"], status["outcome"], status["verified"],
            status["table"], status["table_version"], status["rows"]) == (
        "pub", "publish", "ok", "ok: rows read 3 = written 3", "out/codes", 0, 3)


def test_a_target_that_reads_back_other_bytes_is_a_mismatch_and_the_run_partial(
        make_engine: Any, tmp_path: Path) -> None:
    engine, loaded = make_engine([PUB])
    engine.stores["inbox"] = TamperedStore(tmp_path / "inbox")
    commit(tmp_path, rows_of(1, 3))
    out = engine.run("pub")
    final = tmp_path / "inbox" / "outgoing" / "codes_0.csv"
    size = final.stat().st_size
    wrong = hashlib.sha256(b"#" * size).hexdigest()
    expected = (f"MISMATCH: outgoing/codes_0.csv: wrote {size} bytes sha256 "
                f"{sha256(final)[:12]}, target has {size} bytes sha256 {wrong[:12]}")
    assert (out.status, out.error, out.verified) == ("partial", None, expected)
    (run,) = engine.state.runs(name="pub")
    assert (run["status"], run["verified"]) == ("partial", expected)
    (unit,) = engine.state.batches("pub")
    assert json.loads(unit["detail"])["verified"] is False
    (status,) = collect_status(loaded)["syncs"]
    assert (status["outcome"], status["verified"]) == ("partial", expected)


# -- ingest then publish in one engine -----------------------------------------------------------
def test_a_merge_ingest_then_a_publish_sends_only_the_changed_rows(make_engine: Any,
                                                                   tmp_path: Path) -> None:
    # Tables Silta creates have the change data feed on (connectors/lake_changes.py), so an
    # upsert's untouched rows, rewritten into new data files by the merge, are not new rows.
    ingest = {"name": "in", "source": "inbox:in/*.csv", "target": "lake:out/codes",
              "mode": "merge", "key": ["id"]}
    engine, _ = make_engine([ingest, PUB])
    put(tmp_path / "inbox", "in/a.csv", "id,code,share\n1,C001,0.25\n2,C002,0.5\n3,C003,0.75\n",
        age=100)
    assert engine.run("in").table_version == 0
    first = engine.run("pub")
    assert (first.status, first.rows, outgoing(tmp_path)) == ("ok", 3, ["codes_0.csv"])

    put(tmp_path / "inbox", "in/b.csv", "id,code,share\n2,X002,5.5\n4,C004,1.0\n", age=50)
    assert engine.run("in").table_version == 1
    assert sorted(DeltaTable(str(table_path(tmp_path))).to_pyarrow_dataset().to_table(
        columns=["id", "code"]).to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "code": "C001"}, {"id": 2, "code": "X002"}, {"id": 3, "code": "C003"},
        {"id": 4, "code": "C004"}]
    second = engine.run("pub")
    assert (second.status, second.files, second.table_version) == ("ok", 1, 1)
    published = read_csv(tmp_path / "inbox" / "outgoing" / "codes_1.csv")
    assert sorted_rows(published) == [(2, "X002", 5.5), (4, "C004", 1.0)]
    assert second.rows == 2
