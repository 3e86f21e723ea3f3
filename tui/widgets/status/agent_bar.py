"""The line at the top of every screen: is the agent alive, read-only, commands waiting."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from agent.view import ago
from tui.text import plain


def agent_line(agent: dict[str, Any] | None, *, read_only: bool, now: Any = None) -> Text:
    line = Text("silta ", style="bold")
    if agent is None:
        line.append("agent: reading…", style="dim")
    else:
        line.append_text(plain(agent["name"], "bold"))
        if agent["alive"]:
            line.append("  ● alive", style="bold green")
            line.append(f" since {ago(agent['since'], now)}")
        elif agent["state"] == "stopped":
            line.append("  ● not running", style="bold yellow")
            line.append(f" (stopped {ago(agent['last_beat'], now)})")
        elif agent.get("last_beat"):
            line.append("  ● down", style="bold red")
            line.append(f" since {ago(agent['last_beat'], now)} (no heartbeat since)")
        else:
            line.append("  ● never started", style="bold yellow")
        waiting = agent.get("commands_waiting") or 0
        if waiting:
            line.append(f"  {waiting} command(s) waiting for the agent", style="yellow")
    if read_only:
        line.append("  READ-ONLY", style="bold reverse")
    return line


class AgentBar(Static):
    DEFAULT_CSS = """
    AgentBar { height: 1; background: $panel; padding: 0 1; }
    """

    def update_agent(self, agent: dict[str, Any] | None, *, read_only: bool,
                     now: Any = None) -> None:
        self.update(agent_line(agent, read_only=read_only, now=now))
