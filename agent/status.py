"""`silta status`: is the agent alive, what did each job do last, which alerts are open."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from agent.config import LoadedConfig
from agent.lock import InstanceLock
from agent.ml.config import PredictionConfig, TrainingConfig
from agent.ml.monitor_config import MonitorConfig
from agent.output import print_table
from agent.scheduling import next_fire
from agent.state import StateStore
from agent.stores import open_lake
from connectors.errors import SiltaError, StateStoreError
from connectors.lake import DeltaLake
from connectors.names import safe_display


def _age(ts: str | None) -> float | None:
    if not ts:
        return None
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(ts)).total_seconds()


def _next(schedule: str | None, now: dt.datetime | None) -> str | None:
    fire = next_fire(schedule, now) if schedule else None
    return fire.astimezone(dt.UTC).isoformat(timespec="seconds") if fire else None


def agent_state(loaded: LoadedConfig, state: StateStore | None) -> dict[str, Any]:
    """Is the agent alive: its heartbeat is fresh and its instance lock is held."""
    conf = loaded.config
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
    return agent


def collect_status(loaded: LoadedConfig, now: dt.datetime | None = None) -> dict[str, Any]:
    """Heartbeat and per-sync figures, as stable keys (the JSON of `silta status`);
    ``now`` (default: the clock) is when next runs are counted from."""
    try:
        state: StateStore | None = StateStore(loaded.state_dir, readonly=True)
    except StateStoreError:
        state = None
    try:
        return _collect(loaded, state, now)
    finally:
        if state is not None:
            state.close()


def _collect(loaded: LoadedConfig, state: StateStore | None, now: dt.datetime | None
             ) -> dict[str, Any]:
    conf = loaded.config
    agent = agent_state(loaded, state)
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
            "next_run": _next(s.schedule, now) if s.enabled else None,
        })
    return {"agent": agent, "syncs": syncs, "jobs": _jobs(loaded, state, lake, now),
            "alerts": _alerts(loaded, state)}


def _alerts(loaded: LoadedConfig, state: StateStore | None) -> dict[str, Any]:
    """Open alerts by severity, and the few most severe (newest first within a severity)."""
    from agent.alerts import OPEN, AlertBook

    if state is None:
        return {"open": 0, "by_severity": {}, "latest": []}
    found = AlertBook(state, loaded.config.alerts).find(states=OPEN, limit=1000)
    by_severity: dict[str, int] = {}
    for a in found:
        by_severity[a["severity"]] = by_severity.get(a["severity"], 0) + 1
    latest = [{"alert": a["id"], "severity": a["severity"], "state": a["state"],
               "what": f"{a['monitor']} / {a['check']} / {a['target']}",
               "since": a["first_seen"], "count": a["count"]}
              for a in sorted(found, key=_most_severe)[:5]]
    return {"open": len(found), "by_severity": by_severity, "latest": latest}


def _most_severe(alert: dict[str, Any]) -> tuple[int, int]:
    return {"critical": 0, "warning": 1}.get(alert["severity"], 2), -int(alert["id"])


def _jobs(loaded: LoadedConfig, state: StateStore | None, lake: DeltaLake,
          now: dt.datetime | None) -> list[dict[str, Any]]:
    """Each training and prediction: its last run and the model version it names now."""
    from agent.ml.registry import ModelRegistry

    conf = loaded.config
    registry = ModelRegistry(lake)
    out = []
    # (kind, job, the model as configured, what "resolves_to" shows: a training's champion)
    jobs: list[tuple[str, TrainingConfig | PredictionConfig | MonitorConfig, str | None,
                     str | None]] = [
        *(("train", t, t.model, f"{t.model}@champion") for t in conf.trainings),
        *(("predict", p, p.model_ref, p.model_ref) for p in conf.predictions),
        *(("monitor", m, m.model, f"{m.model}@champion" if m.model else None)
          for m in conf.monitors)]
    for kind, job, shown, ref in jobs:
        last = state.runs(kind=kind, name=job.name, limit=1) if state else []
        run = last[0] if last else {}
        current: str | None = None
        try:
            if ref is not None:
                resolved = registry.resolve(ref)
                current = f"{resolved.model}@{resolved.version}"
        except SiltaError:
            pass
        out.append({
            "job": f"{kind}:{job.name}", "kind": kind, "name": job.name,
            "enabled": job.enabled, "schedule": job.schedule, "model": shown,
            "resolves_to": current, "last_run": run.get("started_at"),
            "outcome": run.get("status"), "rows": run.get("rows"),
            "run_model": (f"{run['model']}@{run['model_version']}"
                          if run.get("model") and run.get("model_version") else None),
            "result": run.get("verified"), "error": run.get("error"),
            "next_run": _next(job.schedule, now) if job.enabled else None,
        })
    return out


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
            console.print(f"[red]{escape(safe_display(s['sync']))}: verification: "
                          f"{escape(safe_display(s['verified']))}[/]")
    if status["jobs"]:
        print_table(status["jobs"], ["job", "last_run", "outcome", "run_model", "rows",
                                     "resolves_to"], title="trainings, predictions, monitors")
        for j in status["jobs"]:
            if j["outcome"] == "failed" and j["error"]:
                console.print(f"[red]{escape(safe_display(j['job']))}: "
                              f"{escape(safe_display(j['error']))}[/]")
    alerts = status.get("alerts") or {}
    if alerts.get("open"):
        counts = ", ".join(f"{n} {sev}" for sev, n in sorted(alerts["by_severity"].items()))
        print_table(alerts["latest"], ["alert", "severity", "state", "what", "count", "since"],
                    title=f"open alerts: {counts} (silta alerts list)")
    else:
        console.print("no open alerts")
