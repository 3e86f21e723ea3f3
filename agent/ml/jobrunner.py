"""The agent's side of an ML run: the run record, the worker, the ``_silta/runs`` row.

The run is opened in the state store before the worker starts, so a worker that dies
still leaves a record (failed, with its exit status), and closed with its lake row in
the same transaction (``agent/runs.py`` takes it from there).
"""

from __future__ import annotations

import logging
import threading

from agent.codeinfo import code_version
from agent.config import LoadedConfig
from agent.ml.execute import execute_job
from agent.ml.worker import run_in_worker
from agent.outcome import JobOutcome
from agent.runs import RunRecord, flush_quietly
from agent.state import StateStore, now
from connectors.lake import DeltaLake

log = logging.getLogger("silta.ml")


class MlJobRunner:
    """Runs trainings and predictions, one run per job at a time."""

    def __init__(self, loaded: LoadedConfig, state: StateStore, lake: DeltaLake,
                 agent_name: str, *, in_process: bool = False) -> None:
        self.loaded = loaded
        self.state = state
        self.lake = lake
        self.agent_name = agent_name
        #: run in this process (tests, `silta jobs run`), not in a worker
        self.in_process = in_process
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def run(self, kind: str, name: str, *, trigger: str, cancel: threading.Event | None = None,
            force: bool = False) -> JobOutcome:
        lock = self._lock(f"{kind}:{name}")
        if not lock.acquire(blocking=False):
            return JobOutcome(kind, name, "", status="busy", message="already running")
        try:
            return self._run(kind, name, trigger, cancel or threading.Event(), force)
        finally:
            lock.release()

    def _run(self, kind: str, name: str, trigger: str, cancel: threading.Event,
             force: bool) -> JobOutcome:
        run_id = self.state.start_run(kind, name, trigger, self.agent_name)
        started = now()
        log.info("%s=%s run %s started (%s)", kind, name, run_id, trigger)
        agent = self.loaded.config.agent
        if self.in_process:
            outcome = execute_job(self.loaded, kind, name, run_id, force=force)
        else:
            outcome = run_in_worker(str(self.loaded.path), kind, name, run_id, force=force,
                                    cancel=cancel, grace=agent.ml_stop_grace_seconds,
                                    log_level=logging.getLevelName(
                                        logging.getLogger("silta").level).lower(),
                                    log_format=agent.log_format)
        self._finish(outcome, trigger, started)
        return outcome

    def _finish(self, outcome: JobOutcome, trigger: str, started: str) -> None:
        finished = now()
        worth_a_row = outcome.committed or outcome.failed
        record = RunRecord(
            run_id=outcome.run_id, kind=outcome.kind, name=outcome.name, trigger=trigger,
            status=outcome.status, agent=self.agent_name, started_at=started,
            finished_at=finished, inputs=list(outcome.inputs), outputs=list(outcome.outputs),
            model=outcome.model, model_version=outcome.model_version,
            metrics=dict(outcome.metrics), config_hash=outcome.config_hash,
            code_version=code_version(), error=outcome.error,
            detail={**outcome.detail, "message": outcome.message})
        self.state.finish_run(
            outcome.run_id, status=outcome.status, rows=outcome.rows,
            batches=1 if outcome.committed else 0, failed=int(outcome.failed),
            table_version=outcome.table_version, error=outcome.error,
            verified=outcome.message or None, model=outcome.model,
            model_version=outcome.model_version,
            lake_row=record.as_row() if worth_a_row else None)
        if outcome.failed:
            log.error("%s=%s run %s failed: %s", outcome.kind, outcome.name, outcome.run_id,
                      outcome.error)
        else:
            log.info("%s=%s run %s %s: %s", outcome.kind, outcome.name, outcome.run_id,
                     outcome.status, outcome.message)
        if worth_a_row:
            flush_quietly(self.state, self.lake)
