"""Continuous training: which alerts start a training, and what holds one back.

A model's ``retrain_on`` names what may start its trainings: ``schedule`` (the
training's cron and its catch-up), ``new_data`` (its ``after`` links), ``drift``
(drift, prediction-drift and confidence alerts of a monitor of this model) and
``performance`` (accuracy alerts). An alert starts a training once, when it fires;
the training then reads the newest data and its candidate goes through the usual
promotion gate (``agent/ml/train.py``). Operator runs always go.

A schema alert of a monitor of the model halts its trainings (schema skew: a model
fitted on a broken input would be worse than the one in service) until the alert is
resolved or a run is forced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent.alerts import AlertBook, Observed
from agent.config import SiltaConfig
from agent.ml.config import TrainingConfig
from agent.ml.registry import ModelRegistry
from agent.outcome import JobOutcome
from connectors.errors import NotFoundError
from connectors.lake import DeltaLake

log = logging.getLogger("silta.ct")

#: the retrain_on trigger each kind of alert counts as
ALERT_TRIGGERS = {"drift": "drift", "prediction_drift": "drift", "confidence": "drift",
                  "performance": "performance"}
HALTING_CHECKS = ("schema",)


def trigger_kind(trigger: str) -> str | None:
    """The retrain_on word a run trigger is gated by (None: never gated)."""
    if trigger in ("schedule", "catch-up"):
        return "schedule"
    if trigger.startswith("after:") or trigger == "once":
        return "new_data"  # a `--once` pass trains because data may have arrived
    return None  # operator runs, retraining requested by an alert


def allowed(config: SiltaConfig, training: TrainingConfig, trigger: str,
            has_version: Callable[[str], bool]) -> bool:
    """Whether ``trigger`` may start ``training`` under its model's retrain_on.

    A model without any version is trained on any trigger: there is nothing to serve
    until it has one, whatever starts the later trainings.
    """
    kind = trigger_kind(trigger)
    if kind is None or kind in config.model(training.model).retrain_on:
        return True
    return not has_version(training.model)


def registered(lake: DeltaLake) -> Callable[[str], bool]:
    """``has_version`` for :func:`allowed`, asking the lake's registry."""
    def has_version(model: str) -> bool:
        try:
            return bool(ModelRegistry(lake).versions(model))
        except NotFoundError:
            return False
    return has_version


def retrain_jobs(config: SiltaConfig, book: AlertBook, monitor: str, seen: Observed
                 ) -> list[tuple[str, int]]:
    """(training job id, alert id) for each training the newly fired alerts start."""
    conf = next((m for m in config.monitors if m.name == monitor), None)
    if conf is None or conf.model is None or conf.model not in config.models:
        return []
    wants = config.models[conf.model].retrain_on
    jobs = [f"train:{t.name}" for t in config.trainings if t.model == conf.model and t.enabled]
    out: list[tuple[str, int]] = []
    for alert_id in seen.fired:
        alert = book.get(alert_id)
        trigger = ALERT_TRIGGERS.get(str(alert["check"]))
        if trigger is None or trigger not in wants or not jobs:
            continue
        # once per alert, for every training of the model (the mark is the alert's own)
        if not book.mark_retrain(alert_id, ", ".join(jobs)):
            continue
        for job in jobs:
            if job not in [j for j, _ in out]:
                log.info("alert %d (%s %s) starts %s: %s is in retrain_on of %s", alert_id,
                         alert["check"], alert["target"], job, trigger, conf.model)
                out.append((job, alert_id))
    return out


def halting_alert(book: AlertBook, model: str) -> dict[str, Any] | None:
    """An open schema alert of a monitor of ``model`` (None: trainings may go)."""
    found = book.open_alerts(model=model, checks=HALTING_CHECKS)
    return found[0] if found else None


def retraining(outcome: object) -> list[tuple[str, int]]:
    """(training job, alert id) pairs a monitoring run's new alerts asked for."""
    if not isinstance(outcome, JobOutcome) or outcome.kind != "monitor":
        return []
    asked = outcome.detail.get("retrain")
    return [(str(r["job"]), int(r["alert"])) for r in asked
            if isinstance(r, dict)] if isinstance(asked, list) else []
