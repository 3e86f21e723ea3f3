"""off_runtime: batches made on a thread of their own, in order, errors passed on."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from connectors.prefetch import off_runtime

SCHEMA = pa.schema([("n", pa.int64())])


def _batches(count: int, seen: list[str], fail_at: int | None = None
             ) -> Iterator[pa.RecordBatch]:
    for i in range(count):
        seen.append(threading.current_thread().name)
        if i == fail_at:
            raise ValueError(f"source broke at {i}")
        yield pa.record_batch([pa.array([i, i])], schema=SCHEMA)


def test_batches_arrive_in_order_made_off_the_reading_thread() -> None:
    seen: list[str] = []
    table = off_runtime(SCHEMA, _batches(50, seen)).read_all()
    assert table["n"].to_pylist() == [i for i in range(50) for _ in range(2)]
    assert set(seen) == {"silta-prefetch"}


def test_an_error_of_the_source_reaches_the_reader() -> None:
    reader = off_runtime(SCHEMA, _batches(10, [], fail_at=3))
    got = [reader.read_next_batch()["n"][0].as_py() for _ in range(3)]
    assert got == [0, 1, 2]
    with pytest.raises(ValueError, match="source broke at 3"):
        reader.read_next_batch()


def test_a_reader_that_stops_early_stops_the_thread() -> None:
    seen: list[str] = []
    reader = off_runtime(SCHEMA, _batches(10_000, seen), depth=2)
    reader.read_next_batch()
    reader.close()  # as a writer that fails drops its reader
    del reader
    gc.collect()
    time.sleep(0.5)
    made = len(seen)
    time.sleep(0.3)
    assert len(seen) == made
    assert made < 10  # the bounded queue: a few batches ahead at most, not all 10,000
    assert not [t for t in threading.enumerate() if t.name == "silta-prefetch"]
