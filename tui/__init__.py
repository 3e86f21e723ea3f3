"""Silta's operator TUI (Textual). Reads the agent only through ``agent.view``.

The screens arrive with the TUI issue; this package exists so the layers are in place.
"""

from __future__ import annotations
