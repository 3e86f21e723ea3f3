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
    #: (name made safe to show, reason) of files the store refused to read (unsafe names)
    refused: list[tuple[str, str]] = field(default_factory=list)
    table_version: int | None = None
    error: str | None = None
    #: whether trying again later can succeed (a server that was down), when it failed
    retriable: bool | None = None
    #: how the result was checked after the transfer (row counts, sizes, sha256)
    verified: str | None = None
    rows_read: int = 0
    rows_checked: int = 0
    #: rows read again that the target already held (a SQL source's overlap)
    rows_skipped: int = 0
    #: rows of a merge batch whose key came again later in the batch (the last one is kept)
    rows_duplicate: int = 0
    #: rows read but left for the next run (a stop between commits)
    rows_left: int = 0
    #: rows that cannot be landed safely (a SQL source's rows without a watermark value)
    rows_invalid: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "partial")

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "sync", "name": self.sync,
            "sync": self.sync, "run_id": self.run_id, "status": self.status,
            "batches": self.batches, "files": self.files, "rows": self.rows,
            "bytes": self.bytes, "skipped": self.skipped, "waiting": self.waiting,
            "quarantined": [{"path": p, "reason": r} for p, r in self.quarantined],
            "refused": [{"path": p, "reason": r} for p, r in self.refused],
            "table_version": self.table_version, "error": self.error,
            "retriable": self.retriable, "verified": self.verified,
        }

    def summarize_verification(self, what: str = "rows") -> None:
        """Set ``verified`` from the counts: every unit checked, any mismatch named."""
        accounted = (self.rows_checked + self.rows_skipped + self.rows_duplicate
                     + self.rows_left + self.rows_invalid)
        if self.rows_read != accounted and not self.mismatches:
            self.mismatches.append(f"{what} read {self.rows_read}, but accounted for "
                                   f"{accounted} (written {self.rows_checked})")
        if self.mismatches:
            self.verified = "MISMATCH: " + "; ".join(self.mismatches[:5])
        elif self.rows_read or self.batches:
            extra = "".join([
                f" + {self.rows_skipped} already in the target" if self.rows_skipped else "",
                f" + {self.rows_duplicate} repeated key(s), the last kept"
                if self.rows_duplicate else "",
                f" + {self.rows_left} left for the next run" if self.rows_left else "",
                f" + {self.rows_invalid} without a watermark value (not landed)"
                if self.rows_invalid else "",
                f"; {len(self.quarantined)} file(s) quarantined" if self.quarantined else ""])
            self.verified = (f"ok: {what} read {self.rows_read} = written "
                             f"{self.rows_checked}{extra}")


@dataclass
class JobOutcome:
    """What one run of a training or a prediction did (sent back from its worker process)."""

    kind: str  # train | predict
    name: str
    run_id: str
    status: str = "ok"  # ok | skipped (nothing to do, or waiting) | failed | busy
    #: a new model version or new predictions: the jobs that follow this one run
    committed: bool = False
    rows: int = 0
    model: str | None = None
    model_version: int | None = None
    table: str | None = None
    table_version: int | None = None
    message: str = ""
    error: str | None = None
    retriable: bool | None = None
    inputs: list[dict[str, object]] = field(default_factory=list)
    outputs: list[dict[str, object]] = field(default_factory=list)
    metrics: dict[str, object] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)
    config_hash: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind, "name": self.name, "run_id": self.run_id,
            "status": self.status, "committed": self.committed, "rows": self.rows,
            "model": self.model, "model_version": self.model_version, "table": self.table,
            "table_version": self.table_version, "message": self.message,
            "error": self.error, "retriable": self.retriable, "metrics": self.metrics,
            **({"alerts": self.detail["alerts"], "retrain": self.detail.get("retrain", [])}
               if "alerts" in self.detail else {}),
        }
