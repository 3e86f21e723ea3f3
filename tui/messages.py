"""Messages more than one screen or widget handles."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class CommandQueued(Message):
    """An operator command went into the state store's queue for the agent."""

    command_id: int
    kind: str
    what: str


@dataclass
class LoadFailed(Message):
    """A background read failed; the screen keeps what it showed and says why."""

    where: str
    error: str
