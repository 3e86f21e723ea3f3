"""Table maintenance: keep a busy table as fast to read in month six as on day one.

A sync every few seconds adds a small file and a log entry each time: after a day of
commits a read of the latest version opens thousands of files and replays up to 100
commits (delta-rs checkpoints every ``delta.checkpointInterval`` = 100 by itself).
Compaction (``OPTIMIZE``) rewrites the small files into few, in a commit of its own that
changes no data, and a checkpoint at that version follows, so both costs stay bounded by
``min_files``:

- the data, every version's time travel and the app transactions (exactly once) are
  untouched: the old files stay until a vacuum, which Silta never runs by itself;
- readers of changes step over it (connectors/lake_changes.py);
- killed half-way it leaves only unreferenced files; the table is as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable

log = logging.getLogger("silta.lake")

#: compact once this many files below half the target size are in the latest version
COMPACT_MIN_FILES = 20
#: the size compaction aims at (delta-rs' default is 100 MiB too)
TARGET_BYTES = 100 << 20
MARK = "silta.maintenance"


@dataclass(frozen=True)
class Compaction:
    files_removed: int
    files_added: int
    version: int


def small_files(table: DeltaTable, target_bytes: int = TARGET_BYTES) -> int:
    """How many files of the latest version are under half of ``target_bytes``."""
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=False))
    small = 0
    for batch in actions:
        sizes = batch.column("size_bytes").to_numpy(zero_copy_only=False)
        small += int((sizes < target_bytes // 2).sum())
    return small


def compact_if_due(table: DeltaTable, *, min_files: int = COMPACT_MIN_FILES,
                   target_bytes: int = TARGET_BYTES, by: str = "") -> Compaction | None:
    """Compact ``table`` when it has ``min_files`` small files (0: never); the caller
    holds the table's writer lock (the sync's own), so this never races its own writes."""
    if min_files <= 0 or small_files(table, target_bytes) < min_files:
        return None
    metrics = table.optimize.compact(
        target_size=target_bytes, max_concurrent_tasks=1,  # maintenance, not a rush
        commit_properties=CommitProperties(custom_metadata={MARK: "compact",
                                                            "silta.agent": by}))
    done = Compaction(int(metrics.get("numFilesRemoved", 0)),
                      int(metrics.get("numFilesAdded", 0)), table.version())
    # a checkpoint at the compacted version: opening the table skips the commits before it
    table.create_checkpoint()
    log.info("compacted %s: %d small files into %d (version %d)", table.table_uri,
             done.files_removed, done.files_added, done.version)
    return done
