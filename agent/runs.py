"""``_silta/runs``: one row per run of any kind, in a Delta table every agent shares.

A run's record goes into the state store's outbox in the same transaction that closes
the run, and reaches the lake from there (``flush``): exactly once, even when the lake
is away for a while or the agent dies between the two steps.

The flush protocol is the sync protocol in small: unplanned records get one new
``seq`` in the outbox before anything is written; the commit carries
``Transaction("silta-runs/<store id>", seq)``; a planned seq the table already holds is
marked flushed without writing; one it lacks is written again. The store id is random
per state store, so two agents never share an app id, and a seq is never lower than the
table's last one for that id.

Sync runs that found nothing to do are not recorded here (a sync every few seconds
would add a commit each time); every run that moved data, trained, predicted or failed
is. The agent's state store keeps all of them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agent.state import StateStore
from connectors.errors import NotFoundError, SiltaError
from connectors.lake import INTERNAL_PREFIX, DeltaLake

log = logging.getLogger("silta.runs")

RUNS_TABLE = f"{INTERNAL_PREFIX}/runs"
#: a checkpoint every this many commits keeps opening the table fast
CHECKPOINT_EVERY = 50
_TS = pa.timestamp("us", tz="UTC")
RUNS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("name", pa.string()),
    ("trigger", pa.string()), ("status", pa.string()), ("agent", pa.string()),
    ("host", pa.string()), ("os_user", pa.string()), ("started_at", _TS),
    ("finished_at", _TS), ("duration_seconds", pa.float64()),
    ("inputs", pa.string()), ("outputs", pa.string()), ("model", pa.string()),
    ("model_version", pa.int64()), ("metrics", pa.string()), ("config_hash", pa.string()),
    ("code_version", pa.string()), ("error", pa.string()), ("detail", pa.string()),
])
_JSON_FIELDS = ("inputs", "outputs", "metrics", "detail")
_flush_lock = threading.Lock()


def _utc(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclass
class RunRecord:
    """What a run read, wrote and found: the row it leaves in ``_silta/runs``."""

    run_id: str
    kind: str
    name: str
    trigger: str
    status: str
    agent: str
    started_at: str
    finished_at: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    model_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    code_version: str | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    os_user: str = field(default_factory=getpass.getuser)

    def as_row(self) -> dict[str, Any]:
        """The record as plain JSON values (what the outbox stores)."""
        return {
            "run_id": self.run_id, "kind": self.kind, "name": self.name,
            "trigger": self.trigger, "status": self.status, "agent": self.agent,
            "host": self.host, "os_user": self.os_user, "started_at": self.started_at,
            "finished_at": self.finished_at, "inputs": self.inputs, "outputs": self.outputs,
            "model": self.model, "model_version": self.model_version,
            "metrics": self.metrics, "config_hash": self.config_hash,
            "code_version": self.code_version, "error": self.error, "detail": self.detail,
        }


def _arrow_rows(rows: list[dict[str, Any]]) -> pa.Table:
    out = []
    for r in rows:
        started, finished = _utc(r.get("started_at")), _utc(r.get("finished_at"))
        duration = ((finished - started).total_seconds()
                    if started is not None and finished is not None else None)
        out.append({
            **{k: r.get(k) for k in RUNS_SCHEMA.names},
            "started_at": started, "finished_at": finished, "duration_seconds": duration,
            **{k: json.dumps(r.get(k) or ({} if k in ("metrics", "detail") else []),
                             sort_keys=True, ensure_ascii=False, default=str)
               for k in _JSON_FIELDS},
        })
    return pa.Table.from_pylist(out, schema=RUNS_SCHEMA)


def flush(state: StateStore, lake: DeltaLake) -> int:
    """Write the outbox's records to ``_silta/runs``; returns how many landed now.

    Raises: SiltaError (the lake or the state store failed; the records stay queued).
    """
    with _flush_lock:
        if not state.outbox_open():
            return 0  # the common case: nothing waits, so the lake is not opened
        app_id = f"silta-runs/{state.store_id()}"
        landed = 0
        for first in (True, False):
            if not first:  # what a crash left planned is written; now plan the rest
                done = lake.committed_seq(RUNS_TABLE, app_id)
                if state.outbox_plan((done or 0) + 1) is None:
                    break
            for seq, rows in sorted(_planned(state).items()):
                result = lake.commit_batch(RUNS_TABLE, _arrow_rows(rows), app_id=app_id,
                                           seq=seq, mode="append", schema_merge=True,
                                           metadata={"silta.kind": "runs"})
                state.outbox_flushed(seq)
                if not result.already:
                    landed += len(rows)
                    _maybe_checkpoint(lake, result.version)
        return landed


def _planned(state: StateStore) -> dict[int, list[dict[str, Any]]]:
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for _run_id, row, seq in state.outbox_open():
        if seq is not None:
            by_seq.setdefault(seq, []).append(row)
    return by_seq


def flush_quietly(state: StateStore, lake: DeltaLake) -> None:
    """``flush``, logging a failure instead of raising (the records wait for next time)."""
    try:
        flush(state, lake)
    except SiltaError as e:
        log.warning("run records not written to %s yet (kept, retried later): %s",
                    RUNS_TABLE, e)


def _maybe_checkpoint(lake: DeltaLake, version: int) -> None:
    if version == 0 or version % CHECKPOINT_EVERY:
        return
    try:
        table = lake.open(RUNS_TABLE)
        if table is not None:
            table.create_checkpoint()
    except Exception as e:  # a checkpoint only speeds reading up; the commit stands
        log.warning("checkpoint of %s at version %d failed: %s", RUNS_TABLE, version, e)


def read_runs(lake: DeltaLake, *, kind: str | None = None, name: str | None = None,
              status: str | None = None, run_id: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Run records, newest first, JSON fields decoded; one row per run id."""
    table = lake.open(RUNS_TABLE)
    if table is None:
        return []
    filters = [pc.field(col) == value for col, value in
               (("kind", kind), ("name", name), ("status", status), ("run_id", run_id))
               if value is not None]
    expr = None
    for f in filters:
        expr = f if expr is None else expr & f
    data = table.to_pyarrow_dataset().to_table(filter=expr)
    rows: dict[str, dict[str, Any]] = {}
    for r in data.to_pylist():
        for k in _JSON_FIELDS:
            r[k] = json.loads(r[k]) if r.get(k) else ({} if k in ("metrics", "detail") else [])
        rows[r["run_id"]] = r  # a record written twice by hand would show once
    ordered = sorted(rows.values(), key=lambda r: (r["started_at"], r["run_id"]),
                     reverse=True)
    return ordered[:limit] if limit is not None else ordered


def get_run(lake: DeltaLake, run_id: str) -> dict[str, Any]:
    found = read_runs(lake, run_id=run_id)
    if not found:
        raise NotFoundError("run", run_id, "list runs with `silta runs list`")
    return found[0]
