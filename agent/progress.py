"""Progress of long work: a live bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from agent.outcome import SyncProgress
from agent.state import StateStore
from connectors.errors import SiltaError

log = logging.getLogger("silta.progress")
PLAIN_EVERY = 5.0


class ProgressReporter:
    """Pass :meth:`update` as the engine's progress callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.live = sys.stderr.isatty()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_plain = 0.0

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TextColumn("{task.fields[rows]:,} rows"),
                TimeElapsedColumn(), console=Console(file=sys.stderr), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, rows=0)
        return self

    def update(self, p: SyncProgress) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=p.bytes_done,
                             total=p.bytes_total or None, rows=p.rows)
            return
        t = time.monotonic()
        if t - self._last_plain >= PLAIN_EVERY and p.bytes_done:
            self._last_plain = t
            elapsed = max(t - p.started, 1e-6)
            log.info("sync=%s progress: %d/%d files, %.1f/%.1f MiB, %d rows, %.1f MiB/s",
                     p.sync, p.files_done, p.files_total, p.bytes_done / 2**20,
                     p.bytes_total / 2**20, p.rows, p.bytes_done / 2**20 / elapsed)

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()


class ProgressRecorder:
    """A progress callback that writes the figures to the state store for the TUI.

    At most one write per ``every`` seconds (and the last one): a sync's progress is
    advisory, so a write that fails is logged once and otherwise ignored.
    """

    def __init__(self, state: StateStore, job: str, every: float = 1.0) -> None:
        self.state, self.job, self.every = state, job, every
        self._last = 0.0
        self._warned = False

    def __call__(self, p: SyncProgress) -> None:
        t = time.monotonic()
        if t - self._last < self.every:
            return
        self._last = t
        elapsed = max(t - p.started, 1e-6)
        detail = {"files_done": p.files_done, "files_total": p.files_total,
                  "bytes_done": p.bytes_done, "bytes_total": p.bytes_total, "rows": p.rows,
                  "batches": p.batches, "bytes_per_s": p.bytes_done / elapsed,
                  "rows_per_s": p.rows / elapsed, "elapsed_s": elapsed}
        try:
            self.state.record_progress(self.job, detail)
        except SiltaError as e:
            if not self._warned:
                log.warning("%s: live progress not recorded: %s", self.job, e)
                self._warned = True
