"""The contract every table store fulfils, run against each of ``TABLE_STORES``.

Each test gets a fresh, empty database (``table_case``) and checks the store through its
public methods; ``case.sql`` looks at the database independently of the store.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.errors import NotFoundError, SchemaMismatchError, UnsafeNameError
from tests.connectors.conftest import TableCase

UTC = dt.UTC


def reader(table: pa.Table, max_chunksize: int | None = None) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema,
                                             table.to_batches(max_chunksize=max_chunksize))


def rows(**columns: list[Any]) -> pa.Table:
    return pa.table(columns)


def read_all(case: TableCase, **kwargs: Any) -> pa.Table:
    return case.store.read(**kwargs).read_all()


def sorted_by(table: pa.Table, column: str) -> pa.Table:
    return table.sort_by(column)


# -- types --------------------------------------------------------------------------------

def typed_sample() -> pa.Table:
    return pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "small": pa.array([7, None, -8], pa.int32()),
        "f": pa.array([1.5, None, -2.25], pa.float64()),
        "amount": pa.array([Decimal("12345.67"), Decimal("-0.01"), None], pa.decimal128(12, 2)),
        "name": pa.array(["ääkkönen", None, "x' OR '1'='1"], pa.string()),
        "flag": pa.array([True, False, None], pa.bool_()),
        "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1970, 1, 1)], pa.date32()),
        "at": pa.array([dt.datetime(2024, 1, 1, 12, 0, 0, 123456), None,
                        dt.datetime(1999, 12, 31, 23, 59, 59)], pa.timestamp("us")),
        "at_utc": pa.array([dt.datetime(2024, 6, 1, 8, 30, tzinfo=UTC), None,
                            dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)],
                           pa.timestamp("us", tz="UTC")),
        "blob": pa.array([b"\x00\x01\xff", None, b""], pa.binary()),
        "tags": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
    })


EXPECTED_SCHEMA = pa.schema([
    ("id", pa.int64()), ("small", pa.int64()), ("f", pa.float64()),
    ("amount", pa.decimal128(12, 2)), ("name", pa.string()), ("flag", pa.bool_()),
    ("day", pa.date32()), ("at", pa.timestamp("us")),
    ("at_utc", pa.timestamp("us", tz="UTC")), ("blob", pa.binary()), ("tags", pa.string()),
])


def test_every_type_round_trips(table_case: TableCase) -> None:
    data = typed_sample()
    result = table_case.store.write("typed", reader(data), mode="append", key=["id"])
    assert result.rows == 3 and not result.already

    assert table_case.store.table_schema("typed") == EXPECTED_SCHEMA
    back = sorted_by(read_all(table_case, table="typed"), "id")
    assert back.schema == EXPECTED_SCHEMA
    expected = data.set_column(1, "small", data.column("small").cast(pa.int64()))
    expected = expected.set_column(10, "tags", pa.array(["[1, 2]", None, "[]"]))
    assert back.to_pylist() == expected.to_pylist()


def test_narrow_types_widen_to_their_family(table_case: TableCase) -> None:
    data = pa.table({"i8": pa.array([1, -2], pa.int8()), "u32": pa.array([4_000_000_000, 0],
                                                                           pa.uint32()),
                     "f32": pa.array([0.5, 1.25], pa.float32()),
                     "ns": pa.array([1_700_000_000_123_456_789, 0], pa.timestamp("ns")),
                     "cat": pa.array(["a", "b"]).dictionary_encode()})
    table_case.store.write("narrow", reader(data), mode="append")
    back = read_all(table_case, table="narrow")
    assert back.schema == pa.schema([("i8", pa.int64()), ("u32", pa.int64()),
                                     ("f32", pa.float64()), ("ns", pa.timestamp("us")),
                                     ("cat", pa.string())])
    assert sorted(back.to_pylist(), key=lambda r: r["i8"]) == [
        {"i8": -2, "u32": 0, "f32": 1.25, "ns": dt.datetime(1970, 1, 1), "cat": "b"},
        {"i8": 1, "u32": 4_000_000_000, "f32": 0.5,
         "ns": dt.datetime(2023, 11, 14, 22, 13, 20, 123456), "cat": "a"},
    ]


def test_empty_table_reads_as_no_rows_with_its_schema(table_case: TableCase) -> None:
    table_case.store.write("empty", reader(typed_sample().slice(0, 0)), mode="append")
    back = table_case.store.read(table="empty")
    assert back.schema == EXPECTED_SCHEMA
    assert back.read_all().num_rows == 0


# -- listing and lookup -------------------------------------------------------------------

def test_list_tables_names_tables_and_views(table_case: TableCase) -> None:
    table_case.store.write("b_table", reader(rows(x=[1])), mode="append")
    table_case.sql("CREATE VIEW a_view AS SELECT x FROM b_table")
    assert table_case.store.list_tables() == ["a_view", "b_table"]
    assert read_all(table_case, table="a_view").to_pylist() == [{"x": 1}]
    assert "2 table(s)" in table_case.store.check()


def test_unknown_table_and_column_are_not_found(table_case: TableCase) -> None:
    table_case.store.write("measurements", reader(rows(id=[1], wm=[1])), mode="append")
    with pytest.raises(NotFoundError) as e:
        table_case.store.read(table="measurments")
    assert "measurements" in str(e.value)  # the close name is offered
    with pytest.raises(NotFoundError):
        table_case.store.table_schema("nope")
    with pytest.raises(NotFoundError):
        table_case.store.read(table="nope.measurements")
    with pytest.raises(NotFoundError) as e:
        table_case.store.read(table="measurements", watermark="w")
    assert "'wm'" in str(e.value)
    with pytest.raises(NotFoundError):
        table_case.store.read(query="SELECT id FROM measurements", watermark="wm")


# -- reads --------------------------------------------------------------------------------

def test_watermark_reads_rows_at_or_after_since_in_order(table_case: TableCase) -> None:
    wms = [5, 1, 9, 3, 7, 3]
    table_case.store.write("events", reader(rows(id=list(range(6)), wm=wms)), mode="append")
    got = read_all(table_case, table="events", watermark="wm", since=3)
    assert got.column("wm").to_pylist() == [3, 3, 5, 7, 9]
    everything = read_all(table_case, table="events", watermark="wm")
    assert everything.column("wm").to_pylist() == sorted(wms)


def test_timestamp_watermark(table_case: TableCase) -> None:
    base = dt.datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    stamps = [base + dt.timedelta(minutes=m) for m in (30, 0, 10, 20)]
    data = pa.table({"id": [1, 2, 3, 4], "at": pa.array(stamps, pa.timestamp("us", tz="UTC"))})
    table_case.store.write("ts_events", reader(data), mode="append")
    got = read_all(table_case, table="ts_events", watermark="at",
                   since=base + dt.timedelta(minutes=10))
    assert got.column("id").to_pylist() == [3, 4, 1]
    naive = pa.table({"id": [1, 2], "at": pa.array([dt.datetime(2024, 1, 1, 0, 0, 0, 500000),
                                                    dt.datetime(2024, 1, 1)],
                                                   pa.timestamp("us"))})
    table_case.store.write("naive_events", reader(naive), mode="append")
    got = read_all(table_case, table="naive_events", watermark="at",
                   since=dt.datetime(2024, 1, 1))
    assert got.column("id").to_pylist() == [2, 1]  # equal to since is included


def test_reads_stream_in_batches_of_batch_rows(table_case: TableCase) -> None:
    n = 1000
    table_case.store.write("many", reader(rows(id=list(range(n)), s=[f"r{i}" for i in range(n)]),
                                          max_chunksize=300), mode="append")
    sizes = [b.num_rows for b in table_case.store.read(table="many", watermark="id",
                                                       batch_rows=128)]
    assert sizes == [128] * 7 + [104]
    sizes = [b.num_rows for b in table_case.store.read(query="SELECT id FROM many",
                                                       batch_rows=500)]
    assert sizes == [500, 500]


def test_cancel_stops_a_read_between_batches(table_case: TableCase) -> None:
    table_case.store.write("many", reader(rows(id=list(range(100)))), mode="append")
    cancel = threading.Event()
    got = []
    for batch in table_case.store.read(table="many", batch_rows=10, cancel=cancel):
        got.append(batch.num_rows)
        cancel.set()
    assert got == [10]


def test_query_with_watermark(table_case: TableCase) -> None:
    table_case.store.write("src", reader(rows(id=[1, 2, 3, 4, 5], wm=[50, 10, 40, 20, 30],
                                              s=["ra", "rb", "x", "rc", "rd"])), mode="append")
    # Colons, percent signs and a trailing semicolon in the query are the query's own.
    query = "SELECT id, wm, 'a:b' AS lit FROM src WHERE s LIKE 'r%';"
    got = read_all(table_case, query=query, watermark="wm", since=20)
    assert got.to_pylist() == [{"id": 4, "wm": 20, "lit": "a:b"},
                               {"id": 5, "wm": 30, "lit": "a:b"},
                               {"id": 1, "wm": 50, "lit": "a:b"}]
    assert got.schema.field("id").type == pa.int64()


def test_query_column_null_in_the_first_batch_is_typed_from_later_rows(
        table_case: TableCase) -> None:
    table_case.store.write("sparse", reader(pa.table({
        "id": list(range(10)), "n": pa.array([None] * 6 + [1, 2, 3, 4], pa.int64())})),
        mode="append")
    got = read_all(table_case, query="SELECT id, n FROM sparse", watermark="id", batch_rows=3)
    assert got.schema.field("n").type == pa.int64()
    assert got.column("n").to_pylist() == [None] * 6 + [1, 2, 3, 4]


# -- writes -------------------------------------------------------------------------------

def test_append_adds_rows(table_case: TableCase) -> None:
    for _ in range(2):
        result = table_case.store.write("log", reader(rows(id=[1, 2], v=["a", "b"])),
                                        mode="append")
        assert result.rows == 2
    assert table_case.count("log") == 4


def test_merge_upserts_on_the_key(table_case: TableCase) -> None:
    store = table_case.store
    store.write("people", reader(rows(id=[1, 2, 3], name=["a", "b", "c"])), mode="merge",
                key=["id"])
    # Key 2 twice in one write: the last row wins.
    result = store.write("people", reader(rows(id=[2, 4, 2], name=["B", "d", "BB"])),
                         mode="merge", key=["id"])
    assert result.rows == 3
    got = sorted_by(read_all(table_case, table="people"), "id").to_pylist()
    assert got == [{"id": 1, "name": "a"}, {"id": 2, "name": "BB"}, {"id": 3, "name": "c"},
                   {"id": 4, "name": "d"}]


def test_merge_on_a_composite_key_of_key_columns_only(table_case: TableCase) -> None:
    store = table_case.store
    store.write("pairs", reader(rows(a=[1, 1], b=["x", "y"])), mode="merge", key=["a", "b"])
    store.write("pairs", reader(rows(a=[1, 2], b=["x", "x"])), mode="merge", key=["a", "b"])
    assert sorted(tuple(r) for r in table_case.sql("SELECT a, b FROM pairs")) == [
        (1, "x"), (1, "y"), (2, "x")]


def test_snapshot_replaces_every_row(table_case: TableCase) -> None:
    store = table_case.store
    store.write("snap", reader(rows(id=[1, 2, 3])), mode="snapshot")
    store.write("snap", reader(rows(id=[7])), mode="snapshot")
    assert table_case.sql("SELECT id FROM snap") == [(7,)]


def test_a_new_table_gets_the_key_as_primary_key(table_case: TableCase) -> None:
    table_case.store.write("keyed", reader(rows(id=[1], v=[1.0])), mode="append", key=["id"])
    with pytest.raises(sa.exc.IntegrityError):
        table_case.sql("INSERT INTO keyed (id, v) VALUES (1, 2.0)")


def test_missing_schema_is_created_where_the_database_has_schemas(
        table_case: TableCase) -> None:
    data = reader(rows(id=[1, 2]))
    if not table_case.can_create_schema:
        with pytest.raises(NotFoundError, match="schema"):
            table_case.store.write("sales.orders", data, mode="append")
        return
    table_case.store.write("sales.orders", data, mode="append")
    assert "sales.orders" in table_case.store.list_tables()
    assert table_case.count("sales.orders") == 2
    assert read_all(table_case, table="sales.orders").num_rows == 2


def test_incompatible_or_unknown_columns_are_refused(table_case: TableCase) -> None:
    store = table_case.store
    store.write("strict", reader(rows(id=[1], n=[10])), mode="append")
    with pytest.raises(SchemaMismatchError, match="'n'"):
        store.write("strict", reader(rows(id=[2], n=["ten"])), mode="append")
    with pytest.raises(SchemaMismatchError, match="extra"):
        store.write("strict", reader(rows(id=[2], n=[20], extra=[1])), mode="append")
    assert table_case.sql("SELECT id, n FROM strict") == [(1, 10)]
    # Compatible widening is fine: an integer into a float column, a date into a timestamp.
    store.write("wide", reader(pa.table({"f": [0.5], "t": pa.array([dt.datetime(2024, 1, 1)])})),
                mode="append")
    store.write("wide", reader(pa.table({"f": [2], "t": pa.array([dt.date(2024, 1, 2)])})),
                mode="append")
    assert sorted(read_all(table_case, table="wide").column("f").to_pylist()) == [0.5, 2.0]


def test_merge_needs_a_unique_key_in_the_table(table_case: TableCase) -> None:
    table_case.sql("CREATE TABLE loose (id INTEGER, v TEXT)")
    with pytest.raises(SchemaMismatchError, match="primary key"):
        table_case.store.write("loose", reader(rows(id=[1], v=["a"])), mode="merge", key=["id"])
    with pytest.raises(SchemaMismatchError, match="key"):
        table_case.store.write("loose", reader(rows(id=[1], v=["a"])), mode="merge")
    table_case.sql("CREATE UNIQUE INDEX loose_id ON loose (id)")
    for v in ("a", "b"):
        table_case.store.write("loose", reader(rows(id=[1], v=[v])), mode="merge", key=["id"])
    assert table_case.sql("SELECT id, v FROM loose") == [(1, "b")]


def test_idempotency_record_writes_once(table_case: TableCase) -> None:
    store = table_case.store
    assert store.applied_version("pub") is None
    first = store.write("pubt", reader(rows(id=[1, 2])), mode="append", idempotency=("pub", 1))
    again = store.write("pubt", reader(rows(id=[1, 2])), mode="append", idempotency=("pub", 1))
    assert (first.rows, first.already) == (2, False)
    assert (again.rows, again.already) == (0, True)
    assert table_case.count("pubt") == 2
    assert store.applied_version("pub") == 1
    store.write("pubt", reader(rows(id=[3])), mode="append", idempotency=("pub", 5))
    assert store.applied_version("pub") == 5
    assert store.applied_version("other") is None
    assert table_case.sql("SELECT name, version, rows FROM silta_applied ORDER BY version") == [
        ("pub", 1, 2), ("pub", 5, 1)]


def failing_reader(first: pa.Table) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        yield from first.to_batches()
        raise RuntimeError("source broke")

    return pa.RecordBatchReader.from_batches(first.schema, batches())


@pytest.mark.parametrize("idempotency", [None, ("half", 1)])
def test_a_failed_write_leaves_nothing_behind(table_case: TableCase,
                                              idempotency: tuple[str, int] | None) -> None:
    table_case.store.write("other", reader(rows(id=[1])), mode="append")
    with pytest.raises(RuntimeError, match="source broke"):
        table_case.store.write("halfway", failing_reader(rows(id=[1, 2])), mode="append",
                               key=["id"], idempotency=idempotency)
    assert table_case.store.list_tables() == ["other"]  # the CREATE TABLE rolled back too
    assert table_case.store.applied_version("half") is None
    with pytest.raises(RuntimeError, match="source broke"):
        table_case.store.write("other", failing_reader(rows(id=[2, 3])), mode="snapshot",
                               idempotency=idempotency)
    assert table_case.sql("SELECT id FROM other") == [(1,)]  # the DELETE rolled back
    result = table_case.store.write("halfway", reader(rows(id=[1, 2])), mode="append",
                                    key=["id"], idempotency=idempotency)
    assert (result.rows, result.already) == (2, False)


# -- untrusted names ----------------------------------------------------------------------

HOSTILE_TABLES = ["victim; DROP TABLE victim", "victim\" ; DROP TABLE victim; --",
                  "x'); DROP TABLE victim; --"]


@pytest.mark.parametrize("name", HOSTILE_TABLES)
def test_hostile_table_names_cannot_reach_sql(table_case: TableCase, name: str) -> None:
    table_case.store.write("victim", reader(rows(id=[1])), mode="append")
    with pytest.raises((NotFoundError, UnsafeNameError)):
        table_case.store.read(table=name)
    with pytest.raises((NotFoundError, UnsafeNameError)):
        table_case.store.table_schema(name)
    if '"' in name:
        with pytest.raises(UnsafeNameError):
            table_case.store.write(name, reader(rows(id=[2])), mode="append")
    else:
        # Quoted, the name is just a name: a new table with exactly that name.
        table_case.store.write(name, reader(rows(id=[2])), mode="append")
        assert name in table_case.store.list_tables()
        assert read_all(table_case, table=name).to_pylist() == [{"id": 2}]
    assert table_case.count("victim") == 1


@pytest.mark.parametrize("name", ['"a"."b"', "a.b.c", "", "bad\x00name", "tab\nle", "x" * 64])
def test_malformed_table_names_are_refused(table_case: TableCase, name: str) -> None:
    with pytest.raises(UnsafeNameError):
        table_case.store.write(name, reader(rows(id=[1])), mode="append")
    with pytest.raises(UnsafeNameError):
        table_case.store.read(table=name)


def test_hostile_column_names_are_quoted_and_harmless(table_case: TableCase) -> None:
    table_case.store.write("victim", reader(rows(id=[1])), mode="append")
    hostile = {'a"; DROP TABLE victim; --': [1, 2], "pct %(x)s %s": ["p", "q"],
               "colon :since": [10, 20], "Mixed Case": [True, False]}
    data = pa.table(hostile)
    table_case.store.write("odd", reader(data), mode="merge", key=['a"; DROP TABLE victim; --'])
    table_case.store.write("odd", reader(data), mode="merge", key=['a"; DROP TABLE victim; --'])
    assert table_case.store.table_schema("odd").names == list(hostile)
    back = read_all(table_case, table="odd", watermark="colon :since", since=15)
    assert back.to_pylist() == [{'a"; DROP TABLE victim; --': 2, "pct %(x)s %s": "q",
                                 "colon :since": 20, "Mixed Case": False}]
    back = read_all(table_case, query="SELECT * FROM odd", watermark='a"; DROP TABLE victim; --')
    assert back.num_rows == 2
    with pytest.raises(NotFoundError):
        table_case.store.read(table="odd", watermark='id" FROM victim; DROP TABLE victim; --')
    assert table_case.count("victim") == 1


def test_since_is_a_bound_value(table_case: TableCase) -> None:
    table_case.store.write("victim", reader(rows(s=["a", "m", "z"])), mode="append")
    got = read_all(table_case, table="victim", watermark="s", since="m' OR '1'='1")
    assert got.column("s").to_pylist() == ["z"]
    got = read_all(table_case, query="SELECT s FROM victim", watermark="s",
                   since="b'; DROP TABLE victim; --")
    assert got.column("s").to_pylist() == ["m", "z"]
    assert table_case.count("victim") == 3
