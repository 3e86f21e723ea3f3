"""`silta tables ...`: what the lake holds, its versions, time travel and tags."""

from __future__ import annotations

import argparse
import getpass
import sys

from agent.config import LoadedConfig
from agent.output import print_json, print_table
from agent.stores import open_lake
from agent.table_view import table_summary
from connectors.errors import NotFoundError, UsageError
from connectors.lake import history_summary


def table_rows(loaded: LoadedConfig, include_internal: bool = False) -> list[dict[str, object]]:
    lake = open_lake(loaded)
    return [table_summary(lake, name)
            for name in lake.list_tables(include_internal=include_internal)]


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    rows = table_rows(loaded, include_internal=args.all)
    if args.json:
        print_json(rows)
    else:
        columns = ["table", "version", "rows", "columns", "last_commit", "last_operation"]
        if any(r["error"] for r in rows):
            columns.append("error")
        print_table(rows, columns, title=f"tables in {loaded.lake_uri}",
                    empty=f"no tables yet in {loaded.lake_uri}")
    return 0


def cmd_history(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    lake = open_lake(loaded)
    rows = [history_summary(e) for e in lake.history(args.table, limit=args.limit)]
    if args.json:
        print_json(rows)
    else:
        view = [{**r, "files": len(r["files"]) if r["files"] else None} for r in rows]
        print_table(view, ["version", "timestamp", "operation", "rows_added", "source",
                           "batch", "files", "run_id"], title=f"history of {args.table}")
    return 0


def cmd_show(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    lake = open_lake(loaded)
    version = args.at_version
    if args.tag is not None:
        if version is not None:
            raise UsageError("give --version or --tag, not both")
        tags = [t for t in lake.list_tags(args.table) if t["tag"] == args.tag]
        if not tags:
            raise NotFoundError("tag", args.tag, f"see `silta tables tags {args.table}`")
        version = int(tags[0]["version"])
    data = lake.read(args.table, version=version, limit=args.limit)
    shown = version if version is not None else lake.require(args.table).version()
    if args.json:
        print_json({"table": args.table, "version": shown, "rows": data.to_pylist()})
        return 0
    rows = data.to_pylist()
    print_table(rows, data.column_names, title=f"{args.table} at version {shown} "
                f"(first {len(rows)} rows)", empty=f"{args.table} at version {shown}: no rows")
    return 0


def cmd_tag(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    lake = open_lake(loaded)
    lake.add_tag(args.table, args.name, args.version, by=getpass.getuser(), note=args.note)
    sys.stdout.write(f"tagged {args.table}@{args.version} as {args.name!r}\n")
    return 0


def cmd_tags(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    lake = open_lake(loaded)
    lake.require(args.table)
    rows = lake.list_tags(args.table)
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["tag", "version", "created_at", "created_by", "note"],
                    title=f"tags of {args.table}", empty=f"{args.table} has no tags")
    return 0



