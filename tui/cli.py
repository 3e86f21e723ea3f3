"""The `silta` console script: the agent's CLI plus `silta tui`.

The TUI sits above the agent (layers: tui -> agent -> connectors), so the command that
starts it is added here, and Textual is imported only when `silta tui` runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from agent import cli

MIN_REFRESH, MAX_REFRESH = 0.5, 3600.0


def _refresh(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not MIN_REFRESH <= value <= MAX_REFRESH:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose between {MIN_REFRESH:g} and {MAX_REFRESH:g} seconds")
    return value


def add_tui_parser(sub: Any, common: argparse.ArgumentParser,
                   parser_class: type[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("tui", parents=[common], help="the operator's terminal UI")
    t.add_argument("--read-only", action="store_true",
                   help="browse only: every action (acknowledge, promote, run...) is hidden")
    t.add_argument("--refresh", type=_refresh, default=None, metavar="SECONDS",
                   help="how often the screen in view reloads (default: [tui] refresh in "
                   "the config, else 2)")
    t.add_argument("--screen", choices=["dashboard", "tables", "models", "runs", "alerts",
                                        "log"], default="dashboard",
                   help="the screen to open first")
    t.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import make_app

    loaded = cli.load(args)
    if not sys.stdout.isatty():
        sys.stderr.write("silta: tui: stdout is not a terminal; use `silta status` (or "
                         "--json) in scripts\n")
        return cli.EXIT_USAGE
    app = make_app(loaded, read_only=args.read_only, refresh=args.refresh,
                   screen=args.screen)
    app.run()
    return app.return_code or 0


def entry() -> NoReturn:
    cli.entry(extend=add_tui_parser)
