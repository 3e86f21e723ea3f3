"""Time triggers, behind one small interface (APScheduler 3.11 stays in this module).

APScheduler's own job stores are not used: runs missed while the agent was down are
caught up from Silta's state store (``schedule_marks``), once, at start.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger("silta.schedule")


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

    def start(self) -> None:
        self._sched.start()

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)


def next_fire(expr: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When ``expr`` fires next after ``now`` (UTC), or None for a bad expression."""
    try:
        trigger = cron(expr)
    except ValueError:
        return None
    at = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(microseconds=1)  # strictly after
    fire: dt.datetime | None = trigger.get_next_fire_time(None, at)
    return fire
