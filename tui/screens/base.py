"""What every screen shares: the agent line, background reloads, confirmed actions.

A screen implements ``load`` (runs in a worker thread, calls the facade, returns data)
and ``show`` (runs on the UI thread with that data). Actions that change anything go
through :meth:`SiltaScreen.confirm_and_submit`: a dialog, then one command in the state
store's queue; in read-only mode they are hidden from the footer and refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from agent.view import View
from tui.messages import CommandQueued, LoadFailed
from tui.settings import TuiSettings
from tui.text import plain
from tui.widgets.common.confirm import ConfirmDialog, Confirmed
from tui.widgets.status.agent_bar import AgentBar

if TYPE_CHECKING:
    from tui.app import SiltaApp

#: (title, help, callback) of one command palette entry
PaletteCommand = tuple[str, str, Callable[[], Any]]


class SiltaScreen(Screen[None]):
    #: actions that change something: hidden and refused in read-only mode
    WRITE_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    #: shown in the help screen above the keys
    HELP: ClassVar[str] = ""

    DEFAULT_CSS = """
    SiltaScreen #problem { display: none; height: auto; color: $error; padding: 0 1; }
    SiltaScreen #problem.-shown { display: block; }
    """

    @property
    def silta(self) -> SiltaApp:
        from tui.app import SiltaApp

        assert isinstance(self.app, SiltaApp)
        return self.app

    @property
    def view(self) -> View:
        return self.silta.view

    @property
    def settings(self) -> TuiSettings:
        return self.silta.settings

    # -- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield AgentBar(id="agent-bar")
        yield Static(id="problem")
        yield from self.body()
        yield Footer()

    def body(self) -> Iterable[Any]:
        raise NotImplementedError

    # -- loading ------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.settings.live:
            self.set_interval(self.settings.refresh_seconds, self._tick)

    def on_screen_resume(self) -> None:
        self.reload()  # also the first load: a screen resumes when it is first shown

    def _tick(self) -> None:
        if self.is_current:
            self.reload()

    def reload(self) -> None:
        self._beat()
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="heartbeat",
          description="reading the agent's heartbeat")
    def _beat(self) -> None:
        agent = self.view.heartbeat()
        self.app.call_from_thread(self._show_agent, agent)

    def _show_agent(self, agent: dict[str, Any]) -> None:
        self.query_one(AgentBar).update_agent(agent, read_only=self.settings.read_only,
                                              now=self.settings.clock())

    @work(thread=True, exclusive=True, exit_on_error=False, group="load",
          description="reading the state store and the lake")
    def _load(self) -> None:
        data = self.load()
        self.app.call_from_thread(self._loaded, data)

    def _loaded(self, data: Any) -> None:
        self.query_one("#problem", Static).remove_class("-shown")
        self.show(data)

    def load(self) -> Any:
        """Runs in a worker thread: read what the screen shows."""
        return None

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what :meth:`load` returned."""

    def run_in_thread(self, fn: Callable[[], Any], then: Callable[[Any], None],
                      group: str = "detail") -> None:
        """``fn`` in a worker thread (the latest call of ``group`` wins), ``then`` with its
        result on the UI thread."""
        def job() -> None:
            result = fn()
            self.app.call_from_thread(then, result)
        self.run_worker(job, thread=True, exclusive=True, exit_on_error=False, group=group,
                        description=group)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            e = event.worker.error
            self.post_message(LoadFailed(event.worker.group,
                                         getattr(e, "msg", None) or f"{type(e).__name__}: {e}"))

    @on(LoadFailed)
    def _show_problem(self, event: LoadFailed) -> None:
        problem = self.query_one("#problem", Static)
        problem.update(plain(f"could not read ({event.where}): {event.error}"))
        problem.add_class("-shown")

    # -- actions ------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # False hides a write action from the footer and the palette; its key does nothing
        return not (action in self.WRITE_ACTIONS and self.settings.read_only)

    def confirm_and_submit(self, title: str, body: str, kind: str,
                           args: Callable[[Confirmed], dict[str, Any]], *,
                           confirm: str = "Confirm", comment: str | None = None,
                           duration: str | None = None) -> None:
        """Ask, then queue ``kind`` with ``args(answer)`` for the agent."""
        if self.settings.read_only:
            self.notify("read-only: actions are off", severity="warning")
            return

        def answered(answer: Confirmed | None) -> None:
            if answer is None:
                return
            try:
                payload = args(answer)
            except ValueError as e:
                self.notify(str(e), title="not queued", severity="error", markup=False)
                return
            self.run_in_thread(lambda: self.view.submit(kind, payload),
                               lambda command_id: self._queued(command_id, kind, title),
                               group="submit")

        self.app.push_screen(ConfirmDialog(title, body, confirm=confirm, comment=comment,
                                           duration=duration), answered)

    def _queued(self, command_id: int, kind: str, what: str) -> None:
        self.post_message(CommandQueued(command_id, kind, what))

    def palette_commands(self) -> list[PaletteCommand]:
        """This screen's keys as command palette entries (write actions only if allowed)."""
        out: list[PaletteCommand] = []
        for b in self.BINDINGS:
            if not isinstance(b, Binding) or not b.description:
                continue
            if self.check_action(b.action.split("(")[0], ()) is False:
                continue
            out.append((b.description, b.tooltip or b.description, self._runner(b.action)))
        return out

    def _runner(self, action: str) -> Callable[[], Any]:
        return lambda: self.run_action(action)
