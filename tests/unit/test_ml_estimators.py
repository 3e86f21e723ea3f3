"""Features, the text classifier, import-path estimators, skops round trips and top-k."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from agent.ml.artifacts import load_model, save_model
from agent.ml.estimators import (
    TEXT_CLASSIFIER,
    FeatureSpec,
    build_estimator,
    classes_of,
    feature_spec,
    predict_top_k,
    prepare_frame,
)
from connectors.errors import SchemaMismatchError, UsageError

# (job title, language, weekly hours, ISCO-08 code): Finnish, Swedish and English
TRAIN = [
    ("sairaanhoitaja", "fi", 37.5, "2221"), ("erikoissairaanhoitaja", "fi", 38.0, "2221"),
    ("osastonhoitaja", "fi", 38.0, "2221"), ("sjuksköterska", "sv", 38.0, "2221"),
    ("operationssjuksköterska", "sv", 37.0, "2221"), ("registered nurse", "en", 37.5, "2221"),
    ("staff nurse", "en", 36.0, "2221"),
    ("ohjelmistokehittäjä", "fi", 40.0, "2512"), ("sovelluskehittäjä", "fi", 37.5, "2512"),
    ("ohjelmoija", "fi", 40.0, "2512"), ("mjukvaruutvecklare", "sv", 40.0, "2512"),
    ("systemutvecklare", "sv", 40.0, "2512"), ("software developer", "en", 40.0, "2512"),
    ("software engineer", "en", 40.0, "2512"),
    ("kokki", "fi", 30.0, "5120"), ("ravintolakokki", "fi", 35.0, "5120"),
    ("keittäjä", "fi", 30.0, "5120"), ("kock", "sv", 32.0, "5120"),
    ("restaurangkock", "sv", 35.0, "5120"), ("cook", "en", 30.0, "5120"),
    ("line cook", "en", 25.0, "5120"),
    ("myyjä", "fi", 25.0, "5223"), ("myymälämyyjä", "fi", 30.0, "5223"),
    ("säljare", "sv", 30.0, "5223"), ("butiksbiträde", "sv", 20.0, "5223"),
    ("shop assistant", "en", 20.0, "5223"), ("sales assistant", "en", 25.0, "5223"),
    ("siivooja", "fi", 30.0, "9112"), ("toimistosiivooja", "fi", 25.0, "9112"),
    ("laitoshuoltaja", "fi", 37.5, "9112"), ("städare", "sv", 30.0, "9112"),
    ("lokalvårdare", "sv", 35.0, "9112"), ("cleaner", "en", 30.0, "9112"),
    ("office cleaner", "en", 20.0, "9112"),
]
# near-duplicates with typos, other case and inflection, and nulls: never trained on
HELD_OUT = [
    ("sairaanhoitja", "fi", None, "2221"), ("Sjukskoterska", "sv", 38.0, "2221"),
    ("registred nurse", "en", 37.5, "2221"), ("ohjelmistokehitäjä", "fi", 40.0, "2512"),
    ("sofware developer", "en", 40.0, "2512"), ("systemutveklare", "sv", 40.0, "2512"),
    ("kokki ", "fi", 30.0, "5120"), ("KOCK", "sv", None, "5120"), ("cooks", "en", 30.0, "5120"),
    ("myyja", "fi", 25.0, "5223"), ("säljaren", "sv", 30.0, "5223"),
    ("shop asistant", "en", 20.0, "5223"), ("siivoja", "fi", 30.0, "9112"),
    ("stadare", "sv", 30.0, "9112"), ("cleaners", None, 30.0, "9112"),
]
SEED = 42


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    return pa.table({"job_title": pa.array([r[0] for r in rows], pa.string()),
                     "language": pa.array([r[1] for r in rows], pa.string()),
                     "hours": pa.array([r[2] for r in rows], pa.float64())})


def _labels(rows: list[tuple[Any, ...]]) -> list[str]:
    return [r[3] for r in rows]


SPEC = FeatureSpec(text=("job_title",), numeric=("hours",), categorical=("language",))


def _fitted(params: dict[str, Any] | None = None) -> Any:
    model = build_estimator(TEXT_CLASSIFIER, params or {}, SPEC, SEED)
    return model.fit(prepare_frame(_table(TRAIN), SPEC), _labels(TRAIN))


# --- feature_spec --------------------------------------------------------------------------

MIXED_SCHEMA = pa.schema([
    ("title", pa.string()), ("description", pa.large_string()), ("language", pa.string()),
    ("hours", pa.float64()), ("age", pa.int32()), ("income", pa.decimal128(10, 2)),
    ("manager", pa.bool_()), ("started", pa.date32()),
    ("seen", pa.timestamp("us", tz="UTC")),
])


def test_feature_spec_types_tabular_columns_by_arrow_type():
    spec = feature_spec(MIXED_SCHEMA, ["title", "description"],
                        ["language", "hours", "age", "income", "manager", "started", "seen"])
    assert spec.text == ("title", "description")
    assert spec.numeric == ("hours", "age", "income")
    assert spec.categorical == ("language", "manager", "started", "seen")
    assert spec.columns == ("title", "description", "hours", "age", "income", "language",
                            "manager", "started", "seen")


def test_feature_spec_round_trips_through_a_dict():
    spec = feature_spec(MIXED_SCHEMA, ["title"], ["age", "manager"])
    assert spec.as_dict() == {"text": ["title"], "numeric": ["age"],
                              "categorical": ["manager"]}
    assert FeatureSpec.from_dict(spec.as_dict()) == spec
    assert FeatureSpec.from_dict({"text": ["title"]}) == FeatureSpec(("title",), (), ())


def test_feature_spec_names_every_missing_column_and_what_exists():
    with pytest.raises(SchemaMismatchError) as e:
        feature_spec(MIXED_SCHEMA, ["job_title"], ["hours", "region"])
    msg = str(e.value)
    assert "job_title" in msg and "region" in msg
    assert "the data has: title, description, language, hours" in msg


def test_feature_spec_refuses_a_text_column_that_is_not_a_string():
    with pytest.raises(SchemaMismatchError, match=r"age \(int32\)"):
        feature_spec(MIXED_SCHEMA, ["title", "age"], [])


@pytest.mark.parametrize(("text", "tabular", "twice"), [(["title"], ["title"], "title"),
                                                        ([], ["age", "hours", "age"], "age")])
def test_feature_spec_refuses_a_column_given_twice(text: list[str], tabular: list[str],
                                                   twice: str):
    with pytest.raises(UsageError, match=f"listed more than once: {twice};"):
        feature_spec(MIXED_SCHEMA, text, tabular)


def test_feature_spec_needs_a_column_and_lists_of_names():
    with pytest.raises(UsageError, match="at least one feature column"):
        feature_spec(MIXED_SCHEMA, [], [])
    with pytest.raises(UsageError, match="list of column names"):
        feature_spec(MIXED_SCHEMA, "title", [])
    with pytest.raises(UsageError, match="unknown groups"):
        FeatureSpec.from_dict({"text": ["title"], "numbers": ["age"]})


# --- prepare_frame -------------------------------------------------------------------------

NULLS = pa.table({
    "extra": [1, 2, 3],
    "title": pa.array(["kokki", None, ""], pa.large_string()),
    "language": ["fi", None, "sv"],
    "hours": pa.array([40, None, 7], pa.int64()),
    "income": pa.array([Decimal("1.50"), None, Decimal("-2.25")], pa.decimal128(6, 2)),
    "manager": [True, None, False],
    "started": pa.array([dt.date(2024, 1, 31), None, dt.date(1999, 12, 1)]),
})
NULLS_SPEC = FeatureSpec(text=("title",), numeric=("hours", "income"),
                         categorical=("language", "manager", "started"))


def test_prepare_frame_turns_nulls_into_empty_text_missing_and_nan():
    frame = prepare_frame(NULLS, NULLS_SPEC)
    assert list(frame.columns) == ["title", "hours", "income", "language", "manager",
                                   "started"]
    assert frame["title"].tolist() == ["kokki", "", ""]
    assert frame["language"].tolist() == ["fi", "(missing)", "sv"]
    assert frame["manager"].tolist() == ["True", "(missing)", "False"]
    assert frame["started"].tolist() == ["2024-01-31", "(missing)", "1999-12-01"]
    assert frame["hours"].dtype == np.float64 and frame["income"].dtype == np.float64
    assert frame["hours"].tolist()[0::2] == [40.0, 7.0] and math.isnan(frame["hours"][1])
    assert frame["income"].tolist()[0::2] == [1.5, -2.25] and math.isnan(frame["income"][1])
    assert all(frame[c].dtype == object for c in ("title", "language", "manager", "started"))
    assert all(type(v) is str for c in ("title", "language") for v in frame[c])


def test_prepare_frame_gives_the_same_frame_from_pandas_and_from_arrow():
    # pandas 3 reads strings as its "str" dtype (NaN for null) and ints with nulls as float
    table = NULLS.append_column("seen", pa.array(
        [dt.datetime(2024, 5, 1, 8, 30, tzinfo=dt.UTC), None, dt.datetime(2024, 5, 2)],
        pa.timestamp("us", tz="UTC")))
    spec = FeatureSpec(NULLS_SPEC.text, NULLS_SPEC.numeric,
                       (*NULLS_SPEC.categorical, "seen"))
    df = table.to_pandas()
    assert isinstance(df["language"].dtype, pd.StringDtype)
    from_arrow, from_pandas = prepare_frame(table, spec), prepare_frame(df, spec)
    pd.testing.assert_frame_equal(from_pandas, from_arrow)
    assert from_arrow["seen"].tolist() == ["2024-05-01 08:30:00+00:00", "(missing)",
                                           "2024-05-02 00:00:00+00:00"]


def test_prepare_frame_reads_mixed_pandas_object_columns_as_strings():
    df = pd.DataFrame({"title": pd.Series(["kokki", 12, None], dtype=object),
                       "language": pd.Series(["fi", 3, float("nan")], dtype=object)})
    frame = prepare_frame(df, FeatureSpec(("title",), (), ("language",)))
    assert frame["title"].tolist() == ["kokki", "12", ""]
    assert frame["language"].tolist() == ["fi", "3", "(missing)"]


def test_prepare_frame_refuses_missing_and_mistyped_columns():
    with pytest.raises(SchemaMismatchError, match="missing from the data: region"):
        prepare_frame(NULLS, FeatureSpec(("title",), (), ("region",)))
    with pytest.raises(SchemaMismatchError, match="'language' holds string, not numbers"):
        prepare_frame(NULLS, FeatureSpec((), ("language",), ()))
    with pytest.raises(SchemaMismatchError, match="'hours' holds int64, not strings"):
        prepare_frame(NULLS, FeatureSpec(("hours",), (), ()))


# --- the text classifier -------------------------------------------------------------------

def test_text_classifier_is_built_as_specified():
    model = build_estimator(TEXT_CLASSIFIER, {"C": 3, "max_features": 500}, SPEC, 7)
    assert [name for name, _ in model.steps] == ["features", "classifier"]
    features = model.named_steps["features"]
    columns = {name: cols for name, _, cols in features.transformers}
    assert columns == {"text_char_0": "job_title", "text_word_0": "job_title",
                       "numeric": ["hours"], "categorical": ["language"]}
    steps = {name: step for name, step, _ in features.transformers}
    char, word = steps["text_char_0"], steps["text_word_0"]
    assert isinstance(char, TfidfVectorizer) and isinstance(word, TfidfVectorizer)
    assert (char.analyzer, char.ngram_range, char.sublinear_tf, char.min_df,
            char.max_features) == ("char_wb", (2, 5), True, 1, 500)
    assert (word.analyzer, word.ngram_range, word.token_pattern) == (
        "word", (1, 2), r"(?u)\b\w+\b")
    assert isinstance(steps["categorical"], OneHotEncoder)
    assert steps["categorical"].handle_unknown == "ignore"
    assert [type(s).__name__ for _, s in steps["numeric"].steps] == [
        "SimpleImputer", "StandardScaler"]
    clf = model.named_steps["classifier"]
    assert isinstance(clf, LogisticRegression)
    assert (clf.C, clf.max_iter, clf.random_state, clf.class_weight) == (3.0, 2000, 7, None)


def test_text_classifier_adds_only_the_groups_it_has_and_builds_sgd():
    spec = FeatureSpec(text=("a", "b"), numeric=(), categorical=())
    model = build_estimator(TEXT_CLASSIFIER, {"classifier": "sgd", "alpha": 1e-4,
                                              "char_ngrams": [3, 3], "word_ngrams": (1, 1),
                                              "class_weight": "balanced"}, spec, 5)
    features = model.named_steps["features"]
    assert [(n, c) for n, _, c in features.transformers] == [
        ("text_char_0", "a"), ("text_word_0", "a"), ("text_char_1", "b"), ("text_word_1", "b")]
    assert features.transformers[2][1].ngram_range == (3, 3)
    assert features.transformers[3][1].ngram_range == (1, 1)
    clf = model.named_steps["classifier"]
    assert isinstance(clf, SGDClassifier)
    assert (clf.loss, clf.alpha, clf.tol, clf.random_state, clf.class_weight) == (
        "log_loss", 1e-4, 1e-4, 5, "balanced")


def test_text_classifier_codes_held_out_titles_with_typos():
    model = _fitted()
    predicted = model.predict(prepare_frame(_table(HELD_OUT), SPEC))
    # measured: all 15 right (deterministic: fixed data, seed and solver)
    assert predicted.tolist() == _labels(HELD_OUT)
    sgd = _fitted({"classifier": "sgd"})
    predicted = sgd.predict(prepare_frame(_table(HELD_OUT), SPEC))
    # measured: 14 of 15; only "stadare" (städare without its umlaut) is missed
    missed = [row[0] for row, code in zip(HELD_OUT, predicted, strict=True) if code != row[3]]
    assert missed == ["stadare"]


@pytest.mark.parametrize(("params", "message"), [
    ({"C": 1, "gamma": 2}, r"unknown params of 'text-classifier': gamma; known: classifier, "
                           r"C, alpha"),
    ({"C": 0}, r"param C=0 is not allowed; give a number > 0"),
    ({"C": "10"}, r"param C='10' is not allowed"),
    ({"C": True}, r"param C=True is not allowed"),
    ({"classifier": "sgd", "alpha": -1.0}, r"param alpha=-1.0 is not allowed"),
    ({"classifier": "svm"}, r"param classifier='svm' is not allowed; give one of: "
                            r"'logistic', 'sgd'"),
    ({"alpha": 1e-4}, r"param 'alpha' applies only to classifier='sgd'"),
    ({"classifier": "sgd", "C": 1.0}, r"param 'C' applies only to classifier='logistic'"),
    ({"max_iter": 0}, r"param max_iter=0 is not allowed; give an integer >= 1"),
    ({"max_iter": 10.5}, r"param max_iter=10.5"),
    ({"char_ngrams": [5, 2]}, r"param char_ngrams=\[5, 2\] is not allowed; give two "
                              r"integers \[lo, hi\] with 1 <= lo <= hi"),
    ({"char_ngrams": [0, 2]}, r"param char_ngrams=\[0, 2\]"),
    ({"word_ngrams": [2]}, r"param word_ngrams=\[2\]"),
    ({"word_ngrams": ["1", "2"]}, r"param word_ngrams=\['1', '2'\]"),
    ({"min_df": 0}, r"param min_df=0 is not allowed; give an integer >= 1"),
    ({"min_df": 1.5}, r"param min_df=1.5"),
    ({"max_features": 0}, r"param max_features=0"),
    ({"class_weight": "even"}, r"param class_weight='even' is not allowed; give \"balanced\""),
    ({"class_weight": {"2221": 0}}, r"param class_weight\['2221'\]=0"),
])
def test_text_classifier_params_are_checked(params: dict[str, Any], message: str):
    with pytest.raises(UsageError, match=message):
        build_estimator(TEXT_CLASSIFIER, params, SPEC, 1)


@pytest.mark.parametrize("seed", [-1, 2**32, True, "1"])
def test_seed_is_checked(seed: Any):
    with pytest.raises(UsageError, match="seed"):
        build_estimator(TEXT_CLASSIFIER, {}, SPEC, seed)


# --- import-path estimators ----------------------------------------------------------------

@pytest.mark.parametrize("path", ["sklearn.ensemble:RandomForestClassifier",
                                  "sklearn.ensemble.RandomForestClassifier"])
def test_import_path_estimator_is_wrapped_seeded_and_predicts(path: str):
    model = build_estimator(path, {"n_estimators": 10}, SPEC, SEED)
    assert [name for name, _ in model.steps] == ["features", "classifier"]
    forest = model.named_steps["classifier"]
    assert isinstance(forest, RandomForestClassifier)
    assert (forest.n_estimators, forest.random_state) == (10, SEED)
    columns = {n: c for n, _, c in model.named_steps["features"].transformers}
    assert columns["text_char_0"] == "job_title" and columns["categorical"] == ["language"]
    model.fit(prepare_frame(_table(TRAIN), SPEC), _labels(TRAIN))
    predicted = model.predict(prepare_frame(_table(TRAIN), SPEC))
    # measured: 34 of 34 training rows (ten seeded trees over the TF-IDF features)
    assert predicted.tolist() == _labels(TRAIN)


def test_import_path_estimator_keeps_an_explicit_seed_and_can_skip_preprocessing():
    model = build_estimator("sklearn.ensemble:RandomForestClassifier",
                            {"n_estimators": 5, "random_state": 3}, SPEC, SEED,
                            preprocess=False)
    assert isinstance(model, RandomForestClassifier) and model.random_state == 3
    frame = prepare_frame(_table(TRAIN), SPEC)[["hours"]]
    assert model.fit(frame, _labels(TRAIN)).predict(frame).shape == (len(TRAIN),)


@pytest.mark.parametrize(("path", "params", "message"), [
    ("sklearn.linear_model:LinearRegression", {},
     r"Silta trains classifiers; 'sklearn.linear_model:LinearRegression' is not one"),
    ("sklearn.preprocessing:StandardScaler", {}, r"Silta trains classifiers"),
    ("collections:OrderedDict", {}, r"Silta trains classifiers"),
    ("nosuchpackage.models:Coder", {},
     r"'nosuchpackage.models:Coder' cannot be imported .*check the name and that module "
     r"'nosuchpackage.models' is installed"),
    ("sklearn.ensemble:RandomJungleClassifier", {}, r"cannot be imported"),
    ("math:pi", {}, r"'math:pi' is a float, not a class or a function"),
    ("RandomForestClassifier", {}, r"is not 'text-classifier' or an import path"),
    ("sklearn.ensemble:RandomForestClassifier", {"n_trees": 10},
     r"does not take these params \(n_trees\).*n_trees"),
    ("sklearn.ensemble:RandomForestClassifier", {"n_estimators": -1},
     r"'sklearn.ensemble:RandomForestClassifier': .*n_estimators"),
])
def test_import_path_estimator_is_refused_with_a_reason(path: str, params: dict[str, Any],
                                                         message: str):
    with pytest.raises(UsageError, match=message):
        build_estimator(path, params, SPEC, SEED)


# --- skops ---------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"classifier": "sgd", "class_weight": "balanced"}])
def test_text_classifier_saves_and_loads_with_skops_trusting_nothing_extra(
        tmp_path: Path, params: dict[str, Any]):
    model = _fitted(params)
    probe = prepare_frame(_table(HELD_OUT), SPEC)
    # what skops asks to trust is all sklearn/numpy, which artifacts.py trusts by default
    untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    assert all(t.startswith(("sklearn.", "numpy.")) for t in untrusted), untrusted
    ref = save_model(str(tmp_path), {}, "occupations", 1, model)
    loaded = load_model(ref, ref.sha256)
    assert loaded is not model
    assert np.array_equal(loaded.predict_proba(probe), model.predict_proba(probe))
    assert loaded.predict(probe).tolist() == model.predict(probe).tolist()


def test_wrapped_forest_saves_and_loads_with_skops(tmp_path: Path):
    model = build_estimator("sklearn.ensemble:RandomForestClassifier", {"n_estimators": 5},
                            SPEC, SEED).fit(prepare_frame(_table(TRAIN), SPEC), _labels(TRAIN))
    ref = save_model(str(tmp_path), {}, "forest", 1, model)
    probe = prepare_frame(_table(HELD_OUT), SPEC)
    assert np.array_equal(load_model(ref, ref.sha256).predict_proba(probe),
                          model.predict_proba(probe))


# --- predictions ---------------------------------------------------------------------------

class _Fixed:
    """A fitted classifier stand-in whose probabilities are given."""

    def __init__(self, classes: list[Any], proba: np.ndarray) -> None:
        self.classes_ = np.array(classes, dtype=object)
        self._proba = np.asarray(proba, dtype=np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self._proba[: len(frame)]


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": np.zeros(n)})


def test_predict_top_k_orders_by_probability_then_class_order():
    est = _Fixed(["5120", "2221", "2512"], [[0.2, 0.5, 0.3],
                                            [0.4, 0.2, 0.4],     # tie: 5120 comes first
                                            [1 / 3, 1 / 3, 1 / 3]])
    p = predict_top_k(est, _rows(3), 2)
    assert p.predicted == ["2221", "5120", "5120"]
    assert p.confidence.dtype == np.float64
    assert p.confidence.tolist() == [0.5, 0.4, 1 / 3]
    assert p.top_codes == [["2221", "2512"], ["5120", "2512"], ["5120", "2221"]]
    assert p.top_probabilities == [[0.5, 0.3], [0.4, 0.4], [1 / 3, 1 / 3]]


def test_predict_top_k_beyond_the_classes_gives_all_and_codes_are_str():
    est = _Fixed([3, 1], [[0.25, 0.75]])
    p = predict_top_k(est, _rows(1), 10)
    assert p.top_codes == [["1", "3"]] and p.top_probabilities == [[0.75, 0.25]]
    assert p.predicted == ["1"] and classes_of(est) == ["3", "1"]


def _reference_top_k(proba: np.ndarray, k: int) -> list[list[int]]:
    return [sorted(range(len(row)), key=lambda c: (-row[c], c))[:k] for row in proba]


@pytest.mark.parametrize("k", [1, 3, 32, 33, 40])
def test_predict_top_k_matches_a_plain_sort_with_many_ties(k: int):
    # both ways of ranking (argmax rounds for k <= 32, a stable sort above) agree with it
    rng = np.random.default_rng(1)
    proba = rng.integers(0, 4, size=(200, 40)).astype(np.float64) + 1e-9
    proba /= proba.sum(axis=1, keepdims=True)
    classes = [f"c{i:02d}" for i in range(40)]
    p = predict_top_k(_Fixed(classes, proba), _rows(200), k)
    expected = _reference_top_k(proba, k)
    assert p.top_codes == [[classes[c] for c in row] for row in expected]
    assert p.top_probabilities == [[proba[r, c] for c in row] for r, row in enumerate(expected)]
    assert p.predicted == [classes[row[0]] for row in expected]


def test_predict_top_k_without_predict_proba():
    spec = FeatureSpec(("job_title",), (), ())
    model = build_estimator("sklearn.linear_model:SGDClassifier", {"loss": "hinge"}, spec,
                            SEED).fit(prepare_frame(_table(TRAIN), spec), _labels(TRAIN))
    assert not hasattr(model, "predict_proba")
    frame = prepare_frame(_table(HELD_OUT[:3]), spec)
    p = predict_top_k(model, frame, 3)
    assert p.predicted == model.predict(frame).tolist()
    assert p.top_codes == [[c] for c in p.predicted]
    assert np.isnan(p.confidence).all() and len(p.confidence) == 3
    assert all(len(row) == 1 and math.isnan(row[0]) for row in p.top_probabilities)


def test_predict_top_k_of_a_real_model_and_of_no_rows():
    model = _fitted()
    frame = prepare_frame(_table(HELD_OUT), SPEC)
    p = predict_top_k(model, frame, 3)
    proba = model.predict_proba(frame)
    assert p.predicted == model.predict(frame).tolist()
    assert np.array_equal(p.confidence, proba.max(axis=1))
    assert all(len(codes) == 3 and codes[0] == pred
               for codes, pred in zip(p.top_codes, p.predicted, strict=True))
    empty = predict_top_k(model, frame.iloc[:0], 3)
    assert (empty.predicted, empty.top_codes, empty.confidence.shape) == ([], [], (0,))


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_predict_top_k_needs_a_positive_k(k: Any):
    with pytest.raises(UsageError, match="top-k"):
        predict_top_k(_Fixed(["a"], [[1.0]]), _rows(1), k)


def test_classes_of_an_unfitted_model_is_refused():
    with pytest.raises(UsageError, match="not a fitted classifier"):
        classes_of(Pipeline([("classifier", LogisticRegression())]))
    assert classes_of(_fitted()) == ["2221", "2512", "5120", "5223", "9112"]
