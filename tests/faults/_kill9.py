"""Shared parts of the kill -9 suites (test_kill9_sync/_publish/_ml).

A round starts a real `silta` process, waits until its run is under way (its row in the
runs table, then whatever moment the round targets), sends SIGKILL and records what the
kill hit. A kill counts as *mid-work* only when the run's row is still 'running' after
the process is gone: the process died before it could record the end of its run.

The expected alerts are computed by :class:`AlertModel` from what each round did, by the
rules of agent/run_alerts.py, and compared whole with the `alerts` table.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.state import INTERRUPTED_ERROR
from tests.e2e._cli import SILTA, cli_env

#: temporary names Silta's writers use; anything else must be a whole file
TEMP_NAMES = re.compile(
    r"\..+\.[0-9a-f]+\.silta\.tmp"  # folder / SFTP writes
    r"|\..+\.silta-\d+\.tmp"  # file publish
    r"|\.(model\.skops|card\.json|card\.md)\..+\.tmp"  # model artifacts (mkstemp)
    r"|_commit_[0-9a-f-]+\.json\.tmp")  # delta-rs commits in _delta_log


class Ledger:
    """The state store read-only through one connection (a connect per poll is slow)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "silta.db"
        self._conn: sqlite3.Connection | None = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self._conn is None:
            if not self.path.exists():
                return []
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                         isolation_level=None)
            self._conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in self._conn.execute(sql, params)]
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []  # the store is being created
            raise

    def run_ids(self, kind: str, name: str) -> list[str]:
        return [r["id"] for r in self.rows(
            "SELECT id FROM runs WHERE kind=? AND name=? ORDER BY started_at, rowid",
            (kind, name))]

    def run(self, run_id: str) -> dict[str, Any]:
        (row,) = self.rows("SELECT * FROM runs WHERE id=?", (run_id,))
        return row

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def start(root: Path, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`silta ARGS` in ``root``; stderr to ``log`` (a file: no pipe can fill up)."""
    with open(log, "wb") as err:
        return subprocess.Popen([*SILTA, *args], cwd=root, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=err)


def wait_until(proc: subprocess.Popen[bytes], event: Callable[[], Any], *,
               timeout: float = 60, interval: float = 0.002) -> Any:
    """Poll ``event`` until it returns something truthy (returned) or the process ends
    without it (None). A process that neither ends nor shows the event in ``timeout`` s
    hangs: the test fails (the timeout only stops a hang; nothing is asserted on time)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        found = event()
        if found:
            return found
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"pid {proc.pid} showed neither the event nor its end in "
                                 f"{timeout} s")
        time.sleep(interval)
    return event() or None  # it may have happened just before the end


def new_run(ledger: Ledger, kind: str, name: str, before: list[str]) -> Callable[[], str | None]:
    """An event: the id of a run of ``kind:name`` that was not in ``before``."""
    def event() -> str | None:
        fresh = [i for i in ledger.run_ids(kind, name) if i not in before]
        return fresh[0] if fresh else None
    return event


def delta_commits(table: Path) -> set[str]:
    try:
        return {n for n in os.listdir(table / "_delta_log") if n.endswith(".json")}
    except FileNotFoundError:
        return set()


def kill(proc: subprocess.Popen[bytes], pid: int | None = None) -> int:
    """SIGKILL ``pid`` (default: the process) while it runs; the process's exit code."""
    if proc.poll() is None:
        # it may end on its own just now: its exit code says how
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid or proc.pid, signal.SIGKILL)
    return proc.wait(timeout=120)


@dataclass
class Round:
    """What one round did: its kind, its run and how that run ended."""

    kind: str
    run_id: str | None
    status: str | None  # the run's status right after the process ended
    code: int

    @property
    def mid_work(self) -> bool:
        """Killed while its run was under way (the run could not record its end)."""
        return self.code == -signal.SIGKILL and self.status == "running"


@dataclass
class AlertModel:
    """The alerts of monitor "agent" for one job, by the rules of agent/run_alerts.py.

    A start (an agent's, or a CLI run's under the lock) that finds a run of the job left
    'running' raises ``interrupted`` (or counts it once more while it is open); a failed
    run raises ``run_failed``; any other finished run resolves both (by "auto"). A run
    killed mid-work records nothing. An alert's detail names the run of its last breach.
    """

    alerts: list[list[Any]] = field(default_factory=list)  # [check, count, state, run]
    stale: str | None = None  # the run of the job left 'running' for the next start

    def _breach(self, check: str, run_id: str | None) -> None:
        for a in self.alerts:
            if a[0] == check and a[2] == "firing":
                a[1] += 1
                a[3] = run_id
                return
        self.alerts.append([check, 1, "firing", run_id])

    def started(self) -> None:
        """A process that takes the lock (or an agent) started."""
        if self.stale is not None:
            self._breach("interrupted", self.stale)
            self.stale = None

    def ended(self, r: Round) -> None:
        if r.mid_work:
            self.stale = r.run_id
        elif r.status == "failed":
            self._breach("run_failed", r.run_id)
        elif r.status not in (None, "busy", "skipped", "running"):
            for a in self.alerts:
                a[2] = "resolved" if a[2] == "firing" else a[2]

    def expected(self, target: str) -> list[tuple[str, str, int, str, str | None, str | None]]:
        """(check, target, count, state, resolved by, run of the last breach) of each."""
        return [(a[0], target, a[1], a[2], "auto" if a[2] == "resolved" else None, a[3])
                for a in self.alerts]


def agent_alerts(ledger: Ledger) -> list[tuple[str, str, int, str, str | None, str | None]]:
    """(check_name, target, count, state, resolved_by, the run its detail names) of every
    alert of monitor "agent", oldest first."""
    return [(a["check_name"], a["target"], a["count"], a["state"], a["resolved_by"],
             json.loads(a["detail"]).get("run_id")) for a in ledger.rows(
        "SELECT check_name, target, count, state, resolved_by, detail FROM alerts "
        "WHERE monitor='agent' ORDER BY id")]


def top_level(root: Path) -> set[str]:
    return set(os.listdir(root))


def leftovers(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(temporary files of a known writer, other temporary files, Delta commits that are
    not whole JSON lines) under ``root``.

    A kill -9 may leave a temporary file behind; every file under a final name must be
    whole. A commit file that does not parse would be a half-written commit (the data
    files a commit names are checked by reading the tables with two readers)."""
    known: list[str] = []
    unknown: list[str] = []
    broken: list[str] = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if TEMP_NAMES.fullmatch(name):
                known.append(rel)
            elif name.endswith(".tmp") or "#" in name:  # object_store stages as NAME#N
                unknown.append(rel)
            elif path.parent.name == "_delta_log" and name.endswith(".json"):
                try:
                    for line in path.read_text(encoding="utf-8").splitlines():
                        json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    broken.append(rel)
    return sorted(known), sorted(unknown), sorted(broken)


#: (exit code, run status) of a round whose kill was not mid-work: the run ended first,
#: and the process exited, or was killed on its way out
FINISHED = {(0, "ok"), (-signal.SIGKILL, "ok")}


class Rounds:
    """Rounds of one job: start a real `silta` process, wait until the job's run is under
    way, ``moment(proc)`` (which waits for the targeted moment and returns the pid to
    kill, None for the process itself), SIGKILL; keep the books of what each kill hit."""

    def __init__(self, root: Path, config: Path, kind: str, name: str,
                 args: list[str] | None = None) -> None:
        self.root, self.config, self.kind, self.name = root, config, kind, name
        self.args = args or (["sync", "run", name] if kind in ("sync", "publish")
                             else ["jobs", "run", name])
        self.ledger = Ledger(root / "state")
        self.model = AlertModel()
        self.done: list[Round] = []
        (root / "logs").mkdir(exist_ok=True)

    def _start(self, label: str, args: list[str] | None
               ) -> tuple[subprocess.Popen[bytes], str, Path]:
        log = self.root / "logs" / f"{label}.err"
        before = self.ledger.run_ids(self.kind, self.name)
        proc = start(self.root, [*(args or self.args), "--config", str(self.config)], log)
        run_id = wait_until(proc, new_run(self.ledger, self.kind, self.name, before),
                            interval=0.005)
        if run_id is None:
            proc.wait()
            raise AssertionError(f"{label}: exit {proc.returncode} before a run of "
                                 f"{self.kind}:{self.name} started\n{log.read_text()}")
        return proc, run_id, log

    def clean(self, label: str, args: list[str] | None = None) -> float:
        """A run to its end; returns how long it worked after its run started."""
        proc, run_id, log = self._start(label, args)
        began = time.monotonic()
        assert proc.wait(timeout=300) == 0, log.read_text()
        self._record(Round(label, run_id, self.ledger.run(run_id)["status"], 0))
        return time.monotonic() - began

    def kill(self, label: str, moment: Callable[[subprocess.Popen[bytes]], int | None],
             args: list[str] | None = None,
             finished: set[tuple[int, str]] | None = None) -> Round:
        """One round; a run that was not killed mid-work must have ended as ``finished``
        (exit code, run status) allows."""
        proc, run_id, log = self._start(label, args)
        code = kill(proc, moment(proc))
        r = Round(label, run_id, self.ledger.run(run_id)["status"], code)
        if not r.mid_work:
            assert (code, r.status) in (finished or FINISHED), f"{label}: {r}\n" \
                                                               f"{log.read_text()}"
        self._record(r)
        return r

    def _record(self, r: Round) -> None:
        self.model.started()  # this start found the run the last kill left
        self.model.ended(r)
        self.done.append(r)

    @property
    def killed(self) -> list[Round]:
        return [r for r in self.done if r.mid_work]

    def check_runs_and_alerts(self, others: Counter[str] | None = None) -> None:
        """Every killed run interrupted with its reason, the other runs ok (or as
        ``others`` counts them); the alerts exactly as the model says."""
        runs = {r["id"]: r for r in self.ledger.rows(
            "SELECT id, status, error FROM runs WHERE kind=? AND name=?",
            (self.kind, self.name))}
        assert {r.run_id: (runs[str(r.run_id)]["status"], runs[str(r.run_id)]["error"])
                for r in self.killed} == {r.run_id: ("interrupted", INTERRUPTED_ERROR)
                                          for r in self.killed}
        rest = others or Counter()
        assert Counter(r["status"] for r in runs.values()) == Counter({
            "interrupted": len(self.killed), **rest,
            "ok": len(runs) - len(self.killed) - sum(rest.values())})
        alerts = agent_alerts(self.ledger)
        print(f"alerts of monitor agent: {alerts}")
        assert alerts == self.model.expected(f"{self.kind}:{self.name}")
        assert sum(a[2] for a in alerts if a[0] == "interrupted") == len(self.killed)
        assert {a[3] for a in alerts} == {"resolved"}
