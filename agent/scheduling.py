"""Time triggers, behind one small interface (APScheduler 3.11 stays in this module).

APScheduler's own job stores are not used: runs missed while the agent was down are
caught up from Silta's state store (``schedule_marks``), once, at start.

APScheduler 3 keeps each job's next run as a wall-clock time and sleeps towards it on the
monotonic clock, so a step of the wall clock (NTP after a bad RTC, an operator, a VM
resumed) misleads it: stepped back 2 h, every cron job stays silent for 2 h; stepped
forward past ``misfire_grace_time``, the fire is dropped. :class:`ClockWatch` tells a step
from time passing, and :meth:`Scheduler.realign` counts every job again from the new now.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger("silta.schedule")
#: the wall clock moved this much more (or less) than the monotonic one: it was stepped
CLOCK_STEP_SECONDS = 2.0


def cron(expr: str) -> CronTrigger:
    return CronTrigger.from_crontab(expr)


def missed_fire(expr: str, last: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The first fire time of ``expr`` after ``last`` that is already past, if any."""
    if last is None:
        return None
    trigger = cron(expr)
    nxt = trigger.get_next_fire_time(None, last.astimezone(trigger.timezone) +
                                     dt.timedelta(microseconds=1))
    if nxt is not None and nxt <= now:
        return nxt  # type: ignore[no-any-return]
    return None


class Scheduler:
    """Cron jobs that call back into the agent; the callbacks must return quickly."""

    def __init__(self) -> None:
        self._sched = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )

    def add_cron(self, job_id: str, expr: str, func: Callable[[], None]) -> None:
        self._sched.add_job(func, cron(expr), id=job_id, name=job_id)

    def next_run(self, job_id: str) -> dt.datetime | None:
        job = self._sched.get_job(job_id)
        return job.next_run_time if job is not None else None

    def realign(self) -> list[str]:
        """After a step of the wall clock: every job's next run counted from now.

        Returns the jobs whose next run the step jumped over (a step forward): the caller
        runs each once, as a start-up catch-up does; the fires in between are not repeated.
        """
        skipped: list[str] = []
        # Under the job-store lock, as APScheduler's own resume_job does: a due job cannot
        # start between the look at its next run and the change.
        with self._sched._jobstores_lock:
            now = dt.datetime.now(self._sched.timezone)
            for job in self._sched.get_jobs():
                if job.next_run_time is None:
                    continue  # paused
                if job.next_run_time <= now:
                    skipped.append(job.id)
                self._sched.modify_job(job.id, next_run_time=job.trigger.get_next_fire_time(
                    None, now))  # wakes the scheduler up
        return skipped

    def start(self) -> None:
        self._sched.start()

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)


class ClockWatch:
    """Tells a step of the wall clock from time passing (call :meth:`step` regularly)."""

    def __init__(self, tolerance: float = CLOCK_STEP_SECONDS) -> None:
        self.tolerance = tolerance
        self._wall, self._mono = time.time(), time.monotonic()

    def step(self) -> float:
        """Seconds the wall clock was stepped since the last call (< 0: back), else 0."""
        wall, mono = time.time(), time.monotonic()
        step = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return step if abs(step) > self.tolerance else 0.0


def next_fire(expr: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When ``expr`` fires next after ``now`` (UTC), or None for a bad expression."""
    try:
        trigger = cron(expr)
    except ValueError:
        return None
    at = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(microseconds=1)  # strictly after
    fire: dt.datetime | None = trigger.get_next_fire_time(None, at)
    return fire
