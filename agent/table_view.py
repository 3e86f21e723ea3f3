"""What an operator reads about one lake table: its summary and the change between versions.

Headless and read-only (the CLI's `tables list` and the TUI's tables screen use it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from connectors.lake import DeltaLake, history_summary

#: rows shown of what a version added or removed
DIFF_SAMPLE_ROWS = 20


def table_summary(lake: DeltaLake, name: str) -> dict[str, Any]:
    """Version, rows, columns and last commit; an unreadable table says why, not raises."""
    try:
        table = lake.require(name)
        last = table.history(limit=1)
        summary = history_summary(last[0]) if last else {}
        return {"table": name, "version": table.version(), "rows": _row_count(table),
                "columns": len(table.schema().fields),
                "last_commit": summary.get("timestamp"),
                "last_operation": summary.get("operation"), "error": None}
    except Exception as e:  # one unreadable table must not hide the others
        first = str(e).splitlines()[0] if str(e) else repr(e)
        return {"table": name, "version": None, "rows": None, "columns": None,
                "last_commit": None, "last_operation": None, "error": f"unreadable: {first}"}


def _row_count(table: DeltaTable) -> int:
    """Rows from the log's per-file statistics (0.2 ms, where counting through a dataset
    takes 20); a file written without statistics makes it count the dataset."""
    counts = _files(table).values()
    if None in counts:
        return int(table.to_pyarrow_dataset().count_rows())
    return _total(counts)


def _total(counts: Iterable[int | None]) -> int:
    return sum(n or 0 for n in counts)


def _files(table: DeltaTable) -> dict[str, int | None]:
    """Data file path -> its row count from the log's statistics (None: no statistics)."""
    # from the C stream, not pa.table(): that one imports pandas (0.3 s) to rule it out
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    rows = (actions.column("num_records").to_pylist() if "num_records" in
            actions.column_names else [None] * actions.num_rows)
    return {str(p): None if n is None else int(n)
            for p, n in zip(actions.column("path").to_pylist(), rows, strict=True)}


def _sample(lake: DeltaLake, name: str, version: int, paths: list[str]) -> list[dict[str, Any]]:
    """The first rows of some of ``paths`` at ``version`` (files of a Delta version)."""
    if not paths:
        return []
    import pyarrow.dataset as ds

    table = lake.require(name, version)
    dataset = table.to_pyarrow_dataset()
    wanted = set(paths)
    fragments = [f for f in dataset.get_fragments()
                 if any(f.path.endswith(p) for p in wanted)]
    out: list[dict[str, Any]] = []
    for fragment in fragments:
        part = ds.dataset([fragment.path], schema=dataset.schema, format="parquet",
                          filesystem=fragment.filesystem)
        out += part.head(DIFF_SAMPLE_ROWS - len(out)).to_pylist()
        if len(out) >= DIFF_SAMPLE_ROWS:
            break
    return out


def table_diff(lake: DeltaLake, name: str, older: int, newer: int) -> dict[str, Any]:
    """What changed from ``older`` to ``newer``: rows in data files added and removed
    (a rewrite, such as a merge, shows its rows both removed and added), a sample of
    each, and the schema's added, removed and retyped columns."""
    if older > newer:
        older, newer = newer, older
    a, b = lake.require(name, older), lake.require(name, newer)
    before, after = _files(a), _files(b)
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    schema_a = {f.name: str(f.type) for f in pa.schema(a.schema().to_arrow())}
    schema_b = {f.name: str(f.type) for f in pa.schema(b.schema().to_arrow())}
    return {
        "table": name, "older": older, "newer": newer,
        "files_added": len(added), "files_removed": len(removed),
        "rows_added": _total(after[p] for p in added),
        "rows_removed": _total(before[p] for p in removed),
        "rows_before": _total(before.values()), "rows_after": _total(after.values()),
        "columns_added": sorted(c for c in schema_b if c not in schema_a),
        "columns_removed": sorted(c for c in schema_a if c not in schema_b),
        "columns_retyped": sorted((c, schema_a[c], schema_b[c]) for c in schema_a
                                  if c in schema_b and schema_a[c] != schema_b[c]),
        "sample_added": _sample(lake, name, newer, added),
        "sample_removed": _sample(lake, name, older, removed),
    }
