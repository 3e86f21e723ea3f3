"""The agent: `silta agent run`. One process, one lock, syncs on a thread pool.

Triggers (cron, file arrival, settle timers, operator commands, start-up catch-up) all go
through :class:`Dispatcher`, which runs a sync at most once at a time and coalesces the
triggers that arrive meanwhile into one follow-up run. SIGTERM/SIGINT stop new work and
let in-flight batches finish (the engine stops between batches).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from types import FrameType

from agent.config import LoadedConfig
from agent.lock import InstanceLock
from agent.outcome import SyncOutcome
from agent.scheduling import Scheduler, missed_fire
from agent.state import StateStore, now
from agent.stores import Store, open_lake, open_store
from agent.sync import SyncEngine
from agent.watcher import FolderWatcher
from connectors.abc import FileStore
from connectors.errors import SiltaError

log = logging.getLogger("silta.agent")
RESCAN_SECONDS = 60.0
COMMAND_POLL_SECONDS = 1.0


class Dispatcher:
    """Runs syncs on a pool: one run per sync at a time, extra triggers coalesced."""

    def __init__(self, engine: SyncEngine, workers: int, cancel: threading.Event,
                 on_done: Callable[[SyncOutcome], None]) -> None:
        self.engine = engine
        self.cancel = cancel
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sync")
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: dict[str, str] = {}
        self._timers: dict[str, threading.Timer] = {}
        self.futures: list[Future[SyncOutcome]] = []

    def request(self, name: str, trigger: str, delay: float = 0.0) -> None:
        if self.cancel.is_set():
            return
        if delay > 0:
            with self._lock:
                if name in self._timers:
                    return
                timer = threading.Timer(delay, self._fire_timer, (name, trigger))
                timer.daemon = True
                self._timers[name] = timer
            timer.start()
            return
        with self._lock:
            if name in self._running:
                self._again.setdefault(name, trigger)
                return
            self._running.add(name)
        self.futures.append(self._pool.submit(self._run, name, trigger))

    def _fire_timer(self, name: str, trigger: str) -> None:
        with self._lock:
            self._timers.pop(name, None)
        self.request(name, trigger)

    def _run(self, name: str, trigger: str) -> SyncOutcome:
        try:
            outcome = self.engine.run(name, trigger=trigger, cancel=self.cancel)
            self.on_done(outcome)
            return outcome
        finally:
            with self._lock:
                self._running.discard(name)
                again = self._again.pop(name, None)
            if again is not None:
                self.request(name, again)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def shutdown(self) -> None:
        with self._lock:
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()
        self._pool.shutdown(wait=True)


class Agent:
    """The long-running service, or a single pass with ``once=True``."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.name = self.config.agent.name
        self.stop = threading.Event()
        self.started_at = now()
        self.outcomes: list[SyncOutcome] = []
        self._out_lock = threading.Lock()
        self._dispatcher: Dispatcher | None = None

    # -- assembly ---------------------------------------------------------------------
    def _build(self) -> tuple[StateStore, SyncEngine]:
        state = StateStore(self.loaded.state_dir)
        stale = state.interrupt_stale_runs()
        if stale:
            log.warning("%d run(s) were left running by an agent that stopped; marked "
                        "interrupted (their batches are recovered from the ledger)", stale)
        stores: dict[str, Store] = {n: open_store(self.loaded, n)
                                    for n in self.config.connectors}
        engine = SyncEngine(self.loaded, state, open_lake(self.loaded), stores, self.name)
        return state, engine

    def _record(self, outcome: SyncOutcome) -> None:
        with self._out_lock:
            self.outcomes.append(outcome)
        if self.stop.is_set() or self._dispatcher is None:
            return
        if outcome.next_check is not None:
            self._dispatcher.request(outcome.sync, "settle", delay=outcome.next_check + 0.2)
        if outcome.batches:
            # New data landed: the syncs that follow this one (`after`) run now.
            for s in self.config.syncs:
                if s.enabled and outcome.sync in s.after:
                    self._dispatcher.request(s.name, f"after:{outcome.sync}")

    def _beat(self, state: StateStore, status: str) -> None:
        try:
            state.beat(self.name, pid=os.getpid(), host=socket.gethostname(),
                       started_at=self.started_at, state=status)
        except SiltaError as e:
            log.error("heartbeat not recorded: %s", e)

    # -- entry points -----------------------------------------------------------------
    def run_once(self) -> int:
        """Run every enabled sync once; 0 when all went well, 1 when any batch failed."""
        with InstanceLock(self.loaded.state_dir):
            state, engine = self._build()
            self._install_signals()
            self._beat(state, "running-once")
            syncs = [s.name for s in self.config.syncs if s.enabled]
            outcomes: list[SyncOutcome] = []
            with ThreadPoolExecutor(self.config.agent.sync_workers,
                                    thread_name_prefix="sync") as pool:
                for wave in self.config.waves(syncs):  # `after`: publishes follow ingests
                    futures = [pool.submit(engine.run, n, trigger="once", cancel=self.stop)
                               for n in wave]
                    outcomes += [f.result() for f in futures]
            self.outcomes.extend(outcomes)
            self._beat(state, "stopped")
            return 1 if any(o.failed for o in outcomes) else 0

    def run_forever(self) -> int:
        with InstanceLock(self.loaded.state_dir):
            state, engine = self._build()
            self._install_signals()
            dispatcher = Dispatcher(engine, self.config.agent.sync_workers, self.stop,
                                    self._record)
            self._dispatcher = dispatcher
            scheduler, watcher = Scheduler(), FolderWatcher()
            for s in self.config.syncs:
                if not s.enabled:
                    continue
                if s.schedule:
                    scheduler.add_cron(f"sync:{s.name}", s.schedule,
                                       self._on_cron(state, dispatcher, s.name))
                store = engine.store_for(s.connector)
                if s.watch and isinstance(store, FileStore) and not s.publishes:
                    root = store.local_root()
                    if root is not None:
                        watcher.watch(root, partial(dispatcher.request, s.name,
                                                    "file-arrival", 0.5))
            self._catch_up(state, dispatcher)
            scheduler.start()
            watcher.start()
            log.info("agent %s started (pid %d); %d sync(s)", self.name, os.getpid(),
                     len(self.config.syncs))
            self._beat(state, "running")
            try:
                self._loop(state, dispatcher)
            finally:
                log.info("agent %s stopping: finishing in-flight batches", self.name)
                self._beat(state, "stopping")
                scheduler.shutdown()
                watcher.stop()
                dispatcher.shutdown()
                self._beat(state, "stopped")
                log.info("agent %s stopped", self.name)
        return 0

    # -- pieces -----------------------------------------------------------------------
    def _on_cron(self, state: StateStore, dispatcher: Dispatcher, name: str
                 ) -> Callable[[], None]:
        def fire() -> None:
            state.set_last_fire(f"sync:{name}", dt.datetime.now(dt.UTC))
            dispatcher.request(name, "schedule")
        return fire

    def _catch_up(self, state: StateStore, dispatcher: Dispatcher) -> None:
        """Start-up: scan watched syncs; run scheduled ones once if a fire was missed."""
        now_utc = dt.datetime.now(dt.UTC)
        for s in self.config.syncs:
            if not s.enabled:
                continue
            job = f"sync:{s.name}"
            missed = missed_fire(s.schedule, state.last_fire(job), now_utc) if s.schedule \
                else None
            if s.schedule and state.last_fire(job) is None:
                state.set_last_fire(job, now_utc)
            if missed is not None:
                log.info("sync=%s missed its schedule at %s while the agent was down; "
                         "catching up once", s.name, missed.isoformat())
                state.set_last_fire(job, now_utc)
                dispatcher.request(s.name, "catch-up")
            elif s.watch:
                dispatcher.request(s.name, "startup-scan")

    def _loop(self, state: StateStore, dispatcher: Dispatcher) -> None:
        beat_every = self.config.agent.heartbeat_seconds
        last_beat = last_rescan = 0.0
        clock = 0.0
        while not self.stop.wait(COMMAND_POLL_SECONDS):
            clock += COMMAND_POLL_SECONDS
            if clock - last_beat >= beat_every:
                self._beat(state, "running")
                last_beat = clock
            if clock - last_rescan >= RESCAN_SECONDS:
                # Events can be lost (network mounts give none): rescan watched syncs.
                for s in self.config.syncs:
                    if s.enabled and s.watch:
                        dispatcher.request(s.name, "rescan")
                last_rescan = clock
            self._commands(state, dispatcher)

    def _commands(self, state: StateStore, dispatcher: Dispatcher) -> None:
        try:
            commands = state.claim_commands()
        except SiltaError as e:
            log.error("cannot read the command queue: %s", e)
            return
        names = {s.name for s in self.config.syncs}
        for c in commands:
            if c["kind"] == "sync.run" and c["args"].get("sync") in names:
                dispatcher.request(c["args"]["sync"], f"operator:{c['os_user']}")
                state.finish_command(c["id"], "done", "queued a run")
                log.info("command %d from %s: run sync %s", c["id"], c["os_user"],
                         c["args"]["sync"])
            else:
                state.finish_command(c["id"], "refused", f"unknown command {c['kind']!r} or "
                                     "sync")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
