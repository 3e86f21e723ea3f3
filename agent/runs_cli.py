"""`silta runs ...` and `silta lineage`: what ran, with which inputs, and can it be re-made."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from agent.config import LoadedConfig
from agent.lineage import lineage, print_lineage
from agent.output import print_json, print_table
from agent.runs import get_run, read_runs
from agent.state import StateStore
from agent.stores import open_lake
from connectors.errors import NotFoundError, StateStoreError, UsageError
from connectors.names import safe_display

KINDS = ("sync", "publish", "train", "predict")
STATUSES = ("ok", "partial", "failed", "skipped", "interrupted", "running")
_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def _utc(text: str | None) -> dt.datetime | None:
    # the state store keeps ISO text, _silta/runs timestamps: one type for sorting and output
    return dt.datetime.fromisoformat(text) if text else None


def _local_runs(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """Runs of this agent that are not in the lake (running, idle, or not flushed yet)."""
    try:
        state = StateStore(loaded.state_dir, readonly=True)
    except StateStoreError:
        return []
    try:
        return [{"run_id": r["id"], "kind": r["kind"], "name": r["name"],
                 "trigger": r["trigger"], "status": r["status"], "agent": r["agent"],
                 "started_at": _utc(r["started_at"]), "finished_at": _utc(r["finished_at"]),
                 "model": r.get("model"), "model_version": r.get("model_version"),
                 "rows": r["rows"], "error": r["error"], "where": "local",
                 # the keys of the lake's records, as far as the state store knows them
                 "inputs": [], "outputs": [], "metrics": {"rows": r["rows"]},
                 "detail": {"message": r.get("verified")}, "host": None, "os_user": None}
                for r in state.runs(limit=1000)]
    finally:
        state.close()


def _merged(loaded: LoadedConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    lake_rows = read_runs(open_lake(loaded), kind=args.kind, name=args.name,
                          status=args.status)
    for r in lake_rows:
        r["where"] = "lake"
        r["rows"] = (r.get("metrics") or {}).get("rows")
    seen = {r["run_id"] for r in lake_rows}
    local = [r for r in _local_runs(loaded) if r["run_id"] not in seen
             and (args.kind is None or r["kind"] == args.kind)
             and (args.name is None or r["name"] == args.name)
             and (args.status is None or r["status"] == args.status)]
    if not args.all_runs:
        # idle sync runs never reach the lake; show them only on request
        local = [r for r in local if not (r["kind"] in ("sync", "publish")
                                          and r["status"] == "ok" and not r.get("rows"))]
    rows = lake_rows + local
    rows.sort(key=lambda r: r["started_at"] or _NEVER, reverse=True)
    return rows[:args.limit]


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    rows = _merged(loaded, args)
    if args.json:
        print_json(rows)
        return 0
    view = [{**r, "run": r["run_id"], "model": f"{r['model']}@{r['model_version']}"
             if r.get("model") else "-"} for r in rows]
    print_table(view, ["run", "kind", "name", "status", "started_at", "model", "rows",
                       "where"], title="runs (newest first, times in UTC)",
                empty="no runs yet")
    return 0


def cmd_show(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    lake = open_lake(loaded)
    try:
        run = get_run(lake, args.run_id)
    except NotFoundError:
        local = [r for r in _local_runs(loaded) if r["run_id"] == args.run_id]
        if not local:
            raise
        run = local[0]
    if args.json:
        print_json(run)
        return 0
    lines = [f"run {run['run_id']}: {run['kind']} {run['name']} {run['status']}",
             f"  trigger:  {run.get('trigger')}",
             f"  started:  {run.get('started_at')}  finished: {run.get('finished_at')}",
             f"  where:    {run.get('agent')} ({run.get('os_user', '?')}@"
             f"{run.get('host', '?')})"]
    if run.get("model"):
        lines.append(f"  model:    {run['model']}@{run.get('model_version')}")
    for label in ("inputs", "outputs"):
        for item in run.get(label) or []:
            lines.append(f"  {label[:-1] + ':':<10}{json.dumps(item, default=str)}")
    if run.get("metrics"):
        lines.append(f"  metrics:  {json.dumps(run['metrics'], default=str)[:400]}")
    message = (run.get("detail") or {}).get("message") if isinstance(run.get("detail"),
                                                                        dict) else None
    if message:
        lines.append(f"  result:   {message}")
    if run.get("error"):
        lines.append(f"  error:    {run['error']}")
    if run.get("code_version"):
        lines.append(f"  code:     {run['code_version']}")
    sys.stdout.write("".join(safe_display(line) + "\n" for line in lines))
    return 0


def cmd_replay(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    from agent.ml.replay import replay

    try:
        result = replay(open_lake(loaded), args.run_id)
    except NotFoundError as e:
        if e.kind != "run":
            raise
        local = [r for r in _local_runs(loaded) if r["run_id"] == args.run_id]
        if not local:
            raise
        r = local[0]
        raise UsageError(f"run {args.run_id} ({r['kind']} {r['name']}) finished "
                         f"{r['status']} without output; there is nothing to replay") from e
    if args.json:
        print_json(result)
        return 0 if result["identical"] else 1
    head = f"replay of {result['kind']} run {result['run_id']} ({result['name']}, " \
           f"{result['model']}@{result['version']}; inputs {', '.join(result['inputs'])})"
    lines = [head]
    if result["identical"]:
        lines.append(f"identical: {result['rows']} row(s), content hash "
                     f"{result['output_hash'][:16]} both times")
    else:
        lines.append(f"DIFFERENT: {', '.join(result['differing_columns']) or 'row count'} "
                     f"differ ({result['rows']} row(s) then, {result['replay_rows']} now)")
        lines.append(f"  code then: {result['code_then']}")
        lines.append(f"  code now:  {result['code_now']}")
    for metric, pair in (result.get("metrics") or {}).items():
        lines.append(f"  {metric}: {pair['then']} then, {pair['now']} now")
    sys.stdout.write("".join(safe_display(line) + "\n" for line in lines))
    return 0 if result["identical"] else 1


def cmd_lineage(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    print_lineage(lineage(open_lake(loaded), args.table), args.json)
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
                parser_class: type[argparse.ArgumentParser], func: Any, lineage_func: Any,
                positive: Any) -> None:
    """`silta runs ...` and `silta lineage` on the main parser."""
    rn = sub.add_parser("runs", help="runs of every kind: inputs, outputs, replay")
    rn_sub = rn.add_subparsers(dest="runs_cmd", required=True, parser_class=parser_class)
    rl = rn_sub.add_parser("list", parents=[common, as_json], help="runs, newest first")
    rl.add_argument("--kind", choices=KINDS, default=None)
    rl.add_argument("--name", default=None, help="only runs of this sync or job")
    rl.add_argument("--status", choices=STATUSES, default=None)
    rl.add_argument("--limit", type=positive, default=50)
    rl.add_argument("--all", action="store_true", dest="all_runs",
                    help="include sync runs that found nothing to do")
    rs = rn_sub.add_parser("show", parents=[common, as_json], help="one run in full")
    rs.add_argument("run_id")
    rr = rn_sub.add_parser("replay", parents=[common, as_json],
                           help="re-run a train or predict run from its pinned inputs and "
                                "compare (exit 1 when the output differs)")
    rr.add_argument("run_id")
    ln = sub.add_parser("lineage", parents=[common, as_json],
                        help="the chain from a table version back to the source files")
    ln.add_argument("table", help="TABLE or TABLE@VERSION")
    for p in (rn, rl, rs, rr):
        p.set_defaults(func=func)
    ln.set_defaults(func=lineage_func)
