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
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    worlds = {"small": build(args.out / "small", 10, 4, 5),
              "big": build(args.out / "big", args.runs, args.versions, args.tables)}
    rows = []
    for screen in SCREENS:
        figures = {}
        for name, config in worlds.items():
            found = [run_child([sys.executable, __file__, "--child", str(config), screen],
                               ROOT) for _ in range(args.repeat)]
            figures[name] = {k: statistics.median(f[k] for f in found)
                             for k in ("render_s", "seconds", "rss_mib")}
        rows.append((screen, figures))
    print(f"\n| screen | small render s | big render s | ratio big/small | big process s "
          f"(imports incl.) | big RSS MiB | goal < {GOAL_S:g} s |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for screen, f in rows:
        small, big = f["small"], f["big"]
        print(f"| {screen} | {small['render_s']:.3f} | {big['render_s']:.3f} | "
              f"{big['render_s'] / small['render_s']:.2f}x | {big['seconds']:.2f} | "
              f"{big['rss_mib']:.0f} | {'met' if big['render_s'] < GOAL_S else 'MISSED'} |")
    print(f"\nmedian of {args.repeat} runs per screen and world; each in a child process")


if __name__ == "__main__":
    main()
