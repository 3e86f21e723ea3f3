"""Column profiles built from a stream of record batches: what monitors compare.

One pass over a table (or a window of it) fills a profile per column: row and null
counts, and, by kind, the numeric values (exact KS and Wasserstein need the whole
sorted sample: 8 bytes a value), the category counts, or the text lengths and token
counts (and, when asked, the count of each whole text: for an `allowed` rule). Memory
is one batch plus what the profiles keep, never the table's other columns.

A floating-point NaN is a missing value, like a null: it counts in ``nulls`` and is not
among the numbers (it has no place on the axis the range and drift are measured along).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agent.ml.drift import TextProfile, count_values

Kind = str  # "numeric" | "categorical" | "text"


def is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


@dataclass
class ColumnProfile:
    """What one pass saw of one column."""

    kind: Kind
    rows: int = 0
    #: nulls, and NaNs of a numeric column
    nulls: int = 0
    #: count each value of a text column too (categorical columns always are)
    count_texts: bool = False
    _chunks: list[np.ndarray] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    text: TextProfile = field(default_factory=TextProfile)

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        self.rows += len(values)
        self.nulls += values.null_count
        if self.kind == "numeric":
            numbers = np.asarray(pc.cast(pc.drop_null(values), pa.float64()),
                                 dtype=np.float64)
            nan = np.isnan(numbers)
            if nan.any():
                self.nulls += int(nan.sum())
                numbers = numbers[~nan]
            self._chunks.append(numbers)
        elif self.kind == "text":
            self.text.add(pc.cast(values, pa.string()))
        if self.kind == "categorical" or (self.kind == "text" and self.count_texts):
            for k, v in count_values(values).items():
                self.counts[k] = self.counts.get(k, 0) + v

    @property
    def values(self) -> np.ndarray:
        """The non-null numbers seen (one array; the chunks are joined once)."""
        if len(self._chunks) != 1:
            joined = np.concatenate(self._chunks) if self._chunks else np.empty(0)
            self._chunks = [joined]
        return self._chunks[0]

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


def profile_batches(batches: Iterable[pa.RecordBatch], kinds: dict[str, Kind],
                    count_texts: Collection[str] = ()) -> tuple[int, dict[str, ColumnProfile]]:
    """(rows, a profile per column of ``kinds``) from one pass over ``batches``.

    ``count_texts``: text columns whose whole values are counted as well.
    """
    profiles = {c: ColumnProfile(k, count_texts=c in count_texts) for c, k in kinds.items()}
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for column, profile in profiles.items():
            profile.add(batch.column(column))
    return rows, profiles
