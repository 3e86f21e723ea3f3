"""`silta agent health`: one answer for monitoring systems (Nagios, Zabbix, a cron check).

Exit 0 when the agent is alive (a fresh heartbeat and its instance lock held) and no
enabled job's last run failed (or no more than ``--max-failed``); 1 otherwise, with one
line per check saying what is wrong. Open alerts are listed but do not fail the check:
they reach people through their own channels, and a firing drift alert is not an outage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from agent.config import LoadedConfig
from agent.output import print_json
from agent.status import collect_status
from agent.view import ago
from connectors.names import safe_display

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1


def check_health(loaded: LoadedConfig, max_failed: int = 0,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """``{"healthy": bool, "checks": [{"check", "ok", "detail"}], ...}`` (stable keys)."""
    status = collect_status(loaded, now)
    agent = status["agent"]
    checks: list[dict[str, Any]] = []
    if agent["alive"]:
        detail = (f"alive, pid {agent['pid']}, since {agent['since']}, last heartbeat "
                  f"{ago(agent['last_beat'], now)}")
    elif agent["state"] == "never started":
        detail = "never started: no heartbeat in the state store"
    elif agent["state"] == "stopped":
        detail = f"not running: stopped cleanly, last heartbeat {ago(agent['last_beat'], now)}"
    else:
        detail = (f"down: no fresh heartbeat since {ago(agent['last_beat'], now)} (every "
                  f"{loaded.config.agent.heartbeat_seconds:g} s expected) or its lock is free")
    checks.append({"check": f"agent {agent['name']}", "ok": bool(agent["alive"]),
                   "detail": detail})
    jobs = [*({**s, "job": f"sync:{s['sync']}"} for s in status["syncs"]), *status["jobs"]]
    failed = [j for j in jobs if j["enabled"] and j["outcome"] == "failed"]
    jobs_ok = len(failed) <= max_failed
    for job in failed:
        error = (job.get("error") or "no error recorded").splitlines()[0]
        checks.append({"check": job["job"], "ok": jobs_ok,
                       "detail": f"last run failed {ago(job['last_run'], now)}: {error}"})
    if not failed:
        checks.append({"check": "jobs", "ok": True,
                       "detail": f"no enabled job's last run failed ({len(status['syncs'])} "
                                 f"sync(s), {len(status['jobs'])} other job(s))"})
    alerts = status["alerts"]
    return {"healthy": bool(agent["alive"]) and jobs_ok, "checks": checks,
            "failed_jobs": [j["job"] for j in failed], "max_failed": max_failed,
            "open_alerts": alerts.get("by_severity", {})}


def cmd_health(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    result = check_health(loaded, args.max_failed)
    if args.json:
        print_json(result)
    else:
        for c in result["checks"]:
            mark = "ok  " if c["ok"] else "FAIL"
            sys.stdout.write(safe_display(f"{mark} {c['check']}: {c['detail']}") + "\n")
        if result["open_alerts"]:
            counts = ", ".join(f"{n} {sev}" for sev, n in sorted(result["open_alerts"].items()))
            sys.stdout.write(f"info open alerts: {counts} (not counted; `silta alerts list`)\n")
        sys.stdout.write(("healthy" if result["healthy"] else "UNHEALTHY") + "\n")
    return EXIT_HEALTHY if result["healthy"] else EXIT_UNHEALTHY
