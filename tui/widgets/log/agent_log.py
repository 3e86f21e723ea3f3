"""The agent's log lines: plain text (a ``[b]`` in a message stays that), errors and
warnings coloured, a text filter, and a bounded memory of lines."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

#: the level of a text line ("2026-01-01T00:00:00Z ERROR silta.sync ...") or a JSON one
_LEVEL = re.compile(r'^\S+ (CRITICAL|ERROR|WARNING)\b|"level": "(critical|error|warning)"')
LEVEL_STYLE = {"critical": "bold red", "error": "red", "warning": "yellow"}


def line_level(line: str) -> str | None:
    """``critical``, ``error`` or ``warning`` for a line at that level, else None."""
    found = _LEVEL.search(line[:200])
    return (found.group(1) or found.group(2)).lower() if found else None


class LevelHighlighter(Highlighter):
    def highlight(self, text: Text) -> None:
        level = line_level(text.plain)
        if level is not None:
            text.stylize(LEVEL_STYLE[level])


class AgentLog(Log):
    """Keeps the last ``max_lines`` lines it was given; shows those matching the filter."""

    DEFAULT_CSS = """
    AgentLog { height: 1fr; border: round $primary-darken-2; }
    AgentLog:focus { border: round $accent; }
    """

    def __init__(self, *, max_lines: int = 10_000, id: str | None = None) -> None:
        super().__init__(highlight=True, max_lines=max_lines, auto_scroll=True, id=id)
        self.highlighter = LevelHighlighter()
        self.kept: deque[str] = deque(maxlen=max_lines)
        self.pattern = ""

    def _match(self, line: str) -> bool:
        return not self.pattern or self.pattern.lower() in line.lower()

    def add(self, lines: Iterable[str]) -> None:
        """New lines from the file (oldest first)."""
        new = list(lines)
        self.kept.extend(new)
        shown = [line for line in new if self._match(line)]
        if shown:
            self.write_lines(shown)

    def set_filter(self, pattern: str) -> None:
        """Show only the kept lines containing ``pattern`` (any case); "" shows all."""
        if pattern == self.pattern:
            return
        self.pattern = pattern
        self.clear()
        self.write_lines([line for line in self.kept if self._match(line)], scroll_end=True)

    @property
    def shown(self) -> int:
        return self.line_count
