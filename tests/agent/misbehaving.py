"""Estimators that misbehave on purpose, for the worker-process tests (imported by path)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin


class DiesInFit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Kills its own process in ``fit``, as a segfault or the OOM killer would."""

    def fit(self, x: Any, y: Any) -> DiesInFit:
        os.kill(os.getpid(), signal.SIGKILL)
        return self


class SlowFit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fit that takes ``seconds``: a long training the agent must not wait for."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.seconds = seconds

    def fit(self, x: Any, y: Any) -> SlowFit:
        time.sleep(self.seconds)
        return self
