"""`silta jobs ...`: every sync, training, prediction and monitor, and running one now."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from typing import Any

from agent.config import LoadedConfig, SyncConfig
from agent.jobs import JobGraph
from agent.lock import InstanceLock
from agent.ml.config import PredictionConfig, TrainingConfig
from agent.ml.monitor_config import MonitorConfig
from agent.outcome import JobOutcome
from agent.output import print_json, print_table
from agent.state import StateStore
from connectors.errors import LockHeldError
from connectors.names import safe_display


def job_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    rows = []
    for job in JobGraph(loaded.config).all:
        c = job.config
        if isinstance(c, SyncConfig):
            what = f"{c.source} -> {c.target}"
        elif isinstance(c, TrainingConfig):
            what = f"model {c.model}"
        elif isinstance(c, MonitorConfig):
            what = "monitor " + ", ".join(t for t in (c.input, c.predictions, c.labels) if t)
        else:
            assert isinstance(c, PredictionConfig)
            what = f"{c.model_ref}: {c.input} -> {c.output}"
        rows.append({"job": job.id, "kind": job.kind, "name": job.name, "what": what,
                     "schedule": job.schedule, "after": job.after, "enabled": job.enabled})
    return rows


def cmd_list(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    rows = job_rows(loaded)
    if args.json:
        print_json(rows)
    else:
        view = [{**r, "after": ", ".join(r["after"]) or "-"} for r in rows]
        print_table(view, ["job", "what", "schedule", "after", "enabled"], title="jobs",
                    empty="no jobs configured")
    return 0


def cmd_run(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Run one ML job now, here; queue it when the agent is running.

    A monitoring run here does what the agent would after it: the trainings its new
    alerts ask for (continuous training) run next, and the notifications are tried once
    (what fails waits in the outbox for the agent).
    """
    from agent.alert_delivery import Notifier, notify_once
    from agent.continuous import retraining
    from agent.ml.jobrunner import MlJobRunner
    from agent.stores import open_lake

    job = JobGraph(loaded.config).find(args.name)
    if job.kind == "sync":
        from agent.cli import cmd_sync_run

        args.name = job.name
        return cmd_sync_run(args)
    lock = lock_or_queue(loaded, "job.run", {"job": job.id}, job.id,
                         f"silta runs list --name {job.name}")
    if lock is None:
        return 0
    try:
        state = StateStore(loaded.state_dir)
        runner = MlJobRunner(loaded, state, open_lake(loaded), loaded.config.agent.name,
                             in_process=True)
        cancel = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: cancel.set())
        trigger = f"cli:{getpass.getuser()}"
        recovered = runner.recover()  # alerts a crashed run recorded but never raised
        outcomes = [runner.run(job.kind, job.name, trigger=trigger, cancel=cancel,
                               force=args.force)]
        for again, alert in dict.fromkeys([*recovered, *retraining(outcomes[0])]):
            kind, _, name = again.partition(":")
            outcomes.append(runner.run(kind, name, trigger=f"alert:{alert}", cancel=cancel))
        notify_once(Notifier(runner.book, loaded.config.alerts))
    finally:
        lock.release()
    print_job_outcomes(outcomes, args.json)
    return 1 if any(o.failed for o in outcomes) else 0


def lock_or_queue(loaded: LoadedConfig, kind: str, args: dict[str, Any], what: str,
                  follow: str) -> InstanceLock | None:
    """The agent's lock, held, for a run here; or None once the run is queued for the agent.

    The lock guards manual runs too: two writers of one ledger would race. When the agent
    holds it, the run goes to its command queue (and this says so on stdout).
    """
    lock = InstanceLock(loaded.state_dir)
    try:
        lock.acquire()
    except LockHeldError:
        command = StateStore(loaded.state_dir).enqueue_command(kind, args)
        sys.stdout.write(f"the agent is running: queued a run of {what} for it (command "
                         f"{command}); follow it with `{follow}`\n")
        return None
    try:
        _interrupt_stale_runs(loaded)
    except BaseException:
        lock.release()
        raise
    return lock


def _interrupt_stale_runs(loaded: LoadedConfig) -> None:
    """Runs left 'running' by a process that died (a killed `silta sync run` or `jobs run`):
    interrupted and alerted, as an agent does when it starts. Under the lock nothing else
    runs, so every 'running' run is stale; left alone, they would show as running until
    an agent starts, and their alerts (and a killed monitor's recovery) would wait too."""
    from agent.run_alerts import interrupt_stale

    state = StateStore(loaded.state_dir)
    try:
        interrupt_stale(state, loaded.config.alerts, loaded.config.agent.name,
                        left_by="a process")
    finally:
        state.close()


def print_job_outcomes(outcomes: list[JobOutcome], as_json: bool) -> None:
    if as_json:
        print_json([o.as_dict() for o in outcomes])
        return
    rows = [{**o.as_dict(), "job": f"{o.kind}:{o.name}",
             "model": f"{o.model}@{o.model_version}" if o.model_version else (o.model or "-")}
            for o in outcomes]
    print_table(rows, ["job", "status", "model", "rows", "table_version"], title="ML runs",
                empty="no ML jobs ran")
    for o in outcomes:
        text = o.error if o.failed else o.message
        if text:
            sys.stdout.write(safe_display(f"{o.kind}:{o.name}: {text}") + "\n")


def add_parser(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
               parser_class: type[argparse.ArgumentParser], func: Any) -> None:
    jb = sub.add_parser("jobs", help="syncs, trainings, predictions and monitors")
    jb_sub = jb.add_subparsers(dest="jobs_cmd", required=True, parser_class=parser_class)
    jb_sub.add_parser("list", parents=[common, as_json], help="every job and what it follows"
                      ).set_defaults(func=func)
    jr = jb_sub.add_parser("run", parents=[common, as_json],
                           help="run a job now (queued for the agent when it is running)")
    jr.add_argument("name", help="NAME or KIND:NAME (sync, train, predict, monitor)")
    jr.add_argument("--force", action="store_true",
                    help="train even when the data and config are unchanged")
    jb.set_defaults(func=func)
    jr.set_defaults(func=func)
