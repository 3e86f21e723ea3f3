"""Results on stdout: JSON with stable keys for scripts, tables for people."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _default(o: object) -> object:
    if isinstance(o, dt.datetime | dt.date):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "as_py"):
        return o.as_py()
    return str(o)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False, indent=2) + "\n")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    return str(v)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                title: str | None = None, empty: str = "(none)") -> None:
    """A table for people; values from outside are escaped so they cannot inject markup."""
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not rows:
        console.print(escape(empty))
        return
    table = Table(title=escape(title) if title else None, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(escape(_cell(r.get(c))) for c in columns))
    console.print(table)
