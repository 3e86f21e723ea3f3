"""Machine-learning support of the agent: model artifacts kept in the lake."""

from __future__ import annotations
