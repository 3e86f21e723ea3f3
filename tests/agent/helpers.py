"""Helpers shared by the engine tests: files with old mtimes, tables read two ways."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from tests.conftest import duck_rows


def put(folder: Path, name: str, data: str | bytes, *, age: float = 60.0) -> Path:
    """Write ``name`` under ``folder`` with an mtime ``age`` seconds in the past."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def _key(row: tuple[Any, ...]) -> list[tuple[bool, Any]]:
    return [(v is None, v) for v in row]


def rows_both(duck: Any, path: Path, cols: list[str], version: int | None = None
              ) -> list[tuple[Any, ...]]:
    """Rows of ``cols`` read by deltalake, checked equal to what DuckDB reads; sorted.

    DuckDB reads the latest version only, so an older ``version`` is read by deltalake alone.
    """
    data = DeltaTable(str(path), version=version).to_pyarrow_dataset().to_table(columns=cols)
    from_delta = sorted((tuple(r[c] for c in cols) for r in data.to_pylist()), key=_key)
    if version is None:
        sql = "SELECT " + ", ".join(f'"{c}"' for c in cols) + " FROM t"
        assert sorted(duck_rows(duck, path, sql), key=_key) == from_delta
    return from_delta
