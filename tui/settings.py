"""What the app is started with: the read-only facade, the mode, the clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class TuiSettings:
    read_only: bool = False
    """Browse only: every action is hidden and refused."""
    refresh_seconds: float = 2.0
    page_size: int = 50
    keys: dict[str, str] = field(default_factory=dict)
    """Key remaps by binding id (``[tui] keys``)."""
    clock: Callable[[], dt.datetime] = _utc_now
    """"Now" for ages shown ("5 min ago"); tests pin it for snapshots."""
    live: bool = True
    """Reload on a timer; snapshot tests turn it off so a frame never changes."""
