"""`silta alerts ...`: list, read, acknowledge, resolve and silence alerts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.alerts import OPEN, STATES, AlertBook
from agent.config import LoadedConfig
from agent.config_base import parse_duration
from agent.ml.metrics_history import metric_history
from agent.output import print_json, print_table
from agent.state import FILE_NAME, StateStore
from agent.stores import open_lake
from connectors.errors import NotFoundError, UsageError
from connectors.names import safe_display


def _book(loaded: LoadedConfig, *, write: bool = False) -> AlertBook:
    if not (loaded.state_dir / FILE_NAME).exists():
        raise NotFoundError("alert", "any", "the agent has not run yet, so no monitor has "
                            "raised one (`silta agent run --once`)")
    state = StateStore(loaded.state_dir, readonly=not write)
    return AlertBook(state, loaded.config.alerts, loaded.config.agent.name)


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    if not (loaded.state_dir / FILE_NAME).exists():
        rows: list[dict[str, Any]] = []
    else:
        states = [args.state] if args.state else (None if args.all else list(OPEN))
        book = _book(loaded)
        rows = book.find(states=states, monitor=args.monitor, limit=args.limit)
        if not rows and args.monitor:
            _known_monitor(loaded, book, args.monitor)
    if args.json:
        print_json(rows)
        return 0
    view = [{**r, "alert": r["id"], "what": f"{r['monitor']} / {r['check']} / {r['target']}",
             "state": r["state"] + (" (silenced)" if r["silenced_until"] else ""),
             "since": r["first_seen"]} for r in rows]
    print_table(view, ["alert", "severity", "state", "what", "count", "since", "summary"],
                title="alerts" + (" (all)" if args.all else ""),
                empty="no open alerts" if not args.all else "no alerts")
    return 0


def _known_monitor(loaded: LoadedConfig, book: AlertBook, monitor: str) -> None:
    """UsageError for a ``--monitor`` that is neither configured nor in any alert (a typo
    would otherwise read as "no open alerts")."""
    names = [m.name for m in loaded.config.monitors]
    if monitor in names or book.find(monitor=monitor, limit=1):
        return
    raise UsageError(f"--monitor {monitor!r}: no such monitor in {loaded.path} and no alert "
                     f"of one; monitors: {', '.join(names) or 'none configured'}")


def cmd_show(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    alert = _book(loaded).get(args.id)
    alert["history"] = metric_history(open_lake(loaded), alert)
    if args.json:
        print_json(alert)
        return 0
    lines = [
        f"alert {alert['id']}: {alert['severity']} {alert['state']}"
        + (f" (silenced until {alert['silenced_until']})" if alert["silenced_until"] else ""),
        f"what:      {alert['monitor']} / {alert['check']} / {alert['target']}"
        + (f" (model {alert['model']})" if alert["model"] else ""),
        f"summary:   {alert['summary']}",
        f"value:     {alert['value']} (threshold {alert['threshold']})",
        f"seen:      {alert['count']} time(s), first {alert['first_seen']}, last "
        f"{alert['last_seen']} (run {alert['last_run_id']})",
    ]
    if alert["acked_by"]:
        lines.append(f"acked:     by {alert['acked_by']} at {alert['acked_at']}"
                     + (f": {alert['ack_comment']}" if alert["ack_comment"] else ""))
    if alert["resolved_at"]:
        lines.append(f"resolved:  by {alert['resolved_by']} at {alert['resolved_at']}")
    sys.stdout.write("".join(safe_display(line) + "\n" for line in lines))
    print_table(alert["history"], ["measured_at", "metric", "value", "threshold", "status",
                                   "run_id"], title="the figure over time",
                empty="no figures recorded")
    print_table(alert["events"], ["at", "event", "by", "detail"], title="history")
    print_table(alert["notifications"], ["event", "channel", "status", "attempts",
                                         "sent_at", "last_error"],
                title="notifications", empty="no channel configured: the log only")
    return 0


def cmd_ack(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    alert = _book(loaded, write=True).ack(args.id, comment=args.comment)
    sys.stdout.write(safe_display(f"alert {alert['id']} acknowledged by {alert['acked_by']}"
                                  " (no more repeats; it resolves when the check passes)")
                     + "\n")
    return 0


def cmd_resolve(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    alert = _book(loaded, write=True).resolve(args.id, comment=args.comment)
    sys.stdout.write(f"alert {alert['id']} resolved by {alert['resolved_by']}\n")
    return 0


def cmd_silence(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.duration)
    except ValueError as e:
        raise UsageError(f"--for: {e}") from None
    alert = _book(loaded, write=True).silence(args.id, seconds, comment=args.comment)
    sys.stdout.write(f"alert {alert['id']} silenced until {alert['silenced_until']} "
                     "(it still counts; notifications wait)\n")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
               parser_class: type[argparse.ArgumentParser], func: Any, positive: Any) -> None:
    al = sub.add_parser("alerts", help="alerts raised by monitors")
    al_sub = al.add_subparsers(dest="alerts_cmd", required=True, parser_class=parser_class)
    ls = al_sub.add_parser("list", parents=[common, as_json],
                           help="open alerts (firing and acknowledged), newest first")
    ls.add_argument("--all", action="store_true", help="resolved ones too")
    ls.add_argument("--state", choices=STATES, help="only alerts in this state")
    ls.add_argument("--monitor", help="only this monitor's alerts")
    ls.add_argument("--limit", type=positive, default=100)
    sh = al_sub.add_parser("show", parents=[common, as_json],
                           help="one alert: figures over time, history, notifications")
    sh.add_argument("id", type=positive)
    ak = al_sub.add_parser("ack", parents=[common], help="acknowledge: stops the repeats")
    ak.add_argument("id", type=positive)
    ak.add_argument("--comment", default="", help="what is being done (recorded)")
    rs = al_sub.add_parser("resolve", parents=[common], help="resolve by hand")
    rs.add_argument("id", type=positive)
    rs.add_argument("--comment", default="")
    si = al_sub.add_parser("silence", parents=[common],
                           help="hold back notifications for a while (e.g. --for 2h)")
    si.add_argument("id", type=positive)
    si.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                    help="how long: 30m, 2h, 1d")
    si.add_argument("--comment", default="")
    for p in (al, ls, sh, ak, rs, si):
        p.set_defaults(func=func)
