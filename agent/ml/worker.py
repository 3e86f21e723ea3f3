"""ML runs in worker processes: a crash or a long fit never stalls the agent.

Each run gets a fresh process (``spawn``: no locks or threads inherited from the
agent), which loads the config itself, runs :func:`execute_job` and sends the outcome
back through a pipe. The parent waits on a thread of its own, so the agent's loop,
heartbeats and syncs go on meanwhile.

- The worker dies with its parent (``PR_SET_PDEATHSIG``): an agent killed with -9 leaves
  no orphan that could commit behind a restarted agent's back. (Were one to survive,
  the prediction commit's compare-and-swap still refuses an overlapping range.)
- A worker that dies (segfault, OOM kill) is a failed run with its exit status; the
  next trigger starts a fresh one.
- On shutdown a running worker gets ``grace`` seconds, then SIGTERM, then SIGKILL: both
  kinds of run are safe to stop (a stopped training leaves at most an unused version
  number; a stopped prediction is repeated, never doubled).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from agent.outcome import JobOutcome

log = logging.getLogger("silta.worker")
_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.2


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # not Linux: the compare-and-swap commit still guards predictions
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child(config_path: str, kind: str, name: str, run_id: str, force: bool,
           log_level: str, log_format: str, parent_pid: int, conn: Connection) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from agent.config import load_config
    from agent.logs import setup_logging
    from agent.ml.execute import execute_job

    setup_logging(log_level, log_format)
    try:
        outcome = execute_job(load_config(config_path), kind, name, run_id, force=force)
    except BaseException as e:  # the config changed since the agent read it, say
        outcome = JobOutcome(kind, name, run_id, status="failed",
                             error=f"{type(e).__name__}: {e}", retriable=True)
    conn.send(outcome)
    conn.close()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    # deltalake's native thread pools can abort at interpreter exit: leave now
    os._exit(0)


def run_in_worker(config_path: str, kind: str, name: str, run_id: str, *, force: bool,
                  cancel: threading.Event, grace: float, log_level: str = "info",
                  log_format: str = "text") -> JobOutcome:
    """Run the job in a new process and return its outcome (or why there is none)."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, name=f"silta-{kind}-{name}",
                       args=(config_path, kind, name, run_id, force, log_level, log_format,
                             os.getpid(), send))
    proc.start()
    send.close()
    stop_at: float | None = None
    try:
        while True:
            if receive.poll(POLL_SECONDS):
                try:
                    outcome: JobOutcome = receive.recv()
                except EOFError:
                    break  # died while sending: reported below
                proc.join(30)
                return outcome
            if not proc.is_alive():
                break
            if cancel.is_set():
                stop_at = stop_at or time.monotonic() + grace
                if time.monotonic() >= stop_at:
                    _stop(proc)
                    return JobOutcome(kind, name, run_id, status="failed", retriable=True,
                                      error="stopped by the agent's shutdown after "
                                            f"{grace:g} s; it runs again next time")
    finally:
        receive.close()
    proc.join(5)
    code = proc.exitcode
    how = (f"was killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
           else f"exited with status {code}")
    return JobOutcome(kind, name, run_id, status="failed", retriable=True,
                      error=f"the worker process {how} before it finished (out of memory? "
                            "see the log); nothing half-written is kept, the next run "
                            "starts again")


def _stop(proc: mp.process.BaseProcess) -> None:
    proc.terminate()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(10)
