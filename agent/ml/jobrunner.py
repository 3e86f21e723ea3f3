"""The agent's side of an ML run: the run record, the worker, the ``_silta/runs`` row.

The run is opened in the state store before the worker starts, so a worker that dies
still leaves a record (failed, with its exit status), and closed with its lake row in
the same transaction (``agent/runs.py`` takes it from there). A monitoring run's check
results become alerts here (the worker never writes the state store), and a training
is held back while a schema alert of its model is open (``agent/continuous.py``).
"""

from __future__ import annotations

import logging
import threading

from agent.alerts import AlertBook, CheckResult
from agent.codeinfo import code_version
from agent.config import LoadedConfig
from agent.continuous import halting_alert, retrain_jobs
from agent.maintenance import maintain
from agent.ml.execute import execute_job
from agent.ml.predict_plan import plan_range
from agent.ml.worker import run_in_worker
from agent.outcome import JobOutcome
from agent.run_alerts import record_run
from agent.runs import RunRecord, flush_quietly
from agent.state import StateStore, now
from connectors.errors import SiltaError
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
        self.book = AlertBook(state, loaded.config.alerts, agent_name)
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
        halted = (self._halted(kind, name, run_id) or self._up_to_date(kind, name, run_id)
                  if not force else None)
        if halted is not None:
            outcome = halted
        elif self.in_process:
            outcome = execute_job(self.loaded, kind, name, run_id, force=force)
        else:
            outcome = run_in_worker(str(self.loaded.path), kind, name, run_id, force=force,
                                    cancel=cancel, grace=agent.ml_stop_grace_seconds,
                                    log_level=logging.getLevelName(
                                        logging.getLogger("silta").level).lower(),
                                    log_format=agent.log_format)
        if kind == "monitor" and not outcome.failed:
            self._alerts(outcome)
        self._finish(outcome, trigger, started)
        record_run(self.state, self.loaded.config.alerts, self.agent_name, kind=kind,
                   name=name, run_id=run_id, status=outcome.status, error=outcome.error,
                   model=outcome.model or self._model_of(kind, name))
        if kind == "predict" and outcome.committed:
            for out in outcome.outputs:  # under this job's lock: no race with its writes
                maintain(self.loaded, self.lake, str(out["table"]), self.agent_name)
        return outcome

    def recover(self) -> list[tuple[str, int]]:
        """Alerts of monitoring runs that committed their figures but stopped before they
        became alerts (the agent was killed, the worker died): rebuilt from
        ``_silta/metrics``. Returns the retraining the recovered alerts ask for."""
        retrain: list[tuple[str, int]] = []
        for row in self.state.query(
                "SELECT id, name FROM runs WHERE kind='monitor' AND status IN "
                "('interrupted', 'failed') AND alerts_checked IS NULL ORDER BY started_at"):
            # only with a run to recover: it pulls in scikit-learn and scipy (seconds at
            # every agent start and CLI run otherwise)
            from agent.ml.monitor import recorded_checks

            run_id, name = str(row["id"]), str(row["name"])
            try:
                checks = recorded_checks(self.lake, name, run_id)
            except SiltaError as e:
                log.warning("monitor=%s run %s: cannot look for its figures yet: %s", name,
                            run_id, e)
                continue
            if checks is not None and any(m.name == name for m in self.loaded.config.monitors):
                monitor = self.loaded.config.monitor(name)
                seen = self.book.observe(name, monitor.model,
                                         [CheckResult.from_dict(c) for c in checks], run_id)
                retrain += retrain_jobs(self.loaded.config, self.book, name, seen)
                log.warning("monitor=%s run %s stopped after recording its figures; its "
                            "alerts are taken from %s: %d fired, %d resolved", name, run_id,
                            "_silta/metrics", len(seen.fired), len(seen.resolved))
            with self.state.tx() as conn:
                conn.execute("UPDATE runs SET alerts_checked=1, status=CASE WHEN ? THEN 'ok' "
                             "ELSE status END, verified=CASE WHEN ? THEN ? ELSE verified END "
                             "WHERE id=?", (checks is not None, checks is not None,
                                                "recovered: alerts from _silta/metrics",
                                                run_id))
        return retrain

    def _model_of(self, kind: str, name: str) -> str | None:
        """The model a job works on, from the config (a failed run may not know it)."""
        config = self.loaded.config
        if kind == "train":
            return config.training(name).model
        if kind == "predict":
            return config.prediction(name).model_name
        if kind == "monitor":
            return config.monitor(name).model
        return None

    def _up_to_date(self, kind: str, name: str, run_id: str) -> JobOutcome | None:
        """An ok outcome, without a worker, for a prediction with no new input: a worker
        costs seconds of CPU (imports, the model), and an idle agent predicts every
        scheduled minute."""
        if kind != "predict" or self.in_process:
            return None
        conf = self.loaded.config.prediction(name)
        try:
            unit = plan_range(self.lake, conf)
        except SiltaError:
            return None  # the worker meets the problem and reports it in full
        if unit is not None:
            return None
        table = self.lake.open(conf.output)
        return JobOutcome(kind, name, run_id, table=conf.output,
                          table_version=table.version() if table is not None else None,
                          message=f"up to date: {conf.input} has no rows newer than the "
                                  "last run")

    def _halted(self, kind: str, name: str, run_id: str) -> JobOutcome | None:
        """A skipped outcome when a schema alert holds this training back."""
        if kind != "train":
            return None
        model = self.loaded.config.training(name).model
        alert = halting_alert(self.book, model)
        if alert is None:
            return None
        return JobOutcome(kind, name, run_id, status="skipped", model=model, message=(
            f"halted: schema alert {alert['id']} ({alert['summary']}) is open; fix the "
            f"input, or resolve it (`silta alerts resolve {alert['id']}`) or force the run"))

    def _alerts(self, outcome: JobOutcome) -> None:
        """Turn a monitoring run's check results into alerts and retraining requests."""
        checks = outcome.detail.pop("checks", [])
        results = [CheckResult.from_dict(c) for c in checks  # type: ignore[attr-defined]
                   if isinstance(c, dict)]
        seen = self.book.observe(outcome.name, outcome.model, results, outcome.run_id)
        retrain = retrain_jobs(self.loaded.config, self.book, outcome.name, seen)
        outcome.detail["breaches"] = [r.as_dict() for r in results if r.status == "breach"]
        outcome.detail["alerts"] = {"fired": seen.fired, "repeated": seen.repeated,
                                    "resolved": seen.resolved}
        outcome.detail["retrain"] = [{"job": j, "alert": a} for j, a in retrain]
        if seen.fired or seen.resolved:
            outcome.message += (f"; alerts: {len(seen.fired)} fired, {len(seen.resolved)} "
                                "resolved")

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
