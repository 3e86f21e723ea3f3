"""Strings from outside (names, paths, error texts) shown as text, never as markup."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from connectors.names import safe_display


def plain(value: Any, style: str = "", *, lines: bool = False) -> Text:
    """``value`` as a Text: markup characters and control characters shown, not obeyed;
    with ``lines``, line breaks stay line breaks (dialog bodies, error texts)."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, Text):
        return value
    if isinstance(value, float):
        return Text(f"{value:.4g}", style=style)
    if lines:
        return Text("\n".join(safe_display(line) for line in str(value).splitlines()),
                    style=style)
    return Text(safe_display(str(value)), style=style)


SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
STATUS_STYLE = {"ok": "green", "failed": "bold red", "partial": "yellow", "running": "cyan",
                "interrupted": "magenta", "skipped": "dim", "firing": "bold red",
                "acknowledged": "yellow", "resolved": "green", "done": "green",
                "refused": "yellow", "queued": "cyan"}


def styled(value: Any, table: dict[str, str] = STATUS_STYLE) -> Text:
    """A status or severity coloured by what it means."""
    return plain(value, table.get(str(value), ""))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
