"""Run the real `silta` command in subprocesses, and read what it wrote independently."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCRIPT = Path(sys.executable).with_name("silta")
#: the console script when the venv has it, else the module (same code either way)
SILTA: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tui"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process: no inherited $SILTA_CONFIG, Arrow's system pool."""
    env = {k: v for k, v in os.environ.items() if k != "SILTA_CONFIG"}
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    env.update(extra)
    return env


@dataclass(repr=False)
class Result:
    code: int
    out: str
    err: str
    pid: int

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:  # shown by pytest when an assertion on it fails
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def silta(cwd: Path, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
          timeout: float = 120) -> Result:
    """Run `silta ARGS` in ``cwd`` to completion."""
    proc = subprocess.Popen([*SILTA, *map(str, args)], cwd=cwd, env=env or cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"silta {args} did not finish in {timeout} s\n{out}\n{err}"
                             ) from None
    return Result(proc.returncode, out, err, proc.pid)


class Background:
    """A `silta` process in the background; output goes to files (no pipe can fill up)."""

    def __init__(self, cwd: Path, *args: str | os.PathLike[str], name: str = "agent") -> None:
        self.out_path = cwd / f"{name}.stdout"
        self.err_path = cwd / f"{name}.stderr"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*SILTA, *map(str, args)], cwd=cwd, env=cli_env(),
                                         stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then wait; fails the test if it does not stop within ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the agent did not stop within {timeout} s of SIGTERM\n"
                                 f"{self.stderr()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def background(cwd: Path, *args: str | os.PathLike[str], name: str = "agent"
               ) -> Iterator[Background]:
    """A background `silta` that is always killed at the end, whatever happened."""
    bg = Background(cwd, *args, name=name)
    try:
        yield bg
    finally:
        bg.kill()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20,
             interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# -- independent readers --------------------------------------------------------------------
def delta_table(path: Path) -> Any:
    """All rows of the Delta table at ``path`` via deltalake (never to_pyarrow_table)."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_dataset().to_table()


def delta_count(path: Path) -> int | None:
    """Rows in the table, or None while it does not exist yet."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(path)):
        return None
    return int(DeltaTable(str(path)).to_pyarrow_dataset().count_rows())


def ledger(state_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of the agent's SQLite state store, opened read-only."""
    conn = sqlite3.connect(f"file:{state_dir / 'silta.db'}?mode=ro", uri=True, timeout=30)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def write_csv(path: Path, header: str, rows: list[str], *, via_tmp: bool = True) -> bytes:
    """Write a CSV the way an exporter should: under a .tmp name, then rename."""
    data = ("\n".join([header, *rows]) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if via_tmp:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    else:
        path.write_bytes(data)
    return data
