"""`silta status`: is the agent alive, and what did each sync do last."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from agent.config import LoadedConfig
from agent.lock import InstanceLock
from agent.output import print_table
from agent.state import StateStore
from agent.stores import open_lake
from connectors.errors import SiltaError, StateStoreError


def _age(ts: str | None) -> float | None:
    if not ts:
        return None
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(ts)).total_seconds()


def collect_status(loaded: LoadedConfig) -> dict[str, Any]:
    """Heartbeat and per-sync figures, as stable keys (the JSON of `silta status`)."""
    conf = loaded.config
    try:
        state: StateStore | None = StateStore(loaded.state_dir, readonly=True)
    except StateStoreError:
        state = None
    agent: dict[str, Any] = {"name": conf.agent.name, "alive": False, "state": "never started",
                             "pid": None, "since": None, "last_beat": None}
    if state is not None:
        beats = {b["agent"]: b for b in state.heartbeats()}
        beat = beats.get(conf.agent.name)
        if beat:
            age = _age(beat["beat_at"])
            fresh = age is not None and age < 3 * conf.agent.heartbeat_seconds + 5
            # A killed agent leaves a fresh heartbeat behind; the kernel freed its lock.
            held = InstanceLock(loaded.state_dir).is_held()
            alive = beat["state"] in ("running", "running-once") and fresh and held
            agent.update(alive=alive, state=beat["state"] if alive or beat["state"] == "stopped"
                         else "down (no heartbeat)", pid=beat["pid"],
                         since=beat["started_at"], last_beat=beat["beat_at"])
    lake = open_lake(loaded)
    syncs = []
    for s in conf.syncs:
        last = state.runs(name=s.name, limit=1) if state else []
        ledger = state.ledger_summary(s.name) if state else {}
        try:
            table = lake.open(s.table)
            version = table.version() if table is not None else None
        except SiltaError:
            version = None
        run = last[0] if last else {}
        syncs.append({
            "sync": s.name, "enabled": s.enabled, "schedule": s.schedule, "watch": s.watch,
            "last_run": run.get("started_at"), "outcome": run.get("status"),
            "files": run.get("files"), "rows": run.get("rows"), "error": run.get("error"),
            "total_files": ledger.get("files", 0), "total_rows": ledger.get("rows", 0),
            "quarantined": ledger.get("quarantined", 0),
            "direction": "publish" if s.publishes else "ingest",
            "verified": run.get("verified"),
            "table": s.table, "table_version": version,
        })
    return {"agent": agent, "syncs": syncs}


def print_status(status: dict[str, Any]) -> None:
    a = status["agent"]
    console = Console(file=sys.stdout, highlight=False)
    mark = "[green]alive[/]" if a["alive"] else "[red]not running[/]"
    console.print(f"agent {escape(a['name'])}: {mark} ({escape(str(a['state']))}"
                  + (f", pid {a['pid']}, since {escape(a['since'])}" if a["since"] else "")
                  + (f", last heartbeat {escape(a['last_beat'])}" if a["last_beat"] else "")
                  + ")")
    rows = [{**s, "version": s["table_version"],
             "check": (s["verified"] or "-").split(":")[0]} for s in status["syncs"]]
    print_table(rows, ["sync", "last_run", "outcome", "files", "rows", "total_rows",
                       "quarantined", "check", "version"],
                title="syncs (times in UTC)", empty="no syncs configured")
    for s in status["syncs"]:
        if s["verified"] and not s["verified"].startswith("ok"):
            console.print(f"[red]{escape(s['sync'])}: verification: {escape(s['verified'])}[/]")
