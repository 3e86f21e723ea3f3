"""Feed one Delta table's batches into a write to another, off delta-rs' runtime.

``write_deltalake`` pulls a Python-backed ``RecordBatchReader`` from a thread of its own
tokio runtime. A batch that is made by reading a Delta table (``load_cdf``, a dataset
scan) then calls back into delta-rs from inside that runtime, which panics with "Cannot
start a runtime from within a runtime". ``off_runtime`` runs the source on a plain
thread instead and hands batches over a small queue: memory stays bounded by ``depth``
batches, errors reach the writer as they happened, and a writer that stops early (an
error, a cancelled run) stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import pyarrow as pa

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def off_runtime(schema: pa.Schema, batches: Iterable[pa.RecordBatch], depth: int = 2
                ) -> pa.RecordBatchReader:
    """A reader of ``batches`` that are produced on a thread of their own."""
    return pa.RecordBatchReader.from_batches(schema, _relay(batches, depth))


def _relay(batches: Iterable[pa.RecordBatch], depth: int) -> Iterator[pa.RecordBatch]:
    handover: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            put(_Failed(e))

    worker = threading.Thread(target=produce, name="silta-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, pa.RecordBatch)
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
