"""Results on stdout: JSON with stable keys for scripts, tables for people."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors.names import safe_display


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


_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(\+00:00|Z)?$")


def _cell(v: object) -> str:
    # Values come from outside (file names, data, error texts quoting a file): a raw ESC
    # would reach the operator's terminal (Rich passes it on), so controls are escaped.
    return safe_display(_text(v))


def _text(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, str) and (m := _ISO.match(v)):
        return f"{m.group(1)} {m.group(2)}"  # UTC stamps, short enough for 80 columns
    return str(v)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                title: str | None = None, empty: str = "(none)") -> None:
    """A table for people; values from outside are escaped so they cannot inject markup."""
    # A pipe or file has no width: do not fold tables to 80 columns there.
    width = None if sys.stdout.isatty() else 200
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)
    if not rows:
        console.print(escape(empty))
        return
    table = Table(title=escape(title) if title else None, title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    cells = [[escape(_cell(r.get(c))) for c in columns] for r in rows]
    for i, c in enumerate(columns):
        # Short values never wrap; the widest column folds when the terminal is narrow.
        widest = max(len(row[i]) for row in cells)
        table.add_column(c, overflow="fold", no_wrap=widest <= 10,
                         min_width=min(max(widest, len(c)), 10))
    for row in cells:
        table.add_row(*row)
    console.print(table)
