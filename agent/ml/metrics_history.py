"""The figures of past monitor runs, read from ``_silta/metrics`` (light: no numpy stack).

The TUI's alert detail and `silta alerts show` read them; the monitor writes them
(``agent/ml/monitor.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.dataset as ds

from connectors.errors import SiltaError
from connectors.lake import DeltaLake

METRICS_TABLE = "_silta/metrics"


def metric_history(lake: DeltaLake, alert: Mapping[str, Any], limit: int = 12
                   ) -> list[dict[str, Any]]:
    """An alert's figure over its monitor's latest ``limit`` runs, oldest first, from
    ``_silta/metrics``; empty when the lake is away (the alert is still worth showing)."""
    try:
        table = lake.open(METRICS_TABLE)
        if table is None:
            return []
        found = table.to_pyarrow_dataset().to_table(
            columns=["measured_at", "run_id", "metric", "value", "threshold", "status"],
            filter=(ds.field("monitor") == alert["monitor"])
            & (ds.field("check") == alert["check"]) & (ds.field("target") == alert["target"]))
    except SiltaError:
        return []
    rows = sorted(found.to_pylist(), key=lambda r: r["measured_at"])[-limit:]
    return [{**r, "measured_at": r["measured_at"].isoformat(timespec="seconds")}
            for r in rows]
