"""Evaluation: a split that stays put across model versions, metrics, confidence coverage.

:func:`split_mask` puts a row in the evaluation set by a hash of its key and the seed
alone, so a row held out from one model version is held out from the next one trained
with the same seed and fraction too: a champion and a challenger are compared on rows
neither of them trained on.

The metrics are scikit-learn's, over the union of the true and predicted classes. For
partly automated coding the key figure is :func:`confidence_coverage`: the share of
answers coded automatically above a confidence threshold, and how accurate those are;
the rest goes to the manual coders.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from agent.ml.estimators import MISSING
from connectors.errors import UsageError

METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_f1", "weighted_f1", "macro_precision",
                                 "macro_recall")
_NULL_KEY = "\x00"
_SEPARATOR = "\x1f"  # ASCII unit separator: does not occur in real key values

_Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]
_METRICS: dict[str, _Metric] = {
    "accuracy": lambda t, p, labels: accuracy_score(t, p),
    "macro_f1": lambda t, p, labels: f1_score(t, p, labels=labels, average="macro",
                                              zero_division=0),
    "weighted_f1": lambda t, p, labels: f1_score(t, p, labels=labels, average="weighted",
                                                 zero_division=0),
    "macro_precision": lambda t, p, labels: precision_score(t, p, labels=labels,
                                                            average="macro", zero_division=0),
    "macro_recall": lambda t, p, labels: recall_score(t, p, labels=labels, average="macro",
                                                      zero_division=0),
}


# --- split ---------------------------------------------------------------------------------

def _check_fraction(test_fraction: float) -> float:
    ok = (not isinstance(test_fraction, bool) and isinstance(test_fraction, int | float)
          and 0 < test_fraction < 1)
    if not ok:
        raise UsageError(f"test fraction {test_fraction!r} is not allowed; give a number "
                         "between 0 and 1 (exclusive), e.g. 0.2")
    return float(test_fraction)


def _is_missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _key_text(v: Any) -> str:
    if _is_missing(v):
        return _NULL_KEY
    # an integer key read as float (pandas does that to int columns with nulls) must hash
    # as the integer, or its rows would change sides between model versions
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _key_texts(column: pd.Series) -> list[str]:
    if pd.api.types.is_integer_dtype(column.dtype) and not column.hasnans:
        return [str(v) for v in column.to_numpy().tolist()]
    return [_key_text(v) for v in column.tolist()]


def split_mask(keys: pd.DataFrame, seed: int, test_fraction: float) -> np.ndarray:
    """True for the rows of the evaluation set, decided by each row's keys and the seed.

    A row is held out when the first 8 bytes of ``sha256(f"{seed}\\x1f" + "\\x1f".join(key
    values))``, read as a big-endian integer and divided by 2**64, are below
    ``test_fraction``. Nulls hash as "\\x00", integral floats as the integer.
    """
    fraction = _check_fraction(test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed {seed!r} is not allowed; give an integer")
    if keys.shape[1] == 0:
        raise UsageError("the split needs at least one key column")
    columns = [_key_texts(keys[c]) for c in keys.columns]
    prefix = f"{seed}{_SEPARATOR}"
    digests = b"".join(hashlib.sha256((prefix + _SEPARATOR.join(row)).encode()).digest()[:8]
                       for row in zip(*columns, strict=True))
    values = np.frombuffer(digests, dtype=">u8").astype(np.float64)
    return np.asarray(values / 2.0**64 < fraction, dtype=bool)


# --- metrics -------------------------------------------------------------------------------

def _check_names(names: Sequence[str]) -> None:
    # a bare string is a Sequence[str] too: "accuracy" would be eight unknown letters
    unknown = [names] if isinstance(names, str) else [n for n in names if n not in _METRICS]
    if unknown:
        raise UsageError(f"unknown metrics: {', '.join(map(str, unknown))}; give a list of: "
                         f"{', '.join(METRIC_NAMES)}")


def _labels(values: Sequence[Any], what: str) -> np.ndarray:
    if isinstance(values, str):
        raise UsageError(f"{what} must be a sequence of labels, not one string")
    return np.array([str(v) for v in values], dtype=object)


def _pair(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise UsageError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    return t, p


def _codes(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both label arrays as integer codes in sorted label order, and the codes' range.

    scikit-learn is 20x faster on integers than on strings, and with the codes in sorted
    order it sums the per-class values in the same order, so the results are identical.
    """
    codes, uniques = pd.factorize(np.concatenate([t, p]), sort=True)
    return codes[:len(t)], codes[len(t):], np.arange(len(uniques))


def _metrics(t: np.ndarray, p: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    if len(t) == 0:
        return {}
    t_codes, p_codes, labels = _codes(t, p)
    return {name: float(_METRICS[name](t_codes, p_codes, labels)) for name in names}


def compute_metrics(y_true: Sequence[str], y_pred: Sequence[str],
                    names: Sequence[str]) -> dict[str, float]:
    """``names`` (of METRIC_NAMES) of the predictions, as scikit-learn computes them.

    Labels are compared as str. No rows give an empty dict, not NaNs: the caller says
    "no rows" rather than reporting a metric of nothing. UsageError for an unknown name.
    """
    _check_names(names)
    t, p = _pair(y_true, y_pred)
    return _metrics(t, p, names)


def _segment_labels(column: pd.Series) -> np.ndarray:
    return np.array([MISSING if _is_missing(v) else str(v) for v in column.tolist()],
                    dtype=object)


def segment_metrics(y_true: Sequence[str], y_pred: Sequence[str], segments: pd.DataFrame,
                    names: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per value of each column of ``segments`` (one row per prediction).

    ``{column: {value: {"n": rows, metric: value, ...}}}``, values as str in sorted order,
    nulls as "(missing)".
    """
    _check_names(names)
    t, p = _pair(y_true, y_pred)
    if len(segments) != len(t):
        raise UsageError(f"segments have {len(segments)} rows but there are {len(t)} "
                         "predictions")
    result: dict[str, dict[str, dict[str, float]]] = {}
    for column in segments.columns:
        labels = _segment_labels(segments[column])
        result[str(column)] = {
            value: {"n": int(mask.sum()), **_metrics(t[mask], p[mask], names)}
            for value in sorted(set(labels.tolist()))
            for mask in [labels == value]}
    return result


# --- confidence coverage and gaps ----------------------------------------------------------

def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    bad = [t for t in thresholds
           if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1]
    if bad or isinstance(thresholds, str):
        raise UsageError(f"confidence thresholds {bad or thresholds!r} are not allowed; give "
                         "numbers between 0 and 1")
    return [float(t) for t in thresholds]


def confidence_coverage(y_true: Sequence[str], y_pred: Sequence[str], confidence: np.ndarray,
                        thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9)
                        ) -> list[dict[str, float]]:
    """Per threshold: the share of rows with confidence >= it, and their accuracy.

    ``{"threshold", "coverage", "accuracy", "rows"}``; accuracy is NaN when no row reaches
    the threshold, coverage NaN when there are no rows. A NaN confidence (an estimator
    without probabilities) is below every threshold.
    """
    t, p = _pair(y_true, y_pred)
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.shape != t.shape:
        raise UsageError(f"{conf.size} confidences for {len(t)} predictions")
    correct = t == p
    result: list[dict[str, float]] = []
    for threshold in _check_thresholds(thresholds):
        automated = conf >= threshold  # NaN compares False: never automated
        rows = int(automated.sum())
        result.append({
            "threshold": threshold,
            "coverage": rows / len(t) if len(t) else math.nan,
            "accuracy": float(correct[automated].mean()) if rows else math.nan,
            "rows": rows})
    return result


def _extremes(values: Mapping[str, Mapping[str, float]], metric: str,
              min_rows: int) -> list[tuple[str, float]]:
    return [(name, float(stats[metric])) for name, stats in sorted(values.items())
            if stats.get("n", 0) >= min_rows and not math.isnan(stats.get(metric, math.nan))]


def primary_gap(segments: dict[str, dict[str, dict[str, float]]], metric: str,
                min_rows: int = 20) -> list[dict[str, Any]]:
    """Best and worst value of ``metric`` per segment column, over values with enough rows.

    ``segments`` is what :func:`segment_metrics` returns. Values with fewer than
    ``min_rows`` rows are left out, and so is a column with fewer than two values left.
    Of equal values the first in name order is best (or worst).
    """
    _check_names([metric])
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise UsageError(f"min_rows {min_rows!r} is not allowed; give an integer >= 1")
    gaps: list[dict[str, Any]] = []
    for column, values in segments.items():
        eligible = _extremes(values, metric, min_rows)
        if len(eligible) < 2:
            continue
        # max/min keep the first of equal values, and eligible is in name order
        best = max(eligible, key=lambda e: e[1])
        worst = min(eligible, key=lambda e: e[1])
        gaps.append({"segment": column, "metric": metric, "best": best[0],
                     "best_value": best[1], "worst": worst[0], "worst_value": worst[1],
                     "gap": best[1] - worst[1], "min_rows": min_rows})
    return gaps
