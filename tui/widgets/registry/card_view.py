"""A version's model card, rendered from its Markdown (``card.md`` of the version)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static

from tui.text import plain


class CardView(VerticalScroll):
    """The card of one version, or a line saying why there is none.

    The Markdown is Silta's own (written at registration); it may hold names from the
    config, which Markdown shows as text (it does not read Rich markup).
    """

    DEFAULT_CSS = """
    CardView { height: 1fr; }
    CardView #card-note { height: auto; padding: 0 1; color: $text-muted; }
    CardView Markdown { height: auto; }
    CardView.-missing Markdown { display: none; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown: tuple[str, int] | None = None
        #: the Markdown widget's update in progress (done: every block is mounted)
        self.rendering: AwaitComplete | None = None

    def compose(self) -> ComposeResult:
        yield Static(plain("move to a version to see its card"), id="card-note")
        yield Markdown(id="card", open_links=False)

    @property
    def markdown(self) -> Markdown:
        return self.query_one("#card", Markdown)

    def loading_card(self, model: str, version: int) -> None:
        self.query_one("#card-note", Static).update(plain(f"reading the card of {model} "
                                                          f"v{version}…"))

    def show_card(self, model: str, version: int, card: str | None, why: str = "") -> None:
        """``card`` (Markdown) of ``model`` ``version``; None: there is none, ``why``."""
        self.shown = (model, version)
        note = self.query_one("#card-note", Static)
        self.set_class(card is None, "-missing")
        if card is None:
            note.update(plain(f"no model card for {model} v{version}: {why}"))
            self.rendering = self.markdown.update("")
            return
        note.update(plain(f"model card of {model} v{version}"))
        self.rendering = self.markdown.update(card)
        self.scroll_home(animate=False)
