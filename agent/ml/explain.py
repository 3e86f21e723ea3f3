"""What a model leans on: input columns by permutation importance, and top terms per class.

:func:`influential_features` shuffles one input column at a time and measures how much
accuracy drops, which works for any estimator. :func:`top_terms` reads the coefficients
of a linear text classifier and names the words, character n-grams and categories that
point most strongly to each class, for the model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from connectors.errors import UsageError


def _count(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UsageError(f"{name} {v!r} is not allowed; give an integer >= 1")
    return v


def _sample(frame: pd.DataFrame, y: np.ndarray, max_rows: int,
            seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    if len(frame) <= max_rows:
        return frame, y
    # sorted, so the sample keeps the frame's row order
    rows = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[rows], y[rows]


def influential_features(estimator: Any, frame: pd.DataFrame, y: Sequence[str], *, seed: int,
                         n_repeats: int = 3, max_rows: int = 2000
                         ) -> list[dict[str, float | str]]:
    """The input columns of ``frame`` by how much shuffling each one lowers accuracy.

    ``[{"feature", "importance", "std"}]``, most important first (equal ones by name), on
    at most ``max_rows`` rows drawn with ``seed``. The same inputs and seed give the same
    result. An empty frame gives [].
    """
    _count("n_repeats", n_repeats)
    _count("max_rows", max_rows)
    labels = np.asarray(list(y), dtype=object)
    if len(labels) != len(frame):
        raise UsageError(f"{len(labels)} labels for {len(frame)} rows")
    if len(frame) == 0 or frame.shape[1] == 0:
        return []
    X, labels = _sample(frame, labels, max_rows, seed)
    result = permutation_importance(estimator, X, labels, scoring="accuracy",
                                    n_repeats=n_repeats, random_state=seed)
    found: list[dict[str, float | str]] = [
        {"feature": str(column), "importance": float(mean), "std": float(std)}
        for column, mean, std in zip(X.columns, result.importances_mean,
                                     result.importances_std, strict=True)]
    return sorted(found, key=lambda f: (-float(f["importance"]), str(f["feature"])))


# --- top terms -----------------------------------------------------------------------------

def _one_hot_names(encoder: Any, columns: list[str], names: list[str]) -> list[str]:
    """``column=category`` for each output of a fitted one-hot encoder."""
    owners = [c for c, cats in zip(columns, encoder.categories_, strict=True) for _ in cats]
    if len(owners) != len(names):  # categories dropped or merged: keep sklearn's names
        return names
    # sklearn writes "<column>_<category>"; the column is known, so no guessing at "_"
    return [f"{c}={n[len(c) + 1:]}" for c, n in zip(owners, names, strict=True)]


def _readable(name: str, transformer: Any, columns: Any, names: list[str]) -> list[str]:
    """The outputs of one transformer of the feature step, without sklearn's prefix."""
    bare = [n.removeprefix(f"{name}__") for n in names]
    if isinstance(columns, str):  # a text column: its outputs are words or n-grams
        return [f"{columns}: '{term}'" for term in bare]
    if isinstance(transformer, OneHotEncoder):
        return _one_hot_names(transformer, [str(c) for c in columns], bare)
    return bare


def _feature_names(features: Any) -> list[str]:
    out = [str(n) for n in features.get_feature_names_out()]
    readable: list[str] = []
    for name, transformer, columns in features.transformers_:
        part = features.output_indices_[name]
        if part.stop > part.start:  # dropped columns (remainder) have no outputs
            readable += _readable(name, transformer, columns, out[part])
    return readable


def _coefficients(clf: Any) -> tuple[list[str], np.ndarray] | None:
    coef = getattr(clf, "coef_", None)
    classes = getattr(clf, "classes_", None)
    if coef is None or classes is None:
        return None
    coef = np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=np.float64)
    labels = [str(c) for c in classes]
    if coef.ndim != 2:
        return None
    if coef.shape[0] == 1 and len(labels) == 2:  # binary: one row, positive = classes_[1]
        coef = np.vstack([-coef[0], coef[0]])
    return (labels, coef) if coef.shape[0] == len(labels) else None


def _top(weights: np.ndarray, names: list[str], k: int) -> list[str]:
    terms: list[str] = []
    # stable: equal weights in feature order; only what points to the class counts
    for i in np.argsort(-weights, kind="stable"):
        if weights[i] <= 0 or len(terms) == k:
            break
        if names[i] not in terms:  # a word can also be one of its own char n-grams
            terms.append(names[i])
    return terms


def top_terms(estimator: Any, k: int = 8) -> dict[str, list[str]]:
    """Per class, the ``k`` features with the highest positive coefficients, readable.

    For a fitted ``Pipeline([("features", ColumnTransformer), ("classifier", linear)])``
    as build_estimator makes it: "job_title: 'hoitaja'" for a word or character n-gram,
    "language=sv" for a category, the column for a number. Anything else gives {}.
    """
    _count("k", k)
    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        return {}
    features, clf = estimator.steps[0][1], estimator.steps[1][1]
    found = _coefficients(clf)
    if not isinstance(features, ColumnTransformer) or found is None:
        return {}
    try:
        names = _feature_names(features)
    except AttributeError:  # not fitted, or a transformer that cannot name its outputs
        return {}
    labels, coef = found
    if coef.shape[1] != len(names):
        return {}
    return {label: _top(row, names, k) for label, row in zip(labels, coef, strict=True)}
