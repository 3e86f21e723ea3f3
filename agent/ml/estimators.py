"""Features, the built-in text classifier, import-path estimators and top-k predictions.

A model sees the columns of a :class:`FeatureSpec`: free text (job titles, descriptions),
numeric and categorical columns. :func:`prepare_frame` turns a table into exactly those
columns, the same way at training and at prediction time, and :func:`build_estimator`
builds an unfitted scikit-learn classifier that takes that frame:

* ``"text-classifier"``: char and word TF-IDF per text column (char n-grams catch typos
  and the compounds of Finnish and Swedish), one-hot categories, scaled numbers, and a
  logistic regression or SGD classifier;
* ``"package.module:Name"``: any scikit-learn classifier, by default behind the same
  feature step.

Everything built here is made of scikit-learn, numpy and scipy types only, so it saves
and loads with skops (agent/ml/artifacts.py) without trusting anything more.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from connectors.errors import SchemaMismatchError, UsageError

TEXT_CLASSIFIER = "text-classifier"
#: what a null categorical value becomes, so "unknown" is a category of its own
MISSING = "(missing)"
_GROUPS = ("text", "numeric", "categorical")
_WORD_TOKENS = r"(?u)\b\w+\b"  # keeps one-letter words ("C", "å") that the default drops
_MAX_SEED = 2**32 - 1  # numpy's RandomState refuses larger seeds
#: up to this k, top-k takes k rounds of argmax instead of sorting every row
_ARGMAX_ROUNDS = 32


@dataclass(frozen=True)
class FeatureSpec:
    """The input columns of a model, by how they are turned into features."""

    text: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    def __post_init__(self) -> None:
        twice = sorted(c for c, n in Counter(self.columns).items() if n > 1)
        if twice:
            raise UsageError(f"feature columns listed more than once: {', '.join(twice)}; "
                             "give each column once, as text or as tabular")

    @property
    def columns(self) -> tuple[str, ...]:
        """Every input column: text, then numeric, then categorical."""
        return self.text + self.numeric + self.categorical

    def as_dict(self) -> dict[str, list[str]]:
        """The spec as plain lists, for JSON (model signatures, cards)."""
        return {"text": list(self.text), "numeric": list(self.numeric),
                "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[str]]) -> FeatureSpec:
        """The spec :meth:`as_dict` wrote; a missing group is empty."""
        unknown = sorted(set(d) - set(_GROUPS))
        if unknown:
            raise UsageError(f"feature spec has unknown groups {unknown}; "
                             f"known: {', '.join(_GROUPS)}")
        groups = {g: _names(g, d.get(g, ())) for g in _GROUPS}
        return cls(text=groups["text"], numeric=groups["numeric"],
                   categorical=groups["categorical"])


def _names(group: str, names: Sequence[str]) -> tuple[str, ...]:
    # a bare string is a Sequence[str] too, and would become one column per letter
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise UsageError(f"feature spec group {group!r} must be a list of column names, "
                         f"not {names!r}")
    return tuple(names)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):  # pandas categoricals and parquet dictionaries
        return _is_text(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_string_view(t))


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _check_present(columns: Sequence[str], available: Sequence[str]) -> None:
    missing = [c for c in columns if c not in available]
    if missing:
        raise SchemaMismatchError(
            f"feature columns missing from the data: {', '.join(missing)}; "
            f"the data has: {', '.join(map(str, available)) or '(no columns)'}")


def feature_spec(schema: pa.Schema, text: Sequence[str], tabular: Sequence[str]) -> FeatureSpec:
    """The spec of ``text`` and ``tabular`` columns, tabular ones typed by ``schema``.

    Raises SchemaMismatchError for a missing column or a text column that is not a string,
    UsageError for a column given twice or no column at all.
    """
    text_cols, tab_cols = _names("text", text), _names("tabular", tabular)
    FeatureSpec(text=text_cols, numeric=tab_cols, categorical=())  # refuses duplicates
    if not text_cols and not tab_cols:
        raise UsageError("a model needs at least one feature column (text or tabular)")
    _check_present(text_cols + tab_cols, schema.names)
    not_text = [f"{c} ({schema.field(c).type})" for c in text_cols
                if not _is_text(schema.field(c).type)]
    if not_text:
        raise SchemaMismatchError(f"text feature columns must hold strings: "
                                  f"{', '.join(not_text)}; give them as tabular columns")
    numeric = tuple(c for c in tab_cols if _is_numeric(schema.field(c).type))
    return FeatureSpec(text=text_cols, numeric=numeric,
                       categorical=tuple(c for c in tab_cols if c not in numeric))


# --- prepare_frame -------------------------------------------------------------------------

def _arrow_column(data: pa.Table | pd.DataFrame, name: str) -> pa.ChunkedArray | None:
    """The column as Arrow, or None when pandas holds values Arrow cannot type (mixed)."""
    if isinstance(data, pa.Table):
        return data.column(name)
    try:
        return pa.chunked_array([pa.Array.from_pandas(data[name])])
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return None


def _python_strings(data: pd.DataFrame, name: str, null: str) -> np.ndarray:
    # only for object columns of mixed types, which Arrow refuses to type
    return np.array([null if _is_null(v) else str(v) for v in data[name].tolist()],
                    dtype=object)


def _is_null(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _strings(col: pa.ChunkedArray, null: str) -> np.ndarray:
    if _is_text(col.type) or pa.types.is_null(col.type):
        col = pc.cast(col, pa.large_string())
        return np.asarray(pc.fill_null(col, null).to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    # str() of the Python value ("True", "2024-01-31"), the same for Arrow and pandas input;
    # of each distinct value only, as making a million dates in Python takes seconds
    try:
        encoded = col.combine_chunks().dictionary_encode()
    except pa.ArrowNotImplementedError:  # nested types (lists, structs)
        return np.array([null if v is None else str(v) for v in col.to_pylist()],
                        dtype=object)
    labels = np.array([str(v) for v in encoded.dictionary.to_pylist()] + [null], dtype=object)
    index = pc.fill_null(encoded.indices, len(encoded.dictionary))
    return np.asarray(labels[index.to_numpy(zero_copy_only=False)], dtype=object)


def _text(data: pa.Table | pd.DataFrame, name: str) -> np.ndarray:
    col = _arrow_column(data, name)
    if col is None:
        assert isinstance(data, pd.DataFrame)
        return _python_strings(data, name, "")
    if not (_is_text(col.type) or pa.types.is_null(col.type)):
        raise SchemaMismatchError(f"text feature column {name!r} holds {col.type}, "
                                  "not strings")
    return _strings(col, "")


def _categorical(data: pa.Table | pd.DataFrame, name: str) -> np.ndarray:
    col = _arrow_column(data, name)
    if col is None:
        assert isinstance(data, pd.DataFrame)
        return _python_strings(data, name, MISSING)
    return _strings(col, MISSING)


def _numeric(data: pa.Table | pd.DataFrame, name: str) -> np.ndarray:
    col = _arrow_column(data, name)
    if col is None or not (_is_numeric(col.type) or pa.types.is_null(col.type)):
        kind = "values of mixed types" if col is None else str(col.type)
        raise SchemaMismatchError(f"numeric feature column {name!r} holds {kind}, "
                                  "not numbers")
    as_float = pc.fill_null(pc.cast(col, pa.float64()), math.nan)
    return np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)


def prepare_frame(data: pa.Table | pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Exactly ``spec.columns`` of ``data``, in order, as the estimators take them.

    Text becomes str with nulls as "", categories str with nulls as "(missing)", numbers
    float64 with NaN for nulls. The index is a fresh RangeIndex. Raises
    SchemaMismatchError for a missing column or one whose type does not fit its group.
    """
    available = data.column_names if isinstance(data, pa.Table) else list(data.columns)
    _check_present(spec.columns, available)
    convert: dict[str, Callable[[pa.Table | pd.DataFrame, str], np.ndarray]] = {
        **dict.fromkeys(spec.text, _text), **dict.fromkeys(spec.numeric, _numeric),
        **dict.fromkeys(spec.categorical, _categorical)}
    # object dtype, not pandas 3's "str": the values are plain str and never missing
    columns = {c: pd.Series(convert[c](data, c), dtype=object if c not in spec.numeric
                            else np.float64, copy=False) for c in spec.columns}
    return pd.DataFrame(columns, columns=list(spec.columns))


# --- parameters of the text classifier -----------------------------------------------------

def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise UsageError(f"param {name}={v!r} is not allowed; give a number > 0")
    return float(v)


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise UsageError(f"param {name}={v!r} is not allowed; give an integer >= 1")
    return v


def _ngrams(name: str, v: Any) -> tuple[int, int]:
    ok = (isinstance(v, list | tuple) and len(v) == 2
          and all(isinstance(n, int) and not isinstance(n, bool) for n in v)
          and 1 <= v[0] <= v[1])
    if not ok:
        raise UsageError(f"param {name}={v!r} is not allowed; give two integers "
                         "[lo, hi] with 1 <= lo <= hi, e.g. [2, 5]")
    return int(v[0]), int(v[1])


def _min_df(name: str, v: Any) -> int | float:
    if isinstance(v, float) and 0 < v < 1:
        return v  # a share of the documents
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v  # a count of documents
    raise UsageError(f"param {name}={v!r} is not allowed; give an integer >= 1 (documents) "
                     "or a number between 0 and 1 (share of documents)")


def _max_features(name: str, v: Any) -> int | None:
    return None if v is None else _count(name, v)


def _class_weight(name: str, v: Any) -> str | dict[str, float] | None:
    if v is None:
        return None
    if v == "balanced":
        return "balanced"
    if isinstance(v, Mapping) and v:
        return {k: _number(f"{name}[{k!r}]", w) for k, w in v.items()}
    raise UsageError(f"param {name}={v!r} is not allowed; give \"balanced\" or a table of "
                     "class = weight")


def _classifier(name: str, v: Any) -> str:
    if v not in _CLASSIFIER_PARAMS:
        raise UsageError(f"param {name}={v!r} is not allowed; give one of: "
                         f"{', '.join(map(repr, _CLASSIFIER_PARAMS))}")
    return str(v)


_CHECKS: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "classifier": (_classifier, "logistic"),
    "C": (_number, 10.0),
    "alpha": (_number, 1e-5),
    "max_iter": (_count, 2000),
    "char_ngrams": (_ngrams, (2, 5)),
    "word_ngrams": (_ngrams, (1, 2)),
    "min_df": (_min_df, 1),
    "max_features": (_max_features, None),
    "class_weight": (_class_weight, None),
}
#: the params that only one classifier uses
_CLASSIFIER_PARAMS = {"logistic": "C", "sgd": "alpha"}


def _text_params(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(_CHECKS))
    if unknown:
        raise UsageError(f"unknown params of {TEXT_CLASSIFIER!r}: {', '.join(unknown)}; "
                         f"known: {', '.join(_CHECKS)}")
    checked = {name: check(name, params[name]) if name in params else default
               for name, (check, default) in _CHECKS.items()}
    for clf, own in _CLASSIFIER_PARAMS.items():
        # refused rather than ignored: a recorded param the model never used misleads
        if own in params and checked["classifier"] != clf:
            raise UsageError(f"param {own!r} applies only to classifier={clf!r}, "
                             f"not {checked['classifier']!r}")
    return checked


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise UsageError(f"seed {seed!r} is not allowed; give an integer 0..{_MAX_SEED}")
    return seed


# --- building estimators -------------------------------------------------------------------

def _vectorizers(column: str, i: int, char_ngrams: tuple[int, int],
                 word_ngrams: tuple[int, int], min_df: int | float,
                 max_features: int | None) -> list[tuple[str, Any, str]]:
    # the column name as a str, not a list: vectorizers take a 1-D column of documents
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=char_ngrams, sublinear_tf=True,
                           min_df=min_df, lowercase=True, max_features=max_features)
    word = TfidfVectorizer(ngram_range=word_ngrams, sublinear_tf=True, min_df=min_df,
                           lowercase=True, token_pattern=_WORD_TOKENS,
                           max_features=max_features)
    # names by position: a column name may hold "__", which sklearn reserves
    return [(f"text_char_{i}", char, column), (f"text_word_{i}", word, column)]


def _feature_step(spec: FeatureSpec, *, char_ngrams: tuple[int, int] = (2, 5),
                 word_ngrams: tuple[int, int] = (1, 2), min_df: int | float = 1,
                 max_features: int | None = None) -> Any:
    """The unfitted ColumnTransformer that turns a prepared frame into features."""
    transformers: list[tuple[str, Any, Any]] = []
    for i, column in enumerate(spec.text):
        transformers += _vectorizers(column, i, char_ngrams, word_ngrams, min_df,
                                     max_features)
    if spec.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")),
                            ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, list(spec.numeric)))
    if spec.categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore"),
                             list(spec.categorical)))
    if not transformers:
        raise UsageError("a model needs at least one feature column (text or tabular)")
    return ColumnTransformer(transformers)


def _text_classifier(params: Mapping[str, Any], spec: FeatureSpec, seed: int) -> Any:
    p = _text_params(params)
    features = _feature_step(spec, char_ngrams=p["char_ngrams"], word_ngrams=p["word_ngrams"],
                            min_df=p["min_df"], max_features=p["max_features"])
    if p["classifier"] == "sgd":
        clf = SGDClassifier(loss="log_loss", alpha=p["alpha"], max_iter=p["max_iter"],
                            tol=1e-4, random_state=seed, class_weight=p["class_weight"])
    else:
        clf = LogisticRegression(C=p["C"], max_iter=p["max_iter"], random_state=seed,
                                 class_weight=p["class_weight"])
    return Pipeline([("features", features), ("classifier", clf)])


def _import(path: str) -> Any:
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    if not module or not name:
        raise UsageError(f"estimator {path!r} is not {TEXT_CLASSIFIER!r} or an import path "
                         "like 'sklearn.ensemble:RandomForestClassifier'")
    try:
        return reduce(getattr, name.split("."), importlib.import_module(module))
    except (ImportError, AttributeError) as e:
        raise UsageError(f"estimator {path!r} cannot be imported ({e}); check the name and "
                         f"that module {module!r} is installed") from e


def _is_classifier(est: Any) -> bool:
    if isinstance(est, Pipeline):
        return bool(est.steps) and _is_classifier(est.steps[-1][1])
    try:
        return bool(is_classifier(est))
    except AttributeError:  # not an estimator at all: it has no sklearn tags
        return False


def _check_values(path: str, est: Any) -> None:
    # sklearn checks values only at fit; checking now names the bad param before training
    validate = getattr(est, "_validate_params", None)
    # estimators outside sklearn inherit the method but declare no constraints to check
    if callable(validate) and hasattr(est, "_parameter_constraints"):
        try:
            validate()
        except ValueError as e:
            raise UsageError(f"estimator {path!r}: {e}") from e


def _imported_estimator(path: str, params: Mapping[str, Any], seed: int) -> Any:
    factory = _import(path)
    if not callable(factory):
        raise UsageError(f"estimator {path!r} is a {type(factory).__name__}, not a class or "
                         "a function that builds an estimator")
    try:
        est = factory(**params)
    except TypeError as e:
        raise UsageError(f"estimator {path!r} does not take these params "
                         f"({', '.join(params) or 'none'}): {e}") from e
    if not _is_classifier(est):
        raise UsageError(f"Silta trains classifiers; {path!r} is not one")
    if "random_state" in est.get_params(deep=False) and "random_state" not in params:
        est.set_params(random_state=seed)
    _check_values(path, est)
    return est


def build_estimator(estimator: str, params: Mapping[str, Any], spec: FeatureSpec, seed: int,
                    *, preprocess: bool = True) -> Any:
    """An unfitted classifier for frames from :func:`prepare_frame`.

    ``estimator`` is ``"text-classifier"`` or an import path; an imported one is put behind
    the default feature step unless ``preprocess`` is false (then it gets the prepared frame
    as is). The text classifier always has its own feature step, so ``preprocess`` does not
    apply to it. Raises UsageError for unknown or invalid params and for an estimator that
    cannot be imported or is not a classifier.
    """
    _check_seed(seed)
    if estimator == TEXT_CLASSIFIER:
        return _text_classifier(params, spec, seed)
    est = _imported_estimator(estimator, params, seed)
    if not preprocess:
        return est
    return Pipeline([("features", _feature_step(spec)), ("classifier", est)])


# --- predictions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Predictions:
    """Predicted classes of a batch of rows, with the k most probable classes of each."""

    #: top class per row, as str
    predicted: list[str]
    #: float64 probability of the top class; NaN when the estimator has no predict_proba
    confidence: np.ndarray
    #: up to k classes per row, most probable first
    top_codes: list[list[str]]
    top_probabilities: list[list[float]]


def classes_of(estimator: Any) -> list[str]:
    """The fitted estimator's classes as str, in its order; UsageError when not fitted."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise UsageError(f"{type(estimator).__name__} has no classes: it is not a fitted "
                         "classifier")
    return [str(c) for c in classes]


def _without_proba(estimator: Any, frame: pd.DataFrame) -> Predictions:
    predicted = [str(p) for p in estimator.predict(frame)]
    return Predictions(predicted=predicted, confidence=np.full(len(predicted), math.nan),
                       top_codes=[[p] for p in predicted],
                       top_probabilities=[[math.nan] for _ in predicted])


def _top_k_order(proba: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values per row; equal values in column order."""
    k = min(k, proba.shape[1])
    if k > _ARGMAX_ROUNDS:
        # a stable sort of -p: descending, equal values keep their (class) order
        return np.argsort(-proba, axis=1, kind="stable")[:, :k]
    # k rounds of argmax, which picks the first of equal values: the same order as the
    # stable sort, ten times faster for a few of hundreds of classes
    rest = proba.copy()
    rows = np.arange(len(proba))
    order = np.empty((len(proba), k), dtype=np.intp)
    for j in range(k):
        order[:, j] = np.argmax(rest, axis=1)
        rest[rows, order[:, j]] = -np.inf
    return order


def predict_top_k(estimator: Any, frame: pd.DataFrame, k: int) -> Predictions:
    """The top class and the ``k`` most probable classes of every row of ``frame``.

    Ties go to the class that comes first in the estimator's class order. Without
    ``predict_proba`` the prediction is the only code and its probability is NaN.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"top-k {k!r} is not allowed; give an integer >= 1")
    if len(frame) == 0:  # sklearn refuses to predict zero rows
        return Predictions([], np.empty(0, dtype=np.float64), [], [])
    if not hasattr(estimator, "predict_proba"):
        return _without_proba(estimator, frame)
    classes = np.array(classes_of(estimator), dtype=object)
    proba = np.asarray(estimator.predict_proba(frame), dtype=np.float64)
    order = _top_k_order(proba, k)
    top_p = np.take_along_axis(proba, order, axis=1)
    codes = classes[order]
    return Predictions(predicted=codes[:, 0].tolist(), confidence=top_p[:, 0].copy(),
                       top_codes=codes.tolist(), top_probabilities=top_p.tolist())
