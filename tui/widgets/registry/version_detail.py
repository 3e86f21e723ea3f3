"""The version under the cursor in a few lines: metrics, training data, provenance."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text
from textual.widgets import Static

from agent.view import ago
from tui.text import plain
from tui.widgets.registry.version_table import aliases_text, data_ref, when


def short(value: Any, n: int = 12) -> str | None:
    """The first ``n`` characters of a hash."""
    return str(value)[:n] if value else None


def detail_text(row: dict[str, Any] | None, now: dt.datetime) -> Text:
    if row is None:
        return Text("no version", style="dim")
    text = Text(f"v{row['version']} ", style="bold")
    text.append_text(aliases_text(row["aliases"]))
    text.append(f"  {row['state']}\n", style="dim" if row["state"] == "archived" else "")
    primary = row.get("primary_metric")
    for key, value in sorted((row.get("metrics") or {}).items()):
        text.append(f"{key:<14}", style="bold" if key == primary else "")
        text.append_text(plain(f"{value:.4f}" if isinstance(value, float) else value))
        text.append("\n")
    data = row.get("training_data") or {}
    labels = data.get("labels") or {}
    text.append("trained on    ", style="bold")
    text.append_text(plain(data_ref(data)))
    if data.get("rows") is not None:
        text.append(f" ({data['rows']:,} rows)")
    if data_ref(labels):
        text.append("\nlabels        ", style="bold")
        text.append_text(plain(data_ref(labels)))
    for label, value in (("estimator", row.get("estimator")),
                         ("code", row.get("code_version")),
                         ("config", short(row.get("config_hash"))),
                         ("artifact", short(row.get("artifact_sha256")))):
        text.append(f"\n{label:<14}", style="bold")
        text.append_text(plain(value))
    text.append("\ncreated       ", style="bold")
    text.append_text(plain(f"{when(row['created_at'])} ({ago(row['created_at'], now)}) "
                           f"by {row['created_by']}"))
    return text


class VersionDetail(Static):
    """Shown beside the versions when the terminal is wide enough."""

    DEFAULT_CSS = """
    VersionDetail { width: 46; height: 1fr; padding: 0 1; border: round $primary-darken-2;
                    overflow-y: auto; }
    """

    def show(self, row: dict[str, Any] | None, now: dt.datetime) -> None:
        self.update(detail_text(row, now))
