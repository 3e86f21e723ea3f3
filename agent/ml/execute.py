"""One training, prediction or monitoring run from a loaded config: what a worker runs.

Errors become a failed outcome with the error's text and whether a retry can help; a
bug becomes an "internal error" outcome with the traceback in the log. Nothing raises
out of :func:`execute_job`, so a worker always has an outcome to send back.
"""

from __future__ import annotations

import logging

from agent.config import LoadedConfig
from agent.outcome import JobOutcome
from agent.stores import open_lake
from connectors.errors import SiltaError

log = logging.getLogger("silta.ml")


def execute_job(loaded: LoadedConfig, kind: str, name: str, run_id: str, *,
                force: bool = False) -> JobOutcome:
    """Run ``train:NAME``, ``predict:NAME`` or ``monitor:NAME`` once; never raises."""
    # imported here: they pull in scikit-learn and scipy (seconds), which the agent's own
    # process never needs (its jobs run in workers)
    from agent.ml.monitor import run_monitor
    from agent.ml.predict import run_prediction
    from agent.ml.train import run_training

    config = loaded.config
    try:
        lake = open_lake(loaded)
        if kind == "train":
            job = config.training(name)
            return run_training(lake, job.model, config.model(job.model), run_id=run_id,
                                name=name, force=force)
        if kind == "predict":
            pred = config.prediction(name)
            return run_prediction(lake, pred, config.model(pred.model_name), run_id=run_id,
                                  agent=config.agent.name)
        if kind == "monitor":
            return run_monitor(lake, config.monitor(name), config.models, run_id=run_id,
                               name=name)
        return JobOutcome(kind, name, run_id, status="failed",
                          error=f"unknown kind of ML job {kind!r}", retriable=False)
    except SiltaError as e:
        log.error("%s=%s failed%s: %s", kind, name,
                  " (retried on the next run)" if e.retriable else "", e)
        return JobOutcome(kind, name, run_id, status="failed", error=str(e),
                          retriable=e.retriable)
    except Exception as e:  # a bug must not kill the agent; it is recorded and shown
        log.exception("%s=%s failed with an internal error", kind, name)
        return JobOutcome(kind, name, run_id, status="failed",
                          error=f"internal error: {type(e).__name__}: {e}", retriable=False)
