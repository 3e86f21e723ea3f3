"""One run in full: why and when it ran, its outcome and error, what it read and wrote,
its metrics and the lineage of what it wrote.

Everything that comes from outside (names, paths, error texts, lineage lines) goes in
as plain text: a ``[red]`` in an error message is shown, never obeyed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from agent.view import ago, span
from tui.text import human_bytes, plain, styled

#: lineage lines shown in the pane; `silta lineage` prints all of them
MAX_LINEAGE_LINES = 200
#: metric entries shown (a monitor's figures can run long)
MAX_METRICS = 40
_SHA = 12  # characters of a sha256 shown
_KNOWN = {"table", "version", "after", "from_version", "to_version", "model", "ref",
          "artifact_sha256", "sha256", "role", "rows", "files", "bytes", "connector", "path"}


def _iso(value: Any) -> str | None:
    """A time as ISO to the second; text that is not a time as it is."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    try:
        return dt.datetime.fromisoformat(str(value)).isoformat(timespec="seconds")
    except ValueError:
        return str(value)


def item_text(item: Any) -> str:
    """One input or output: ``table@version`` / ``table (after, to]``, ``model
    name@version`` with its sha256 (short), a connector's path, and the counts."""
    if not isinstance(item, dict):
        return str(item)
    parts: list[str] = []
    if item.get("model"):
        parts.append(f"model {item['model']}@{item.get('version')}")
        if item.get("ref"):
            parts.append(f"(as {item['ref']})")
    elif item.get("table"):
        version = item.get("version", item.get("to_version"))
        after = item.get("after", item.get("from_version"))
        parts.append(f"{item['table']}@{version}" if after is None
                     else f"{item['table']} ({after}, {version}]")
    elif item.get("connector"):
        parts.append(f"{item['connector']}:{item.get('path') or ''}")
    sha = item.get("artifact_sha256") or item.get("sha256")
    if sha:
        parts.append(f"sha256 {str(sha)[:_SHA]}")
    if item.get("role"):
        parts.append(f"[{item['role']}]")
    if item.get("rows") is not None:
        parts.append(f"{item['rows']:,} row(s)")
    if item.get("files") is not None:
        parts.append(f"{item['files']:,} file(s)")
    if item.get("bytes") is not None:
        parts.append(human_bytes(item["bytes"]))
    parts += [f"{k}={_short(v)}" for k, v in item.items() if k not in _KNOWN]
    return " ".join(parts)


def _short(value: Any, limit: int = 120) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def metric_lines(metrics: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``metrics`` flattened to (dotted key, value) pairs."""
    if not isinstance(metrics, dict):
        return [(prefix or "value", _short(metrics))] if metrics is not None else []
    out: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out += metric_lines(value, name)
        else:
            out.append((name, _short(value)))
    return out


def _field(text: Text, label: str, value: Any, style: str = "") -> None:
    text.append(f"\n{label:<10}", style="bold")
    text.append_text(plain(value, style))


def _block(text: Text, value: str, style: str = "") -> None:
    """Multi-line ``value`` (a traceback, a tree) line by line, each one plain."""
    for i, line in enumerate(value.rstrip("\n").splitlines()):
        if i:
            text.append("\n")
        text.append_text(plain(line, style))


def _section(text: Text, title: str) -> None:
    text.append(f"\n\n{title}", style="bold underline")


def _items(text: Text, items: Iterable[Any]) -> None:
    found = False
    for item in items:
        found = True
        text.append("\n  • ")
        text.append_text(plain(item_text(item)))
    if not found:
        text.append("\n  none", style="dim")


def detail_text(detail: dict[str, Any], now: dt.datetime,
                lineage_text: str | None = None) -> Text:
    """The run as one Text; ``lineage_text`` is ``agent.lineage.render`` of its lineage."""
    local: dict[str, Any] = detail.get("local") or {}
    record: dict[str, Any] = detail.get("record") or {}

    def get(key: str) -> Any:
        value = local.get(key)
        return record.get(key) if value is None else value

    text = Text()
    text.append("run ", style="bold")
    text.append_text(plain(detail.get("run_id"), "bold"))
    text.append("  ")
    text.append_text(plain(f"{get('kind')}:{get('name')}"))
    text.append("  ")
    text.append_text(styled(get("status")))
    _field(text, "trigger", get("trigger"))
    started, finished = _iso(get("started_at")), _iso(get("finished_at"))
    _field(text, "started", f"{started} ({ago(started, now)})" if started else None)
    if finished:
        took = record.get("duration_seconds")
        if took is None and started:
            try:
                took = (dt.datetime.fromisoformat(finished)
                        - dt.datetime.fromisoformat(started)).total_seconds()
            except ValueError:
                took = None
        _field(text, "finished", finished + (f" (took {span(took)})" if took is not None
                                             else ""))
    else:
        _field(text, "finished", "not yet", "cyan")
    by = f" ({record['os_user']}@{record['host']})" if record.get("host") else ""
    _field(text, "agent", f"{get('agent')}{by}")
    moves = str(get("kind")) in ("sync", "publish")
    counts = [f"{local.get(k, 0) or 0:,} {k}"
              for k in (("rows", "files", "batches") if moves else ("rows",))]
    if local.get("bytes"):
        counts.append(human_bytes(local["bytes"]))
    if local.get("failed"):
        counts.append(f"{local['failed']:,} failed")
    if local:
        _field(text, "moved", ", ".join(counts))
    if local.get("table_version") is not None:
        _field(text, "version", f"table version {local['table_version']}")
    if get("model"):
        _field(text, "model", f"{get('model')}@{get('model_version')}")
    if moves and local.get("verified"):
        _field(text, "verified", local["verified"])
    if record.get("code_version"):
        _field(text, "code", record["code_version"])
    error = get("error")
    if error:
        _section(text, "error")
        text.append("\n")
        _block(text, str(error), "red")
    message = (record.get("detail") or {}).get("message") if isinstance(
        record.get("detail"), dict) else None
    if message:
        _section(text, "outcome")
        text.append("\n")
        _block(text, str(message))
    if not record:
        text.append("\n\n")
        text.append("no record in _silta/runs: " + (
            "runs that moved nothing stay in the agent's state store only"
            if local.get("kind") in ("sync", "publish") and local.get("status") == "ok"
            and not local.get("rows") and not local.get("files") else
            "it reaches the lake when the run is over and the lake can be reached"),
                    style="dim")
        return text
    _section(text, "inputs")
    _items(text, record.get("inputs") or [])
    _section(text, "outputs")
    _items(text, record.get("outputs") or [])
    metrics = metric_lines(record.get("metrics") or {})
    if metrics:
        _section(text, "metrics")
        for key, value in metrics[:MAX_METRICS]:
            text.append("\n  ")
            text.append_text(plain(key, "bold"))
            text.append(" ")
            text.append_text(plain(value))
        if len(metrics) > MAX_METRICS:
            text.append(f"\n  … {len(metrics) - MAX_METRICS} more", style="dim")
    if lineage_text:
        _section(text, "lineage")
        lines = lineage_text.rstrip("\n").splitlines()
        text.append("\n")
        _block(text, "\n".join(lines[:MAX_LINEAGE_LINES]))
        if len(lines) > MAX_LINEAGE_LINES:
            text.append(f"\n… {len(lines) - MAX_LINEAGE_LINES} more lines: silta lineage",
                        style="dim")
    return text


class RunDetail(VerticalScroll):
    """The highlighted run's detail (scrolls; Tab to focus it)."""

    DEFAULT_CSS = """
    RunDetail { height: 1fr; border: round $primary-darken-2; padding: 0 1; }
    RunDetail:focus { border: round $accent; }
    RunDetail > Static { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text("select a run", style="dim"), id="run-detail-text")

    @property
    def text(self) -> Static:
        return self.query_one("#run-detail-text", Static)

    def show_text(self, text: Text) -> None:
        self.text.update(text)

    def show_note(self, note: str) -> None:
        self.text.update(Text(note, style="dim"))
