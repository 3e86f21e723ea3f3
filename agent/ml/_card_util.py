"""Number helpers shared by a model card's data (:mod:`agent.ml.card`) and its Markdown
(:mod:`agent.ml._card_markdown`), so a value reads the same in checklist evidence and in a table.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float, or None if it is not a finite real number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt(value: Any) -> str:
    """``value`` to three decimals, or ``n/a``."""
    number = finite(value)
    return "n/a" if number is None else f"{number:.3f}"


def pct(value: Any) -> str:
    """``value`` as a percentage with one decimal, or ``n/a``."""
    number = finite(value)
    return "n/a" if number is None else f"{number:.1%}"
