"""The agent's log file, tailing live: the last lines first, then what the agent appends
(about twice a second), across rotation; `/` filters, `f` stops and resumes following."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import Static

from tui.messages import LoadFailed
from tui.screens.base import SiltaScreen
from tui.text import plain
from tui.widgets.common.filter_bar import FilterBar
from tui.widgets.log.agent_log import AgentLog
from tui.widgets.log.follower import Chunk, LogFollower

#: lines read from the end of the file when the screen opens
BACKLOG = 1000
#: lines kept in memory (older ones are dropped; the file has them all)
MAX_LINES = 10_000
POLL_SECONDS = 0.5


def missing_text(path: Path | None, config: Path) -> Text:
    if path is None:
        return Text.assemble(("No log file: ", "bold"), "agent.log_file is empty in ",
                             plain(config), ", so the agent logs to its terminal only.")
    return Text.assemble(("No log yet at ", "bold"), plain(path, "bold"), "\n\n",
                         "The agent writes its log there while it runs as `silta agent "
                         "run` (the service, or with --once); this screen shows it as soon "
                         "as it appears, and follows it.")


class LogScreen(SiltaScreen):
    HELP = ("The agent's own log file (agent.log_file under the state directory), tailing "
            "live: the last 1,000 lines, then each line the agent writes, also after the "
            "file is rotated. Errors are red, warnings yellow. / shows only lines that "
            "contain a text, f stops and resumes following the end, G jumps to the end.")
    AUTO_FOCUS = "#agent-log"
    DEFAULT_CSS = """
    LogScreen #log-missing { display: none; padding: 1 2; height: auto; }
    LogScreen #log-missing.-shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter", id="log.filter",
                tooltip="show only the lines that contain a text"),
        Binding("f", "toggle_follow", "follow", id="log.follow",
                tooltip="follow the end of the log as lines arrive (on/off)"),
        Binding("G", "end", "end", id="log.end", tooltip="jump to the newest line"),
        Binding("g", "home", "top", id="log.top", show=False,
                tooltip="jump to the oldest line kept"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path: Path | None = None
        self.follower: LogFollower | None = None
        self.following = True
        self.exists: bool | None = None
        self._polling = False
        self._error: str | None = None

    def body(self) -> Iterable[Any]:
        yield FilterBar(id="log-filter")
        yield Static(id="log-missing")
        yield AgentLog(max_lines=MAX_LINES, id="agent-log")

    @property
    def agent_log(self) -> AgentLog:
        return self.query_one("#agent-log", AgentLog)

    def on_mount(self) -> None:
        self.path = self.view.log_path
        if self.path is not None:
            self.follower = LogFollower(self.path, backlog=BACKLOG)
        else:
            self._show_missing(True)
        self._title()
        super().on_mount()
        self.set_interval(POLL_SECONDS, self._poll)
        self._poll()

    def on_unmount(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    # -- tailing ------------------------------------------------------------------------
    def _poll(self) -> None:
        if self.follower is None or self._polling:
            return  # the previous read is still going
        self._polling = True
        follower = self.follower
        self.run_worker(lambda: self._read(follower), thread=True, exit_on_error=False,
                        group="log-tail", description="reading the agent's log")

    def _read(self, follower: LogFollower) -> None:
        try:
            chunk = follower.poll()
        except Exception as e:  # shown, and the next poll tries again
            chunk = Chunk(error=f"{type(e).__name__}: {e}")
        self.app.call_from_thread(self._got, chunk)

    def _got(self, chunk: Chunk) -> None:
        self._polling = False
        if chunk.error != self._error:
            self._error = chunk.error
            if chunk.error:
                self.post_message(LoadFailed("log", chunk.error))
            else:
                self.query_one("#problem", Static).remove_class("-shown")
        if chunk.error is None and chunk.exists != self.exists:
            self.exists = chunk.exists
            self._show_missing(not chunk.exists and not self.agent_log.kept)
        if chunk.lines:
            self._show_missing(False)
            self.agent_log.add(chunk.lines)
        self._title()

    def _show_missing(self, missing: bool) -> None:
        note = self.query_one("#log-missing", Static)
        if missing:
            note.update(missing_text(self.path, self.silta.view.loaded.path))
        note.set_class(missing, "-shown")
        self.agent_log.display = not missing

    def _shown_path(self) -> str:
        """The log's path, relative to the config's folder when it is inside it (short)."""
        if self.path is None:
            return "(none)"
        try:
            return str(self.path.relative_to(self.view.loaded.base))
        except ValueError:
            return str(self.path)

    def _title(self) -> None:
        log = self.agent_log
        parts = [f"agent log {self._shown_path()}",
                 "following" if self.following else "paused (f follows)"]
        if log.pattern:
            parts.append(f"filter “{log.pattern}”: {log.line_count:,} of {len(log.kept):,}")
        else:
            parts.append(f"{len(log.kept):,} lines")
        if self.exists is False and log.kept:
            parts.append("file gone (rotating?)")
        log.border_title = plain(" · ".join(parts))

    # -- keys ---------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one("#log-filter", FilterBar).open()

    @on(FilterBar.Changed, "#log-filter")
    def _filtered(self, event: FilterBar.Changed) -> None:
        event.stop()
        self.agent_log.set_filter(event.text)
        self._title()

    def action_toggle_follow(self) -> None:
        self.following = not self.following
        self.agent_log.auto_scroll = self.following
        if self.following:
            self.agent_log.scroll_end(animate=False)
        self._title()

    def action_end(self) -> None:
        self.agent_log.scroll_end(animate=False)

    def action_home(self) -> None:
        self.agent_log.scroll_home(animate=False)
