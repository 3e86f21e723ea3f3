"""Content hashes of tables: the same rows give the same hash, whatever their order or layout.

Used for the training data of a model version and for replays (is a re-run's output
identical?). Rows are sorted by the key (then by the other columns, so repeated keys sort
the same way); each column is hashed on its own, so a replay can say which columns
differ. Physical layout does not count: chunking, ``string`` against ``large_string`` or
``string_view``, ``int32`` against ``int64``, ``float32`` against ``float64``; the values
and which of them are null do. Large columns are hashed by Arrow kernels, not row by row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK_ROWS = 1 << 16


def canonical_order(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """``table`` sorted by ``key``, then by the other sortable columns."""
    sortable = [f.name for f in table.schema
                if f.name not in key and _family(f.type) in ("int", "float", "str", "bool",
                                                             "time")]
    order = [(c, "ascending", "at_end") for c in [*key, *sortable]]
    # view and dictionary types are not taken or sorted by every kernel: plain copies are
    table = pa.table({c: _plain(table.column(c)) for c in table.column_names})
    if not order or table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=order))


def column_hashes(table: pa.Table, key: Sequence[str]) -> dict[str, str]:
    """sha256 of each column's values in canonical row order."""
    ordered = canonical_order(table, key)
    out: dict[str, str] = {}
    for name in ordered.column_names:
        h = hashlib.sha256()
        column = ordered.column(name)
        h.update(_family(column.type).encode())
        for start in range(0, len(column), CHUNK_ROWS):
            _update(h, column.slice(start, CHUNK_ROWS).combine_chunks())
        out[name] = h.hexdigest()
    return out


def table_hash(table: pa.Table, key: Sequence[str]) -> str:
    """One sha256 over the row count and every column's hash (names included)."""
    return combine(column_hashes(table, key), table.num_rows)


def combine(hashes: dict[str, str], rows: int) -> str:
    text = json.dumps({"rows": rows, "columns": dict(sorted(hashes.items()))},
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_binary_view(t)):
        return "str"
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or (
            pa.types.is_duration(t)):
        return "time"
    if pa.types.is_decimal(t):
        return "decimal"
    return "other"


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    t = column.type
    if pa.types.is_dictionary(t):
        column = pc.cast(column, t.value_type)
        t = t.value_type
    if pa.types.is_string_view(t):
        return pc.cast(column, pa.large_string())
    if pa.types.is_binary_view(t):
        return pc.cast(column, pa.large_binary())
    return column


def _update(h: hashlib._Hash, arr: pa.Array) -> None:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    h.update(np.packbits(valid).tobytes())
    h.update(len(arr).to_bytes(8, "little"))
    family = _family(arr.type)
    if family in ("int", "bool"):
        values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        h.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
    elif family == "float":
        values = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        values = np.where(np.isnan(values), np.nan, values)  # one NaN bit pattern
        h.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    elif family == "time":
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.timestamp("us", tz=arr.type.tz))  # ns and us spell one time
        values = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        h.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
    elif family == "str":
        binary = pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type) or (
            pa.types.is_binary_view(arr.type))
        text = pc.fill_null(arr.cast(pa.large_binary() if binary else pa.large_string()),
                            b"" if binary else "")
        lengths = pc.binary_length(text).to_numpy(zero_copy_only=False)
        h.update(np.ascontiguousarray(lengths, dtype="<i8").tobytes())
        separator = pa.scalar(b"" if binary else "", text.type)
        joined = pc.binary_join(pa.LargeListArray.from_arrays(
            pa.array([0, len(text)], pa.int64()), text), separator)
        value = joined[0].as_py()
        h.update(value if isinstance(value, bytes) else value.encode("utf-8"))
    else:  # decimals, lists, structs: their exact Python values as JSON
        h.update(json.dumps(arr.to_pylist(), default=str, sort_keys=True).encode())
