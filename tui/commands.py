"""The command palette (Ctrl+P or `:`): go to a screen, or what the screen in view offers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

SCREENS = {"dashboard": "agent, jobs, what runs now, open alerts, recent runs",
           "tables": "the lake's tables: history, schema, preview, diff, tags",
           "models": "the registry: versions, metrics, aliases, model cards",
           "runs": "runs: filter, inputs, outputs, lineage, error; run now, replay",
           "alerts": "firing, acknowledged and resolved alerts; acknowledge, silence",
           "log": "the agent's log, live"}


class SiltaProvider(Provider):
    def _entries(self) -> list[tuple[str, str, Callable[[], Any]]]:
        from tui.screens.base import SiltaScreen

        entries: list[tuple[str, str, Callable[[], Any]]] = [
            (f"go to {name}", help_, partial(self.app.switch_mode, name))
            for name, help_ in SCREENS.items()]
        screen = self.screen
        if isinstance(screen, SiltaScreen):
            entries = [*screen.palette_commands(), *entries]
        return entries

    async def discover(self) -> Hits:
        for title, help_, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_)
