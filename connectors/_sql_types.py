"""Arrow <-> SQL types and values for :mod:`connectors.sql` (SQLite and PostgreSQL).

Catalogue types map to Arrow for reads; Arrow types map to DDL when a table is created;
values convert both ways (SQLite keeps times and decimals as text).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from connectors.errors import SchemaMismatchError
from connectors.names import safe_display

_TS = pa.timestamp("us")
_TSZ = pa.timestamp("us", tz="UTC")
_DECIMAL_CONTEXT = decimal.Context(prec=80)  # room for decimal128(38, s) and more


# -- Arrow <-> SQL types -----------------------------------------------------------------

def _decimal_or_float(precision: int | None, scale: int | None) -> pa.DataType:
    if precision is None or not 0 < precision <= 38:
        return pa.float64()
    s = scale or 0
    if not 0 <= s <= precision:
        return pa.float64()
    return pa.decimal128(precision, s)


def arrow_type_of(t: sa.types.TypeEngine[Any]) -> pa.DataType:
    """The Arrow type of a reflected SQLAlchemy column type (the PostgreSQL catalogue)."""
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):  # before Numeric: Float is a Numeric
        return pa.float64()
    if isinstance(t, sa.Numeric):
        return _decimal_or_float(t.precision, t.scale)
    if isinstance(t, sa.DateTime):
        return _TSZ if t.timezone else _TS
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.LargeBinary):
        return pa.binary()
    return pa.string()  # text, varchar, char, json, uuid, enums, arrays...


_SQLITE_DECIMAL = re.compile(r"^(?:NUMERIC|DECIMAL|NUMBER)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def sqlite_arrow_type(declared: str) -> pa.DataType:
    """The Arrow type of a SQLite column from its declared type.

    Well-known names first (SQLite stores dates and booleans under NUMERIC affinity),
    then SQLite's own affinity rules (sqlite.org/datatype3.html, section 3.1). Names
    with NUMERIC affinity that are not numbers (JSON, UUID...) and untyped columns,
    which may hold anything, are read as strings.
    """
    d = " ".join(declared.upper().split())
    if d.startswith(("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")):
        return _TSZ
    if d.startswith(("DATETIME", "TIMESTAMP")):
        return _TS
    if d == "DATE":
        return pa.date32()
    if d.startswith("BOOL"):
        return pa.bool_()
    m = _SQLITE_DECIMAL.match(d)
    if m:
        return _decimal_or_float(int(m.group(1)), int(m.group(2) or 0))
    if "INT" in d:
        return pa.int64()
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if "BLOB" in d:
        return pa.binary()
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if d.startswith(("NUMERIC", "DECIMAL", "NUMBER", "MONEY")):
        return pa.float64()
    return pa.string()


_PG_NAMES: dict[str, pa.DataType] = {
    "int2": pa.int64(), "int4": pa.int64(), "int8": pa.int64(),
    "float4": pa.float64(), "float8": pa.float64(), "bool": pa.bool_(),
    "date": pa.date32(), "timestamp": _TS, "timestamptz": _TSZ, "bytea": pa.binary(),
}


def pg_result_type(column: Any) -> pa.DataType:
    """The Arrow type of a PostgreSQL result column, from its type OID and modifier."""
    import psycopg

    info = psycopg.postgres.types.get(getattr(column, "type_code", 0))
    name = info.name if info is not None else ""
    if name == "numeric":
        return _decimal_or_float(getattr(column, "precision", None),
                                 getattr(column, "scale", None))
    return _PG_NAMES.get(name, pa.string())


def type_kind(t: pa.DataType) -> str:
    """The family of an Arrow type, for compatibility checks and value conversion."""
    if pa.types.is_dictionary(t):
        return type_kind(t.value_type)
    checks: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
        (pa.types.is_boolean, "bool"), (pa.types.is_integer, "int"),
        (pa.types.is_floating, "float"), (pa.types.is_decimal, "decimal"),
        (lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)
         or pa.types.is_string_view(x), "string"),
        (lambda x: pa.types.is_date(x), "date"), (pa.types.is_timestamp, "timestamp"),
        (lambda x: pa.types.is_binary(x) or pa.types.is_large_binary(x)
         or pa.types.is_fixed_size_binary(x) or pa.types.is_binary_view(x), "binary"),
        (pa.types.is_null, "null"),
    )
    for check, kind in checks:
        if check(t):
            return kind
    return "other"


#: which incoming kinds an existing column of a kind accepts (``other`` is sent as JSON)
ACCEPTS: dict[str, frozenset[str]] = {
    "int": frozenset({"int"}),
    "float": frozenset({"int", "float", "decimal"}),
    "decimal": frozenset({"int", "float", "decimal"}),
    "string": frozenset({"string", "other"}),
    "bool": frozenset({"bool"}),
    "date": frozenset({"date"}),
    "timestamp": frozenset({"timestamp", "date"}),
    "binary": frozenset({"binary"}),
}


def ddl_type(t: pa.DataType, dialect: str) -> str:
    """The SQL column type a new table gets for the Arrow type ``t``."""
    if pa.types.is_dictionary(t):
        return ddl_type(t.value_type, dialect)
    kind = type_kind(t)
    if kind == "bool":
        return "BOOLEAN"
    if kind == "int":
        if pa.types.is_unsigned_integer(t) and t.bit_width == 64:
            return "NUMERIC(20,0)"  # beyond BIGINT
        small = t.bit_width < 32 or (t.bit_width == 32 and pa.types.is_signed_integer(t))
        return "INTEGER" if small else "BIGINT"
    if kind == "float":
        return "DOUBLE PRECISION" if t.bit_width == 64 else "REAL"
    if kind == "decimal":
        return f"NUMERIC({t.precision},{t.scale})"
    if kind == "date":
        return "DATE"
    if kind == "timestamp":
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    if kind == "binary":
        return "BYTEA" if dialect == "postgresql" else "BLOB"
    return "TEXT"  # strings; lists, structs and the rest as JSON or text


class Declared(sa.types.UserDefinedType[Any]):
    """A column type written into CREATE TABLE as given (from :func:`ddl_type`)."""

    cache_ok = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def get_col_spec(self, **kw: Any) -> str:
        return self.spec


# -- values ------------------------------------------------------------------------------

def as_json_or_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _sqlite_timestamp(v: dt.datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    # Always with microseconds, like SQLAlchemy's SQLite DATETIME: text compares in order.
    return v.isoformat(sep=" ", timespec="microseconds")


def sqlite_value(v: Any) -> Any:
    """A Python value as SQLite stores it (dates as ISO text, decimals as exact text)."""
    if isinstance(v, dt.datetime):
        return _sqlite_timestamp(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dict | list | tuple | dt.time | dt.timedelta):
        return as_json_or_text(v)
    return v


def normalized(col: pa.Array) -> pa.Array:
    """A column whose ``to_pylist`` gives values the drivers take as they are."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if pa.types.is_timestamp(t) and t.unit != "us":
        col = col.cast(pa.timestamp("us", tz=t.tz), safe=False)
    elif pa.types.is_date64(t):
        col = col.cast(pa.date32())
    elif pa.types.is_float16(t):
        col = col.cast(pa.float32())
    return col


def _to_int(v: Any, t: pa.DataType) -> int:
    if isinstance(v, bool | int):
        return int(v)
    if isinstance(v, float | Decimal) and v == int(v):
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    raise ValueError("not a whole number")


def _to_float(v: Any, t: pa.DataType) -> float:
    return float(v)


def _to_decimal(v: Any, t: pa.DataType) -> Decimal:
    # repr() of a float is its shortest exact decimal form: 0.1 reads as 0.1, not 0.1000..01
    d = v if isinstance(v, Decimal) else Decimal(repr(v) if isinstance(v, float) else str(v))
    return d.quantize(Decimal(1).scaleb(-t.scale), context=_DECIMAL_CONTEXT)


def _to_string(v: Any, t: pa.DataType) -> str:
    if isinstance(v, bytes | memoryview):
        return bytes(v).decode("utf-8", errors="replace")
    return as_json_or_text(v)


def _to_bool(v: Any, t: pa.DataType) -> bool:
    if isinstance(v, str):
        text = v.strip().lower()
        if text in ("1", "t", "true", "y", "yes"):
            return True
        if text in ("0", "f", "false", "n", "no"):
            return False
        raise ValueError("not a boolean")
    return bool(v)


def _to_date(v: Any, t: pa.DataType) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v).strip()[:10])


def _to_timestamp(v: Any, t: pa.DataType) -> dt.datetime:
    if isinstance(v, dt.datetime):
        out = v
    elif isinstance(v, dt.date):
        out = dt.datetime.combine(v, dt.time())
    else:
        out = dt.datetime.fromisoformat(str(v).strip())
    if t.tz is not None and out.tzinfo is None:
        return out.replace(tzinfo=dt.UTC)  # SQLite keeps UTC without an offset
    return out


def _to_binary(v: Any, t: pa.DataType) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    return bytes(v)


_FROM_DB: dict[str, Callable[[Any, pa.DataType], Any]] = {
    "int": _to_int, "float": _to_float, "decimal": _to_decimal, "string": _to_string,
    "bool": _to_bool, "date": _to_date, "timestamp": _to_timestamp, "binary": _to_binary,
}
#: Python types Arrow converts exactly for each kind (``int`` into int64 would truncate floats)
_NATIVE: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (float, int), "decimal": (Decimal,), "string": (str,),
    "bool": (bool,), "date": (dt.date,), "timestamp": (dt.datetime,), "binary": (bytes,),
}


def arrow_column(values: list[Any], t: pa.DataType, name: str) -> pa.Array:
    kind = type_kind(t)
    native = _NATIVE.get(kind, ())
    data = values
    try:
        if not all(v is None or type(v) in native for v in values):
            conv: Callable[[Any, Any], Any] = _FROM_DB.get(kind, _to_string)
            data = [None if v is None else conv(v, t) for v in values]
        return pa.array(data, type=t)
    except (ValueError, TypeError, ArithmeticError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaMismatchError(
            f"column {safe_display(name)!r}: a value cannot be read as {t} ({e}); CAST the "
            "column to the type you want in a query") from e


def infer_type(values: Sequence[Any]) -> pa.DataType | None:
    """An Arrow type for values of an untyped (SQLite) query column, None if all are NULL."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return None
    if kinds <= {int, bool}:
        return pa.int64()
    if kinds <= {int, bool, float}:
        return pa.float64()
    if kinds <= {bytes}:
        return pa.binary()
    return pa.string()
