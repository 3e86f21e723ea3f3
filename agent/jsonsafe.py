"""Values made fit for strict JSON (metrics, details, notices): one rule everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def json_safe(value: Any, *, text_for_other: bool = False) -> Any:
    """``value`` with JSON types only: NaN and infinities become None ("no value" is
    honest), numpy scalars plain numbers, tuples and sets lists, keys text; anything else
    is kept, or with ``text_for_other`` written as ``str``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, text_for_other=text_for_other) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, text_for_other=text_for_other) for v in value]
    return str(value) if text_for_other else value
