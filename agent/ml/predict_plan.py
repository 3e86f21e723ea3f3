"""What a prediction has to do, decided without the model or scikit-learn: the agent
asks this on every scheduled fire, and a worker starts only when there is work."""

from __future__ import annotations

from agent.ml.config import PredictionConfig
from connectors.lake import DeltaLake

__all__ = ["app_id", "plan_range"]


def app_id(job: str) -> str:
    return f"silta-predict/{job}"


def plan_range(lake: DeltaLake, conf: PredictionConfig) -> tuple[int | None, int] | None:
    """(the app id's last seq, the input's version) to predict up to, or None when the
    predictions are up to date; two table opens, no model."""
    output = lake.open(conf.output)
    follows = output.transaction_version(app_id(conf.name)) if output is not None else None
    to = lake.require(conf.input).version()
    if follows is not None and follows - 1 >= to:
        return None
    return follows, to
