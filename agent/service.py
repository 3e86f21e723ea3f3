"""The agent: `silta agent run`. One process, one lock, syncs on a thread pool,
trainings, predictions and monitors in worker processes (``agent/ml/worker.py``),
alert notifications on a thread of their own (``agent/alert_delivery.py``).

Triggers (cron, file arrival, settle timers, `after` links, operator commands, start-up
catch-up) all go through :class:`Dispatcher`, which runs a job at most once at a time
and coalesces the triggers that arrive meanwhile into one follow-up run. A job that
committed something new triggers the jobs that follow it; an alert in a model's
``retrain_on`` triggers its trainings (``agent/continuous.py``). SIGTERM/SIGINT stop new work
and let in-flight batches finish (the engine stops between batches; ML workers get
``ml_stop_grace_seconds``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import FrameType
from typing import Any

from agent.alert_delivery import Notifier, notify_once
from agent.commands import (
    RUN_KINDS,
    SLOW_KINDS,
    CommandContext,
    execute,
    requested_job,
    validate,
)
from agent.config import LoadedConfig, SyncConfig
from agent.continuous import allowed, registered, retraining
from agent.jobs import Job, JobGraph
from agent.lock import InstanceLock
from agent.ml.config import TrainingConfig
from agent.ml.jobrunner import MlJobRunner
from agent.outcome import JobOutcome, SyncOutcome
from agent.progress import ProgressRecorder
from agent.run_alerts import interrupt_stale
from agent.runs import flush_quietly
from agent.scheduling import ClockWatch, Scheduler, missed_fire
from agent.sdnotify import (
    SystemdNotify,
    job_label,
    ready_status,
    running_status,
    unreadable_tables,
    wait_for_lake,
)
from agent.state import StateStore, now
from agent.stores import Store, open_lake, open_store
from agent.sync import SyncEngine
from agent.watcher import FolderWatcher
from connectors.abc import FileStore
from connectors.errors import NotFoundError, SiltaError, UsageError
from connectors.names import safe_display

log = logging.getLogger("silta.agent")
RESCAN_SECONDS = 60.0
COMMAND_POLL_SECONDS = 1.0
OUTCOMES_KEPT = 10_000


Outcome = SyncOutcome | JobOutcome


class Dispatcher:
    """Runs jobs on pools: one run per job at a time, extra triggers coalesced.

    Syncs run on ``sync_workers`` threads; trainings and predictions on ``ml_workers``
    threads, each of which waits for the worker process of its run.
    """

    def __init__(self, run_job: Callable[[str, str], Outcome], sync_workers: int,
                 ml_workers: int, cancel: threading.Event,
                 on_done: Callable[[str, Outcome], None]) -> None:
        self.run_job = run_job
        self.cancel = cancel
        self.on_done = on_done
        self._pools = {"sync": ThreadPoolExecutor(sync_workers, thread_name_prefix="sync"),
                       "ml": ThreadPoolExecutor(ml_workers, thread_name_prefix="ml")}
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: dict[str, str] = {}
        self._timers: dict[str, threading.Timer] = {}

    def request(self, job_id: str, trigger: str, delay: float = 0.0) -> None:
        if self.cancel.is_set():
            return
        if delay > 0:
            with self._lock:
                if job_id in self._timers:
                    return
                timer = threading.Timer(delay, self._fire_timer, (job_id, trigger))
                timer.daemon = True
                self._timers[job_id] = timer
            timer.start()
            return
        with self._lock:
            if job_id in self._running:
                self._again.setdefault(job_id, trigger)
                return
            self._running.add(job_id)
        pool = self._pools["sync" if job_id.startswith("sync:") else "ml"]
        pool.submit(self._run, job_id, trigger)  # _run reports through on_done

    def _fire_timer(self, job_id: str, trigger: str) -> None:
        with self._lock:
            self._timers.pop(job_id, None)
        self.request(job_id, trigger)

    def _run(self, job_id: str, trigger: str) -> Outcome:
        try:
            outcome = self.run_job(job_id, trigger)
            self.on_done(job_id, outcome)
            return outcome
        finally:
            with self._lock:
                self._running.discard(job_id)
                again = self._again.pop(job_id, None)
            if again is not None:
                self.request(job_id, again)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    @property
    def in_flight(self) -> int:
        """How many jobs run now."""
        with self._lock:
            return len(self._running)

    def shutdown(self) -> None:
        with self._lock:
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()
        for pool in self._pools.values():
            pool.shutdown(wait=True)


class Agent:
    """The long-running service, or a single pass with ``once=True``."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.graph = JobGraph(self.config)
        self.name = self.config.agent.name
        self.stop = threading.Event()
        self.started_at = now()
        #: the latest outcomes (a service runs for months: bounded), and how many in all
        self.outcomes: deque[Outcome] = deque(maxlen=OUTCOMES_KEPT)
        self.finished = 0
        self._out_lock = threading.Lock()
        #: failed runs in a row per job, for the back-off of their retries
        self._failures: dict[str, int] = {}
        self._dispatcher: Dispatcher | None = None
        self._has_version: Callable[[str], bool] = lambda model: True
        #: retraining asked for by alerts recovered at start-up (see MlJobRunner.recover)
        self._recovered: list[tuple[str, int]] = []
        #: slow commands (replays) on threads of their own, by command id
        self._slow: dict[int, dict[str, Any]] = {}
        self._slow_lock = threading.Lock()
        self._flushing: threading.Thread | None = None

    # -- assembly ---------------------------------------------------------------------
    def _build(self) -> tuple[StateStore, SyncEngine, MlJobRunner]:
        state = StateStore(self.loaded.state_dir)
        interrupt_stale(state, self.config.alerts, self.name, left_by="an agent")
        if state.interrupt_stale_commands():
            log.warning("operator commands left running by an agent that stopped are marked "
                        "failed; their users can queue them again")
        stores: dict[str, Store] = {n: open_store(self.loaded, n)
                                    for n in self.config.connectors}
        lake = open_lake(self.loaded)
        self._has_version = registered(lake)
        engine = SyncEngine(self.loaded, state, lake, stores, self.name)
        ml = MlJobRunner(self.loaded, state, lake, self.name)
        self._recovered = ml.recover()
        return state, engine, ml

    def _runner(self, engine: SyncEngine, ml: MlJobRunner
                ) -> Callable[[str, str], Outcome]:
        def run(job_id: str, trigger: str) -> Outcome:
            kind, _, name = job_id.partition(":")
            if kind == "sync":
                # live figures for `silta tui`, about once a second
                return engine.run(name, trigger=trigger, cancel=self.stop,
                                  on_progress=ProgressRecorder(engine.state, job_id))
            return ml.run(kind, name, trigger=trigger, cancel=self.stop)
        return run

    def _record(self, job_id: str, outcome: Outcome) -> None:
        with self._out_lock:
            self.outcomes.append(outcome)
            self.finished += 1
        if self.stop.is_set() or self._dispatcher is None:
            return
        if isinstance(outcome, SyncOutcome) and outcome.next_check is not None:
            self._dispatcher.request(job_id, "settle", delay=outcome.next_check + 0.2)
        retry = self._retry_delay(job_id, outcome)
        if retry is not None:
            log.info("%s failed on a transient error; tried again in %.0f s", job_id, retry)
            self._dispatcher.request(job_id, "retry", delay=retry)
        if _committed(outcome):
            # Something new landed: the jobs that follow this one (`after`) run now.
            for follower in self.graph.followers(job_id):
                self._request(self._dispatcher, follower, f"after:{job_id}")
        for job, alert in retraining(outcome):
            self._dispatcher.request(job, f"alert:{alert}")

    def _retry_delay(self, job_id: str, outcome: Outcome) -> float | None:
        """Seconds until a run that failed on a transient error (a server away, a lost
        link) is tried again: ``retry_seconds``, doubled for each failure in a row, at
        most ``retry_max_seconds``. A job without a schedule would otherwise wait for a
        person; a job with one retries sooner than its next fire."""
        with self._out_lock:
            if outcome.status != "failed":
                self._failures.pop(job_id, None)
                return None
            failures = self._failures[job_id] = self._failures.get(job_id, 0) + 1
        agent = self.config.agent
        if not outcome.retriable or agent.retry_seconds <= 0:
            return None
        return float(min(agent.retry_max_seconds,
                         agent.retry_seconds * 2 ** min(failures - 1, 20)))

    def _wanted(self, job: Job, trigger: str) -> bool:
        """False for a training whose model's retrain_on leaves this trigger out."""
        if isinstance(job.config, TrainingConfig) and not allowed(
                self.config, job.config, trigger, self._has_version):
            log.info("%s not started by %s: not in retrain_on of %s", job.id, trigger,
                     job.config.model)
            return False
        return True

    def _request(self, dispatcher: Dispatcher, job: Job, trigger: str) -> None:
        if self._wanted(job, trigger):
            dispatcher.request(job.id, trigger)

    def _beat(self, state: StateStore, status: str) -> None:
        try:
            state.beat(self.name, pid=os.getpid(), host=socket.gethostname(),
                       started_at=self.started_at, state=status)
        except SiltaError as e:
            log.error("heartbeat not recorded: %s", e)

    # -- entry points -----------------------------------------------------------------
    def run_once(self) -> int:
        """Run every enabled job once, in `after` order; 1 when any of them failed."""
        with InstanceLock(self.loaded.state_dir):
            state, engine, ml = self._build()
            self._install_signals()
            self._beat(state, "running-once")
            # commands queued while no agent ran: alerts and models first, runs in the pass
            queued = self._commands_once(state, self._context(engine, ml, None))
            run = self._runner(engine, ml)
            outcomes: list[Outcome] = []
            ran: dict[str, Outcome] = {}
            jobs = [j.id for j in self.graph.enabled() if self._wanted(j, "once")]
            jobs += [j for j in queued if j not in jobs]  # an operator's word runs any job
            trigger = {job: f"operator:{cs[0]['os_user']}" for job, cs in queued.items()}
            agent = self.config.agent
            with ThreadPoolExecutor(agent.sync_workers, thread_name_prefix="sync") as syncs, \
                    ThreadPoolExecutor(agent.ml_workers, thread_name_prefix="ml") as mls:
                try:
                    for wave in self.graph.waves(jobs):  # ingests, training, predict
                        futures = {j: (syncs if j.startswith("sync:") else mls).submit(
                            run, j, trigger.get(j, "once")) for j in wave}
                        ran.update((j, f.result()) for j, f in futures.items())
                        outcomes += [ran[j] for j in wave]
                finally:
                    self._finish_asked(state, queued, ran)
                # continuous training: trainings the monitors' new alerts asked for
                asked = [*self._recovered, *(p for o in outcomes for p in retraining(o))]
                again = {job: alert for job, alert in reversed(asked)}  # one run a job
                outcomes += [f.result() for f in [mls.submit(run, j, f"alert:{a}")
                                                  for j, a in again.items()]]
            notify_once(Notifier(ml.book, self.config.alerts))
            flush_quietly(state, engine.lake)
            self.outcomes.extend(outcomes)
            self._beat(state, "stopped")
            return 1 if any(o.failed for o in outcomes) else 0

    def run_forever(self) -> int:
        sd = SystemdNotify()  # $NOTIFY_SOCKET: READY=1, WATCHDOG=1, STATUS=, STOPPING=1
        with InstanceLock(self.loaded.state_dir):
            state, engine, ml = self._build()
            self._install_signals()
            # READY=1 waits for the lake too (agent/sdnotify.py says why)
            if not wait_for_lake(engine.lake, self.stop, sd):
                sd.stopping("stopping: stopped before the lake answered")
                log.info("agent %s stopped before the lake answered", self.name)
                return 0
            syncs = [s for s in self.config.syncs if s.enabled]
            unreadable = unreadable_tables(engine.lake, syncs)
            agent = self.config.agent
            dispatcher = Dispatcher(self._runner(engine, ml), agent.sync_workers,
                                    agent.ml_workers, self.stop, self._record)
            self._dispatcher = dispatcher
            commands = self._context(engine, ml, dispatcher)
            scheduler, watcher = Scheduler(), FolderWatcher()
            notifier = Notifier(ml.book, self.config.alerts)
            watched = 0
            for job in self.graph.enabled():
                if job.schedule:
                    scheduler.add_cron(job.id, job.schedule,
                                       self._on_cron(state, dispatcher, job))
                s = job.config
                if not isinstance(s, SyncConfig):
                    continue
                store = engine.store_for(s.connector)
                if s.watch and isinstance(store, FileStore) and not s.publishes:
                    root = store.local_root()
                    if root is not None:
                        watcher.watch(root, partial(dispatcher.request, job.id,
                                                    "file-arrival", 0.5))
                        watched += 1
            self._catch_up(state, dispatcher)
            for job_id, alert in self._recovered:
                dispatcher.request(job_id, f"alert:{alert}")
            scheduler.start()
            watcher.start()
            notifier.start()
            log.info("agent %s started (pid %d); %d sync(s), %d training(s), "
                     "%d prediction(s), %d monitor(s)", self.name, os.getpid(),
                     len(self.config.syncs), len(self.config.trainings),
                     len(self.config.predictions), len(self.config.monitors))
            self._beat(state, "running")
            sd.ready(ready_status(len(syncs), len(self.graph.enabled()), watched, unreadable))
            try:
                self._loop(state, engine, dispatcher, commands, sd, unreadable, scheduler)
            finally:
                sd.stopping()
                log.info("agent %s stopping: finishing in-flight work", self.name)
                self._beat(state, "stopping")
                scheduler.shutdown()
                watcher.stop()
                dispatcher.shutdown()
                notifier.stop()
                self._abandon_slow(state)
                flush_quietly(state, engine.lake)
                self._beat(state, "stopped")
                log.info("agent %s stopped", self.name)
        return 0

    # -- pieces -----------------------------------------------------------------------
    def _on_cron(self, state: StateStore, dispatcher: Dispatcher, job: Job
                 ) -> Callable[[], None]:
        def fire() -> None:
            state.set_last_fire(job.id, dt.datetime.now(dt.UTC))
            self._request(dispatcher, job, "schedule")
        return fire

    def _catch_up(self, state: StateStore, dispatcher: Dispatcher) -> None:
        """Start-up: scan watched syncs; run scheduled jobs once if a fire was missed."""
        now_utc = dt.datetime.now(dt.UTC)
        for job in self.graph.enabled():
            schedule = job.schedule
            missed = missed_fire(schedule, state.last_fire(job.id), now_utc) if schedule \
                else None
            if schedule and state.last_fire(job.id) is None:
                state.set_last_fire(job.id, now_utc)
            if missed is not None:
                log.info("%s missed its schedule at %s while the agent was down; catching "
                         "up once", job.id, missed.isoformat())
                state.set_last_fire(job.id, now_utc)
                self._request(dispatcher, job, "catch-up")
            elif isinstance(job.config, SyncConfig) and job.config.watch:
                dispatcher.request(job.id, "startup-scan")

    def _loop(self, state: StateStore, engine: SyncEngine, dispatcher: Dispatcher,
              commands: CommandContext, sd: SystemdNotify, unreadable: list[str],
              scheduler: Scheduler) -> None:
        beat_every = self.config.agent.heartbeat_seconds
        clock_watch = ClockWatch()
        poll = sd.loop_seconds(COMMAND_POLL_SECONDS)  # shorter if the watchdog needs it
        last_beat = last_rescan = 0.0
        clock = 0.0
        seen, finished = 0, 0.0  # outcomes counted so far; when the last one came
        while not self.stop.wait(poll):
            clock += poll
            sd.watchdog()  # from this loop itself: when it is stuck, systemd restarts us
            step = clock_watch.step()
            if step:
                self._clock_stepped(state, dispatcher, scheduler, step)
            with self._out_lock:
                done = self.finished
                last = job_label(self.outcomes[-1]) if self.outcomes else None
            if done != seen:
                seen, finished = done, time.monotonic()
            if clock - last_beat >= beat_every:
                self._beat(state, "running")
                sd.status(running_status(dispatcher.in_flight, last,
                                         time.monotonic() - finished, unreadable))
                last_beat = clock
            if clock - last_rescan >= RESCAN_SECONDS:
                # Events can be lost (network mounts give none): rescan watched syncs.
                for s in self.config.syncs:
                    if s.enabled and s.watch:
                        dispatcher.request(f"sync:{s.name}", "rescan")
                # Run records the lake refused earlier (it was away) are written now, off
                # this loop: a lake that hangs must not starve the watchdog.
                self._flush_in_background(state, engine)
                last_rescan = clock
            self._commands(state, commands)

    def _clock_stepped(self, state: StateStore, dispatcher: Dispatcher, scheduler: Scheduler,
                       step: float) -> None:
        """The wall clock was stepped: count every schedule again from the new now, and
        run once each job whose fire the step jumped over."""
        skipped = scheduler.realign()
        log.warning("the wall clock stepped %s by %.0f s; schedules are counted from %s now"
                    "%s", "forward" if step > 0 else "back", abs(step),
                    dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    f" ({', '.join(skipped)} caught up once)" if skipped else "")
        for job_id in skipped:
            try:
                state.set_last_fire(job_id, dt.datetime.now(dt.UTC))
            except SiltaError as e:  # the run matters more than its mark
                log.error("%s: its schedule mark was not recorded: %s", job_id, e)
            self._request(dispatcher, self.graph.get(job_id), "catch-up")

    def _flush_in_background(self, state: StateStore, engine: SyncEngine) -> None:
        if self._flushing is not None and self._flushing.is_alive():
            return  # the previous flush still waits for the lake
        self._flushing = threading.Thread(target=flush_quietly, args=(state, engine.lake),
                                          daemon=True, name="flush-runs")
        self._flushing.start()

    # -- operator commands (agent/commands.py) -----------------------------------------
    def _context(self, engine: SyncEngine, ml: MlJobRunner, dispatcher: Dispatcher | None
                 ) -> CommandContext:
        return CommandContext(book=ml.book, lake=engine.lake,
                              jobs=frozenset(j.id for j in self.graph.all),
                              request=None if dispatcher is None else dispatcher.request)

    def _claim(self, state: StateStore) -> list[dict[str, Any]]:
        try:
            commands = state.claim_commands()
        except (SiltaError, ValueError) as e:  # ValueError: args that are not JSON
            log.error("cannot read the command queue: %s", e)
            return []
        for c in commands:
            log.info("command %d: %s from %s", c["id"], safe_display(str(c["kind"])),
                     safe_display(str(c["os_user"])))
        return commands

    def _commands(self, state: StateStore, ctx: CommandContext) -> None:
        """Carry out what was queued: replays on a thread each, the rest here and now."""
        for c in self._claim(state):
            if c["kind"] in SLOW_KINDS:
                with self._slow_lock:
                    self._slow[int(c["id"])] = c
                threading.Thread(target=self._slow_command, args=(state, c, ctx), daemon=True,
                                 name=f"command-{c['id']}").start()
            else:
                self._finish_command(state, c, *execute(c, ctx))

    def _slow_command(self, state: StateStore, command: dict[str, Any],
                      ctx: CommandContext) -> None:
        status, result = execute(command, ctx)
        with self._slow_lock:
            # gone: the agent stopped meanwhile and recorded the command as interrupted
            mine = self._slow.pop(int(command["id"]), None) is not None
        if mine:
            self._finish_command(state, command, status, result)

    def _abandon_slow(self, state: StateStore) -> None:
        """Stopping: a replay still running (it writes nothing) will not be recorded."""
        with self._slow_lock:
            left, self._slow = list(self._slow.values()), {}
        for c in left:
            self._finish_command(state, c, "failed", "the agent stopped before it finished; "
                                 "queue it again")

    def _finish_command(self, state: StateStore, command: dict[str, Any], status: str,
                        result: str) -> None:
        try:
            state.finish_command(int(command["id"]), status, result)
        except SiltaError as e:
            log.error("command %d: its outcome was not recorded: %s", command["id"], e)
        (log.info if status == "done" else log.warning)(
            "command %d (%s from %s) %s: %s", command["id"], safe_display(str(command["kind"])),
            safe_display(str(command["os_user"])), status, result)

    def _commands_once(self, state: StateStore, ctx: CommandContext
                       ) -> dict[str, list[dict[str, Any]]]:
        """--once: carry out the queued commands that are not runs, replays included;
        return the runs asked for (job id -> its commands), refusing unknown jobs."""
        asked: dict[str, list[dict[str, Any]]] = {}
        for c in self._claim(state):
            if c["kind"] not in RUN_KINDS:
                self._finish_command(state, c, *execute(c, ctx))
                continue
            try:
                job = requested_job(c["kind"], validate(c["kind"], c["args"]), ctx.jobs)
            except (UsageError, NotFoundError) as e:
                self._finish_command(state, c, "refused", str(e))
                continue
            asked.setdefault(job, []).append(c)
        return asked

    def _finish_asked(self, state: StateStore, asked: dict[str, list[dict[str, Any]]],
                      ran: dict[str, Outcome]) -> None:
        for job, commands in asked.items():
            outcome = ran.get(job)
            for c in commands:
                if outcome is None:
                    self._finish_command(state, c, "failed", f"the --once pass stopped "
                                         f"before {job} ran")
                else:
                    self._finish_command(state, c, "done", f"ran in the --once pass: "
                                         f"{outcome.status}")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _committed(outcome: Outcome) -> bool:
    if isinstance(outcome, SyncOutcome):
        return outcome.batches > 0
    return outcome.committed
