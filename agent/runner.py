"""What every kind of sync run shares: its config, the engine's state and lake, the
outcome it reports and the progress it emits. The kinds are in ``sync.py`` (files into
the lake), ``ingest_table.py`` (SQL rows into the lake) and ``publish.py`` (lake out)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from agent.config import SyncConfig
from agent.outcome import ProgressCallback, SyncOutcome, SyncProgress

if TYPE_CHECKING:
    from agent.sync import SyncEngine

#: progress callbacks at most this often (seconds), except when forced
EMIT_EVERY = 0.2


class SyncRunner:
    """One run of one sync (state for the duration of :meth:`SyncEngine.run`)."""

    def __init__(self, engine: SyncEngine, conf: SyncConfig, run_id: str,
                 cancel: threading.Event, on_progress: ProgressCallback | None) -> None:
        self.engine = engine
        self.conf = conf
        self.run_id = run_id
        self.cancel = cancel
        self.state = engine.state
        self.lake = engine.lake
        self.app_id = f"silta/{conf.name}"
        self.table = conf.table
        self.outcome = SyncOutcome(conf.name, run_id)
        self.progress = SyncProgress(conf.name)
        self.on_progress = on_progress
        self._last_emit = 0.0

    def execute(self) -> None:
        """Do the run, filling :attr:`outcome`. Raises: SiltaError."""
        raise NotImplementedError

    def emit(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        t = time.monotonic()
        if force or t - self._last_emit > EMIT_EVERY:
            self._last_emit = t
            self.on_progress(self.progress)
