"""What a sync run reports: live progress while it runs, an outcome when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SyncProgress:
    """Live figures of a running sync, passed to the progress callback."""

    sync: str
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rows: int = 0
    batches: int = 0
    current: str = ""
    started: float = field(default_factory=time.monotonic)


ProgressCallback = Callable[[SyncProgress], None]


@dataclass
class SyncOutcome:
    """What one run of a sync did."""

    sync: str
    run_id: str
    status: str = "ok"  # ok | partial (some files quarantined) | failed | busy
    batches: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0
    skipped: int = 0
    waiting: int = 0
    next_check: float | None = None  # seconds until an unsettled file may be read
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    table_version: int | None = None
    error: str | None = None
    #: whether trying again later can succeed (a server that was down), when it failed
    retriable: bool | None = None
    #: how the result was checked after the transfer (row counts, sizes, sha256)
    verified: str | None = None
    rows_read: int = 0
    rows_checked: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "partial")

    def as_dict(self) -> dict[str, object]:
        return {
            "sync": self.sync, "run_id": self.run_id, "status": self.status,
            "batches": self.batches, "files": self.files, "rows": self.rows,
            "bytes": self.bytes, "skipped": self.skipped, "waiting": self.waiting,
            "quarantined": [{"path": p, "reason": r} for p, r in self.quarantined],
            "table_version": self.table_version, "error": self.error,
            "retriable": self.retriable, "verified": self.verified,
        }

    def summarize_verification(self, what: str = "rows") -> None:
        """Set ``verified`` from the counts: every unit checked, any mismatch named."""
        if self.mismatches:
            self.verified = "MISMATCH: " + "; ".join(self.mismatches[:5])
        elif self.rows_checked or self.batches:
            quarantined = (f"; {len(self.quarantined)} file(s) quarantined"
                           if self.quarantined else "")
            self.verified = (f"ok: {what} read {self.rows_read} = written "
                             f"{self.rows_checked}{quarantined}")
