from __future__ import annotations

import io

import pyarrow as pa
import pytest

from connectors.errors import ParseError
from connectors.formats import (
    CsvFormat,
    conform,
    delta_type,
    parse_type_name,
    probe,
    probe_schema,
    read_batches,
    table_batches,
    unify,
    widen,
)


def opener(data: bytes):
    return lambda: io.BytesIO(data)


def test_type_names():
    assert parse_type_name("int64") == pa.int64()
    assert parse_type_name("Decimal(10, 2)") == pa.decimal128(10, 2)
    assert parse_type_name("timestamp_utc") == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValueError, match="unknown type 'money'"):
        parse_type_name("money")


@pytest.mark.parametrize(("given", "stored"), [
    (pa.null(), pa.string()), (pa.uint8(), pa.int16()), (pa.uint32(), pa.int64()),
    (pa.uint64(), pa.decimal128(20, 0)), (pa.timestamp("s"), pa.timestamp("us")),
    (pa.timestamp("ns", tz="Europe/Helsinki"), pa.timestamp("us", tz="UTC")),
    (pa.large_string(), pa.string()), (pa.dictionary(pa.int8(), pa.string()), pa.string()),
    (pa.int32(), pa.int32()),
])
def test_delta_types_are_lossless(given: pa.DataType, stored: pa.DataType):
    assert delta_type(given) == stored


def test_unify_widens_and_keeps_first_seen_order():
    a = pa.schema([("id", pa.int64()), ("x", pa.int64()), ("n", pa.null())])
    b = pa.schema([("x", pa.float64()), ("id", pa.int64()), ("n", pa.string()),
                   ("extra", pa.bool_())])
    c = pa.schema([("id", pa.string())])
    assert unify([a, b]) == pa.schema([("id", pa.int64()), ("x", pa.float64()),
                                       ("n", pa.string()), ("extra", pa.bool_())])
    assert unify([a, c]).field("id").type == pa.string()


def test_widen_steps():
    assert widen(pa.int64()) == pa.float64()
    assert widen(pa.float64()) == pa.string()
    assert widen(pa.string()) is None


def test_conform_fills_missing_columns_and_names_the_bad_one():
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    batch = pa.record_batch({"a": pa.array([1, 2], pa.int32())})
    out = conform(batch, schema)
    assert out.schema == schema and out.column(1).null_count == 2
    with pytest.raises(ParseError) as info:
        conform(pa.record_batch({"a": ["x"]}), schema)
    assert info.value.column == "a"


def test_csv_office_dialect():
    data = "\ufeffid;price;name\n1;2,5;Äänekoski\n2;10,25;\"a;b\"\n".encode()
    fmt = CsvFormat(delimiter=";", decimal=",")
    schema = probe_schema(opener(data), "csv", fmt, {})
    assert schema == pa.schema([("id", pa.int64()), ("price", pa.float64()),
                                ("name", pa.string())])
    rows = pa.Table.from_batches(list(read_batches(opener(data), "csv", fmt, schema)))
    assert rows.to_pylist() == [{"id": 1, "price": 2.5, "name": "Äänekoski"},
                                {"id": 2, "price": 10.25, "name": "a;b"}]


def test_csv_conversion_error_names_the_column():
    data = b"id,amount\n1,5\n2,five\n"
    fmt = CsvFormat()
    schema = pa.schema([("id", pa.int64()), ("amount", pa.int64())])
    with pytest.raises(ParseError) as info:
        list(read_batches(opener(data), "csv", fmt, schema))
    assert info.value.column == "amount" and "five" in str(info.value)


def test_duplicate_and_empty_column_names_are_refused():
    with pytest.raises(ParseError, match="duplicate column names"):
        probe_schema(opener(b"a,a\n1,2\n"), "csv", CsvFormat(), {})
    with pytest.raises(ParseError, match="empty name"):
        probe_schema(opener(b"a,\n1,2\n"), "csv", CsvFormat(), {})


def test_explicit_column_names_replace_the_header():
    data = b"x,y\n1,2\n"
    fmt = CsvFormat(column_names=("left", "right"), header=True)
    schema = probe_schema(opener(data), "csv", fmt, {})
    assert schema.names == ["left", "right"]
    rows = pa.Table.from_batches(list(read_batches(opener(data), "csv", fmt, schema)))
    assert rows.to_pylist() == [{"left": 1, "right": 2}]


def test_probe_whole_returns_the_rows_once_and_they_conform_like_a_stream():
    data = b"id,amount\n1,2\n2,3.5\n"
    fmt = CsvFormat()
    schema, table = probe(opener(data), "csv", fmt, {}, whole=True)
    assert schema == pa.schema([("id", pa.int64()), ("amount", pa.float64())])
    assert table is not None and table.num_rows == 2
    assert probe(opener(data), "csv", fmt, {})[1] is None  # only when asked
    wider = pa.schema([("id", pa.float64()), ("amount", pa.float64()), ("extra", pa.string())])
    cached = pa.Table.from_batches(list(table_batches(table, wider)))
    streamed = pa.Table.from_batches(list(read_batches(opener(data), "csv", fmt, wider)))
    assert cached.to_pylist() == streamed.to_pylist() == [
        {"id": 1.0, "amount": 2.0, "extra": None}, {"id": 2.0, "amount": 3.5, "extra": None}]
