"""`silta monitors ...`: the configured monitors, their last runs, and running one now."""

from __future__ import annotations

import argparse
from typing import Any

from agent.alerts import OPEN, AlertBook
from agent.config import LoadedConfig
from agent.output import print_json, print_table
from agent.state import FILE_NAME, StateStore


def monitor_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    state = (StateStore(loaded.state_dir, readonly=True)
             if (loaded.state_dir / FILE_NAME).exists() else None)
    book = AlertBook(state, loaded.config.alerts) if state is not None else None
    rows = []
    for m in loaded.config.monitors:
        last = state.runs(kind="monitor", name=m.name, limit=1) if state else []
        open_alerts = book.find(states=OPEN, monitor=m.name) if book else []
        rows.append({
            "monitor": m.name, "model": m.model, "input": m.input,
            "predictions": m.predictions, "labels": m.labels, "window": m.window,
            "schedule": m.schedule, "after": list(m.after), "enabled": m.enabled,
            "last_run": last[0]["started_at"] if last else None,
            "last_status": last[0]["status"] if last else None,
            "last_message": last[0].get("verified") if last else None,
            "open_alerts": len(open_alerts),
            "critical": sum(1 for a in open_alerts if a["severity"] == "critical")})
    return rows


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    rows = monitor_rows(loaded)
    if args.json:
        print_json(rows)
        return 0
    view = [{**r, "watches": ", ".join(t for t in (r["input"], r["predictions"], r["labels"])
                                       if t),
             "when": r["schedule"] or ", ".join(r["after"]) or "-",
             "last": f"{r['last_status']} {r['last_run']}" if r["last_run"] else "never",
             "alerts": f"{r['open_alerts']} ({r['critical']} critical)"
             if r["open_alerts"] else "0"} for r in rows]
    print_table(view, ["monitor", "model", "watches", "when", "last", "alerts"],
                title="monitors", empty="no monitors configured ([[monitors]] in the config)")
    return 0


def cmd_run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from agent.jobs_cli import cmd_run as run_job

    loaded.config.monitor(args.name)  # a clear "no monitor X" before anything else
    args.name = f"monitor:{args.name}"
    return run_job(loaded, args)


def add_parser(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
               parser_class: type[argparse.ArgumentParser], func: Any) -> None:
    mo = sub.add_parser("monitors", help="monitoring runs: schema, quality, drift, accuracy")
    mo_sub = mo.add_subparsers(dest="monitors_cmd", required=True, parser_class=parser_class)
    ml = mo_sub.add_parser("list", parents=[common, as_json],
                           help="monitors, their last run and open alerts")
    mr = mo_sub.add_parser("run", parents=[common, as_json],
                           help="run a monitor now (queued for the agent when it is running)")
    mr.add_argument("name", help="the monitor's name")
    mr.set_defaults(force=False)
    for p in (mo, ml, mr):
        p.set_defaults(func=func)
