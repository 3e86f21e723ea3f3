"""Stores Silta moves data between: on-prem file and table stores, and the Delta lake.

Knows nothing of the agent or the TUI.
"""

from __future__ import annotations

from connectors.abc import FileInfo, FileStore, Option
from connectors.registry import get_connector_class, known_types

__all__ = ["FileInfo", "FileStore", "Option", "get_connector_class", "known_types"]
