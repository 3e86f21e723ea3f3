"""The job graph: syncs, trainings, predictions and monitors, and who follows whom.

A job is addressed as ``kind:name`` (``sync:coded_sample``, ``train:coder``,
``predict:code_answers``, ``monitor:answers``). ``after`` links make the graph: a job
runs when one it follows committed something new, and after it in ``silta agent run
--once``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.config import SiltaConfig, SyncConfig
from agent.config_base import parse_after
from agent.ml.config import PredictionConfig, TrainingConfig
from agent.ml.monitor_config import MonitorConfig
from connectors.errors import NotFoundError

JobKind = Literal["sync", "train", "predict", "monitor"]
JobConfig = SyncConfig | TrainingConfig | PredictionConfig | MonitorConfig


@dataclass(frozen=True)
class Job:
    """One configured job."""

    kind: JobKind
    config: JobConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def after(self) -> list[str]:
        """The ids of the jobs this one follows."""
        return [":".join(parse_after(a)) for a in self.config.after]

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def schedule(self) -> str | None:
        return self.config.schedule


class JobGraph:
    """Every job of a config, by id, with the `after` links resolved."""

    def __init__(self, config: SiltaConfig) -> None:
        jobs: list[Job] = [Job("sync", s) for s in config.syncs]
        jobs += [Job("train", t) for t in config.trainings]
        jobs += [Job("predict", p) for p in config.predictions]
        jobs += [Job("monitor", m) for m in config.monitors]
        self.all = jobs
        self._by_id = {j.id: j for j in jobs}

    def enabled(self) -> list[Job]:
        return [j for j in self.all if j.enabled]

    def get(self, job_id: str) -> Job:
        job = self._by_id.get(job_id)
        if job is None:
            raise NotFoundError("job", job_id, "see `silta jobs list`")
        return job

    def find(self, name: str) -> Job:
        """A job by ``kind:name`` or by its bare name (names are unique across kinds)."""
        if name in self._by_id:
            return self._by_id[name]
        found = [j for j in self.all if j.name == name]
        if not found:
            known = ", ".join(j.id for j in self.all) or "none configured"
            raise NotFoundError("job", name, f"jobs: {known}")
        return found[0]

    def followers(self, job_id: str) -> list[Job]:
        """Enabled jobs that follow ``job_id``."""
        return [j for j in self.enabled() if job_id in j.after]

    def waves(self, ids: list[str]) -> list[list[str]]:
        """``ids`` in runs that respect `after`: each wave follows the ones before it."""
        left = list(ids)
        waves: list[list[str]] = []
        done: set[str] = set()
        while left:
            wave = [i for i in left
                    if all(d in done or d not in left for d in self.get(i).after)]
            if not wave:  # a cycle (refused by the config check): run the rest together
                wave = left
            waves.append(wave)
            done.update(wave)
            left = [i for i in left if i not in done]
        return waves
