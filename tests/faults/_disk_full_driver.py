"""The driver of tests/faults/test_disk_full.py: one scenario inside a private mount namespace.

Run as ``unshare -m --propagation private python -m tests.faults._disk_full_driver SPEC``.
SPEC is a JSON file ``{"result": PATH, "steps": [...]}``; each step is one of

- ``{"op": "mount", "path": P, "kib": N}``: a tmpfs of N KiB over folder P (seen only in
  this namespace, gone when it ends);
- ``{"op": "fill", "path": B, "leave_pages": R}``: a ballast file B that takes every free
  block of its file system but R pages (4 KiB each), so the next writer runs out there;
- ``{"op": "unfill", "path": B}``: the ballast removed;
- ``{"op": "pad", "path": F, "room": N}``: F (a log file) grown until N bytes are left
  in its last page, so its next line needs a new page;
- ``{"op": "move", "src": S, "dst": D}``: files S (prepared outside) moved into place;
- ``{"op": "run", "name": NAME, "cwd": C, "args": [...]}``: the real `silta ARGS` to the end;
- ``{"op": "close-store", "path": S}``: the state store in S opened and closed as a CLI
  command that writes to it does (agent/jobs_cli.py): the last connection to close
  checkpoints the WAL and removes it and the -shm file;
- ``{"op": "tree", "name": NAME, "path": P}``: every file under P with its size;
- ``{"op": "copy", "src": S, "dst": D}``: folder S copied out (off the tmpfs) for the test,
  the ballast left behind.

Each step's outcome goes to ``result`` as it happens; a step that raises ends the scenario
with the error recorded there (the test then fails and shows it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from agent.state import StateStore
from tests.e2e._cli import SILTA, cli_env

PAGE = 4096
CHUNK = 1 << 20


def _free_pages(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // PAGE


def _fill(ballast: Path, leave_pages: int) -> dict[str, Any]:
    """Write until ENOSPC, then give back exactly ``leave_pages`` pages (tmpfs frees them)."""
    block = b"\0" * CHUNK
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                if e.errno != 28:  # ENOSPC
                    raise
                break
        # the last megabyte may have been cut short: fill the rest page by page
        page = b"\0" * PAGE
        while True:
            try:
                if os.write(fd, page) < PAGE:
                    break
            except OSError as e:
                if e.errno != 28:
                    raise
                break
    finally:
        os.close(fd)
    whole = ballast.stat().st_size // PAGE * PAGE  # a cut-short write counts as nothing
    os.truncate(ballast, max(0, whole - leave_pages * PAGE))
    return {"free_pages": _free_pages(ballast.parent), "ballast_bytes": ballast.stat().st_size}


def _tree(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder, name)
            out[p.relative_to(root).as_posix()] = p.lstat().st_size
    return out


def _step(step: dict[str, Any]) -> dict[str, Any]:
    op = step["op"]
    if op == "mount":
        path = Path(step["path"])
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={step['kib']}k,mode=0755",
                        "tmpfs", str(path)], check=True, capture_output=True)
        return {"free_pages": _free_pages(path)}
    if op == "fill":
        return _fill(Path(step["path"]), int(step["leave_pages"]))
    if op == "unfill":
        Path(step["path"]).unlink()
        return {"free_pages": _free_pages(Path(step["path"]).parent)}
    if op == "pad":
        path = Path(step["path"])
        gap = (PAGE - path.stat().st_size % PAGE - int(step["room"])) % PAGE
        with open(path, "a", encoding="utf-8") as f:
            f.write("." * (gap - 1) + "\n" if gap else "")
        return {"size": path.stat().st_size}
    if op == "move":
        src, dst = Path(step["src"]), Path(step["dst"])
        dst.mkdir(parents=True, exist_ok=True)
        for p in sorted(src.iterdir()):
            shutil.move(p, dst / p.name)  # keeps the mtime: the files are long settled
        return {}
    if op == "run":
        env = cli_env()
        env.pop("RUST_BACKTRACE", None)  # as under systemd: a native panic says so in 2 lines
        proc = subprocess.run([*SILTA, *step["args"]], cwd=step["cwd"], env=env,
                              capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=float(step.get("timeout", 120)))
        return {"code": proc.returncode, "out": proc.stdout, "err": proc.stderr}
    if op == "close-store":
        store = StateStore(Path(step["path"]))
        store.query("SELECT 1")
        store.close()
        return {}
    if op == "tree":
        return {"files": _tree(Path(step["path"]))}
    if op == "copy":
        shutil.copytree(step["src"], step["dst"], symlinks=True,
                        ignore=shutil.ignore_patterns("ballast", ".ballast"))
        return {}
    raise ValueError(f"unknown step {op!r}")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    result_path = Path(spec["result"])
    results: list[dict[str, Any]] = []
    code = 0
    for step in spec["steps"]:
        try:
            results.append({"op": step["op"], "name": step.get("name"), **_step(step)})
        except Exception:
            results.append({"op": step["op"], "name": step.get("name"),
                            "driver_error": traceback.format_exc()})
            code = 1
            break
        finally:
            result_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
