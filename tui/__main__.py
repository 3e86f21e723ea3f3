"""`python -m tui` is the `silta` command (when the console script is not installed)."""

from __future__ import annotations

from tui.cli import entry

entry()
