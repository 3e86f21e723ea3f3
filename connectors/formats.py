"""File formats (CSV, Parquet, JSON lines) read as a stream of Arrow record batches.

Memory is bounded by the block size, never by the file size. Types are inferred from
the first block unless fixed by the target table or by config; :func:`unify` and
:func:`conform` give every file of a batch one schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from connectors.errors import ParseError

Format = Literal["csv", "parquet", "jsonl"]
Opener = Callable[[], BinaryIO]

PROBE_BYTES = 1 << 20
# Read-ahead is several blocks: 8 MiB blocks cost ~700 MiB of RSS on a 1 GB file, 2 MiB
# blocks ~280 MiB, at no measurable cost in speed (bench/sync_throughput.py).
DEFAULT_BLOCK_BYTES = 2 << 20


@dataclass(frozen=True)
class CsvFormat:
    """CSV dialect; the defaults read RFC 4180 files, options cover office exports."""

    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    decimal: str = "."
    header: bool = True
    column_names: tuple[str, ...] | None = None
    column_types: Mapping[str, str] = field(default_factory=dict)
    null_values: tuple[str, ...] = ("", "NA", "N/A", "NULL", "null")
    newlines_in_values: bool = True
    skip_rows: int = 0
    block_size: int = DEFAULT_BLOCK_BYTES


_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "str": pa.string(), "text": pa.string(),
    "int": pa.int64(), "int64": pa.int64(), "int32": pa.int32(), "int16": pa.int16(),
    "int8": pa.int8(), "integer": pa.int64(), "bigint": pa.int64(),
    "float": pa.float64(), "float64": pa.float64(), "double": pa.float64(),
    "float32": pa.float32(), "bool": pa.bool_(), "boolean": pa.bool_(),
    "date": pa.date32(), "timestamp": pa.timestamp("us"),
    "timestamp_utc": pa.timestamp("us", tz="UTC"), "binary": pa.binary(),
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)$")
TYPE_NAMES = (*_SIMPLE_TYPES, "decimal(P,S)")


def parse_type_name(name: str) -> pa.DataType:
    """A config type name (``int64``, ``decimal(10,2)``...) as an Arrow type."""
    key = name.strip().lower()
    if key in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[key]
    m = _DECIMAL.match(key)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    raise ValueError(f"unknown type {name!r}; use one of {', '.join(TYPE_NAMES)}")


def delta_type(t: pa.DataType) -> pa.DataType:
    """The nearest type a Delta table stores without loss."""
    if pa.types.is_null(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return delta_type(t.value_type)
    if pa.types.is_unsigned_integer(t):
        widened = {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}
        return widened.get(t.bit_width, pa.decimal128(20, 0))
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_time(t):
        return pa.string()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(delta_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in t])
    return t


def delta_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, delta_type(f.type)) for f in schema])


def widen(t: pa.DataType) -> pa.DataType | None:
    """The next wider type to try after a conversion error, or None at the top."""
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pa.float64()
    if pa.types.is_string(t):
        return None
    return pa.string()


def _common(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return pa.int64() if pa.types.is_integer(a) and pa.types.is_integer(b) else pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        return pa.timestamp("us", tz=a.tz)
    return pa.string()


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for several files: columns in first-seen order, types widened to agree."""
    fields: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            fields[f.name] = _common(fields[f.name], f.type) if f.name in fields else f.type
    return pa.schema([pa.field(n, t) for n, t in fields.items()])


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Reorder ``batch`` to ``schema``, filling columns it lacks with nulls."""
    columns = []
    for f in schema:
        idx = batch.schema.get_field_index(f.name)
        if idx < 0:
            columns.append(pa.nulls(batch.num_rows, f.type))
            continue
        col = batch.column(idx)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ParseError(f"column {f.name!r}: cannot convert {col.type} to {f.type}: {e}",
                                 column=f.name) from e
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _csv_options(csv: CsvFormat, types: Mapping[str, pa.DataType], block_size: int
                 ) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    read = pacsv.ReadOptions(
        encoding=csv.encoding, block_size=block_size, skip_rows=csv.skip_rows,
        column_names=list(csv.column_names) if csv.column_names else None,
        autogenerate_column_names=not csv.header and not csv.column_names,
        use_threads=True,
    )
    if csv.column_names and csv.header:
        read.skip_rows_after_names = 1  # the file's own header line is replaced
    parse = pacsv.ParseOptions(delimiter=csv.delimiter, quote_char=csv.quote or False,
                               newlines_in_values=csv.newlines_in_values)
    convert = pacsv.ConvertOptions(
        decimal_point=csv.decimal, column_types=dict(types),
        null_values=list(csv.null_values), strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    return read, parse, convert


_CSV_COLUMN = re.compile(r"In CSV column #(\d+): (.*)", re.S)
_JSON_CONVERT = re.compile(r"Failed to convert JSON to (\w+)")


def _parse_error(e: Exception, names: list[str] | None) -> ParseError:
    text = str(e)
    m = _CSV_COLUMN.search(text)
    if m and names is not None and int(m.group(1)) < len(names):
        column = names[int(m.group(1))]
        return ParseError(f"column {column!r}: {m.group(2).strip()}", column=column)
    return ParseError(text.strip().splitlines()[0] if text.strip() else type(e).__name__)


def _csv_names(opener: Opener, csv: CsvFormat) -> list[str] | None:
    """The file's column names, read without any type conversion (for error messages)."""
    read, parse, _ = _csv_options(csv, {}, PROBE_BYTES)
    try:
        with opener() as stream:
            names: list[str] = pacsv.open_csv(
                stream, read_options=read, parse_options=parse,
                convert_options=pacsv.ConvertOptions(column_types=None)).schema.names
            return names
    except Exception:
        return None


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError,
                 UnicodeDecodeError, LookupError, OSError)


def _fixed_types(csv: CsvFormat | None, fixed: Mapping[str, pa.DataType]
                 ) -> dict[str, pa.DataType]:
    types = dict(fixed)
    if csv is not None:
        for name, tname in csv.column_types.items():
            types[name] = parse_type_name(tname)
    return types


def probe_schema(opener: Opener, fmt: Format, csv: CsvFormat | None,
                 fixed: Mapping[str, pa.DataType]) -> pa.Schema:
    """The file's schema from its first block (Delta-normalized). Raises ParseError."""
    return probe(opener, fmt, csv, fixed)[0]


def probe(opener: Opener, fmt: Format, csv: CsvFormat | None,
          fixed: Mapping[str, pa.DataType], *, whole: bool = False
          ) -> tuple[pa.Schema, pa.Table | None]:
    """The file's schema, and with ``whole`` (for files up to PROBE_BYTES) its rows too.

    Reading a small file whole here saves parsing it a second time when it is written:
    with many small files, opening each one twice costs a quarter of the run.
    """
    types = _fixed_types(csv, fixed)
    table: pa.Table | None = None
    with opener() as stream:
        try:
            if fmt == "parquet":
                if whole:
                    table = pq.read_table(stream)
                    schema = table.schema
                else:
                    schema = pq.ParquetFile(stream).schema_arrow
            elif fmt == "jsonl":
                rdr = pajson.open_json(stream, read_options=pajson.ReadOptions(
                    block_size=PROBE_BYTES))
                schema = rdr.schema
                table = rdr.read_all() if whole else None
            else:
                assert csv is not None
                read, parse, convert = _csv_options(csv, types, PROBE_BYTES)
                rdr = pacsv.open_csv(stream, read_options=read, parse_options=parse,
                                     convert_options=convert)
                schema = rdr.schema
                table = rdr.read_all() if whole else None
        except _ARROW_ERRORS as e:
            names = _csv_names(opener, csv) if fmt == "csv" and csv is not None else None
            raise _parse_error(e, names) from e
    out = []
    for f in schema:
        t = types.get(f.name, f.type)
        out.append(pa.field(f.name, delta_type(t)))
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ParseError(f"duplicate column names {dupes}")
    if fmt == "csv" and any(not n.strip() for n in names):
        raise ParseError("a column has an empty name; fix the header or set csv.column_names")
    return pa.schema(out), table


def table_batches(table: pa.Table, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A file read whole by :func:`probe`, conformed to ``schema``. Raises ParseError."""
    for batch in table.to_batches():
        yield conform(batch, schema)


def read_batches(opener: Opener, fmt: Format, csv: CsvFormat | None,
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Stream the file as record batches conformed to ``schema``. Raises ParseError."""
    with opener() as stream:
        names: list[str] | None = None
        try:
            if fmt == "parquet":
                pf = pq.ParquetFile(stream)
                names = pf.schema_arrow.names
                source: Iterator[pa.RecordBatch] = pf.iter_batches(batch_size=65_536)
            elif fmt == "jsonl":
                explicit = pa.schema([f for f in schema])
                rdr = pajson.open_json(stream, read_options=pajson.ReadOptions(
                    block_size=DEFAULT_BLOCK_BYTES), parse_options=pajson.ParseOptions(
                    explicit_schema=explicit, unexpected_field_behavior="infer"))
                names = rdr.schema.names
                source = iter(rdr)
            else:
                assert csv is not None
                types = {f.name: f.type for f in schema}
                read, parse, convert = _csv_options(csv, types, csv.block_size)
                rdr = pacsv.open_csv(stream, read_options=read, parse_options=parse,
                                     convert_options=convert)
                names = rdr.schema.names
                source = iter(rdr)
            for batch in source:
                yield conform(batch, schema)
        except ParseError:
            raise
        except _ARROW_ERRORS as e:
            if names is None and fmt == "csv" and csv is not None:
                names = _csv_names(opener, csv)
            error = _parse_error(e, names)
            m = _JSON_CONVERT.search(str(e))
            if fmt == "jsonl" and m:
                # pyarrow's JSON reader does not name the column: offer each of that type.
                error.candidates = tuple(f.name for f in schema if str(f.type) == m.group(1))
            raise error from e


class _ChunkSink:
    """A write-only file that hands what was written to a generator, chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _decimal_comma(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Float and decimal columns as text with ``,`` as the decimal separator."""
    import pyarrow.compute as pc

    columns = []
    for col in batch.columns:
        if pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
            col = pc.replace_substring(pc.cast(col, pa.string()), ".", ",")
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def write_chunks(reader: pa.RecordBatchReader, fmt: Format, csv: CsvFormat | None = None
                 ) -> Iterator[bytes]:
    """``reader`` encoded as one file of ``fmt``, yielded in chunks (streamed, not buffered).

    CSV honours the dialect's delimiter, quote, header, encoding and decimal separator.
    """
    import json

    sink = _ChunkSink()
    if fmt == "parquet":
        with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                if chunk := sink.drain():
                    yield chunk
        yield sink.drain()
        return
    if fmt == "jsonl":
        for batch in reader:
            lines = [json.dumps(row, ensure_ascii=False, default=str, sort_keys=False)
                     for row in batch.to_pylist()]
            if lines:
                yield ("\n".join(lines) + "\n").encode("utf-8")
        return
    dialect = csv or CsvFormat()
    options = pacsv.WriteOptions(include_header=dialect.header, delimiter=dialect.delimiter,
                                 quoting_style="needed" if dialect.quote else "none")
    import codecs

    # One encoder for the whole file: a BOM (utf-8-sig, utf-16) is written once, at the start.
    utf8 = codecs.lookup(dialect.encoding).name == "utf-8"
    encoder = codecs.getincrementalencoder(dialect.encoding)(errors="replace")
    first = True
    for batch in reader:
        if dialect.decimal == ",":
            batch = _decimal_comma(batch)
        out = pa.BufferOutputStream()
        pacsv.write_csv(batch, out, write_options=options if first else pacsv.WriteOptions(
            include_header=False, delimiter=dialect.delimiter,
            quoting_style="needed" if dialect.quote else "none"))
        first = False
        data = out.getvalue().to_pybytes()
        yield data if utf8 else encoder.encode(data.decode("utf-8"))
    if first and dialect.header:
        # No rows at all: still a valid file with its header line.
        out = pa.BufferOutputStream()
        pacsv.write_csv(reader.schema.empty_table(), out, write_options=options)
        data = out.getvalue().to_pybytes()
        yield data if utf8 else encoder.encode(data.decode("utf-8"))
    if not utf8:
        yield encoder.encode("", final=True)
