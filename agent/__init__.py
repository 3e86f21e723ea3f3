"""Silta's agent: config, state store, sync engine, scheduler, service and CLI.

Never imports textual or the ``tui`` package.
"""

from __future__ import annotations
