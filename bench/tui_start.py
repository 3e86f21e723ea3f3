"""How long `silta tui` takes to show each screen, on a small world and on a big one.

The big world has 10,000 runs, 1,000 model versions and 500 lake tables (the issue's
figures); the small one 10 runs, 4 versions and 5 tables is the baseline measured in the
same run. Each screen opens in a child process of its own (imports included in "process
s"); "render s" is from building the app to the screen's first full render: its list and
the detail of the first row read by the workers and drawn. Lists are paged, so the big
world should cost about what the small one does.

    .venv/bin/python bench/tui_start.py [--runs N --versions N --tables N --repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._child import RESULT_TAG, run_child  # noqa: E402

SCREENS = ["dashboard", "tables", "models", "runs", "alerts", "log"]
GOAL_S = 1.0


def floor() -> None:
    """A bare Textual app with a 100-row table in five tabs: what any such UI costs here."""
    started = time.monotonic()
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Static("x")
            yield DataTable()
            with TabbedContent():
                for i in range(5):
                    with TabPane(f"t{i}"):
                        yield DataTable()
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("a", "b", "c")
            for i in range(100):
                table.add_row(str(i), "x" * 10, "y" * 20)

    imported = time.monotonic()
    app = Bare()

    async def measure() -> float:
        t0 = time.monotonic()
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause()
            return time.monotonic() - t0

    render = asyncio.run(measure())
    print(RESULT_TAG + json.dumps({"render_s": render, "import_s": imported - started}))


def child(config: str, screen: str) -> None:
    """Open ``screen`` headless at 120x40; print the time to its first full render."""
    started = time.monotonic()
    from agent.config import load_config
    from tui.app import make_app

    imported = time.monotonic()
    app = make_app(load_config(config), screen=screen, live=False)

    async def measure() -> float:
        t0 = time.monotonic()
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(3):  # the list, then the detail its first row asks for
                await app.workers.wait_for_complete()
                await pilot.pause()
            rendered = time.monotonic() - t0
            problem = app.screen.query("#problem.-shown")
            if problem:
                raise SystemExit(f"{screen}: {problem.first().render()}")
        return rendered

    render = asyncio.run(measure())
    print(RESULT_TAG + json.dumps({"render_s": render, "import_s": imported - started}))


def build(root: Path, runs: int, versions: int, tables: int) -> Path:
    from tests.tui.worlds import build_world

    if root.exists():
        shutil.rmtree(root)
    t0 = time.monotonic()
    config = build_world(root, runs=runs, versions=versions, tables=tables)
    print(f"built {root.name}: {runs:,} runs, {versions:,} model versions, {tables:,} tables "
          f"in {time.monotonic() - t0:.1f} s", flush=True)
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--versions", type=int, default=1_000)
    p.add_argument("--tables", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3, help="runs of each screen (median)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "tui_start")
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "SCREEN"), help=argparse.SUPPRESS)
    p.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.floor:
        floor()
        return
    worlds = {"small": build(args.out / "small", 10, 4, 5),
              "big": build(args.out / "big", args.runs, args.versions, args.tables)}
    bare = [run_child([sys.executable, __file__, "--floor"], ROOT) for _ in range(args.repeat)]
    floor_s = statistics.median(b["render_s"] for b in bare)
    rows = []
    for screen in SCREENS:
        figures = {}
        for name, config in worlds.items():
            found = [run_child([sys.executable, __file__, "--child", str(config), screen],
                               ROOT) for _ in range(args.repeat)]
            figures[name] = {k: statistics.median(f[k] for f in found)
                             for k in ("render_s", "seconds", "rss_mib", "import_s")}
        rows.append((screen, figures))
    print(f"\n| screen | small render s | big render s | ratio big/small | ratio big/bare "
          f"Textual | big: imports s | big: process s | big RSS MiB | render < {GOAL_S:g} s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for screen, f in rows:
        small, big = f["small"], f["big"]
        print(f"| {screen} | {small['render_s']:.3f} | {big['render_s']:.3f} | "
              f"{big['render_s'] / small['render_s']:.2f}x | {big['render_s'] / floor_s:.2f}x | "
              f"{big['import_s']:.2f} | {big['seconds']:.2f} | {big['rss_mib']:.0f} | "
              f"{'met' if big['render_s'] < GOAL_S else 'MISSED'} |")
    print(f"\nbare Textual app (a 100-row table, five tabs): {floor_s:.3f} s to render")
    print(f"median of {args.repeat} runs per screen and world; each in a child process")


if __name__ == "__main__":
    main()
