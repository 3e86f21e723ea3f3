"""One benchmark path in a child process of its own: wall time, exact peak RSS, results."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

RESULT_TAG = "BENCH_RESULT "


def run_child(cmd: list[str], cwd: Path) -> dict[str, Any]:
    """Run ``cmd``; seconds (imports included), ``ru_maxrss`` from ``os.wait4`` (exact, not
    polled), and whatever the child printed after ``RESULT_TAG`` as JSON."""
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{out}\n{err}")
    result: dict[str, Any] = {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024}
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            result.update(json.loads(line[len(RESULT_TAG):]))
    return result
