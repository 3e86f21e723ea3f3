"""The stable split, metrics overall and per segment, coverage, gaps and explanations."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from agent.ml.estimators import TEXT_CLASSIFIER, FeatureSpec, build_estimator, prepare_frame
from agent.ml.evaluate import (
    METRIC_NAMES,
    compute_metrics,
    confidence_coverage,
    primary_gap,
    segment_metrics,
    split_mask,
)
from agent.ml.explain import influential_features, top_terms
from connectors.errors import UsageError

# --- split_mask ----------------------------------------------------------------------------


def _held_out(values: list[str], seed: int, fraction: float) -> bool:
    """The documented rule, written out independently."""
    text = f"{seed}\x1f" + "\x1f".join(values)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64 < fraction


def _keys(n: int) -> pd.DataFrame:
    return pd.DataFrame({"respondent": np.arange(1000, 1000 + n),
                         "wave": [f"2024Q{i % 4 + 1}" for i in range(n)]})


def test_split_mask_follows_the_documented_hash():
    keys = _keys(500)
    mask = split_mask(keys, 7, 0.3)
    expected = [_held_out([str(r), w], 7, 0.3) for r, w in keys.itertuples(index=False)]
    assert mask.dtype == bool and mask.tolist() == expected


def test_split_mask_depends_on_the_key_not_the_row_order():
    keys = _keys(2000)
    mask = pd.Series(split_mask(keys, 11, 0.25), index=keys["respondent"])
    shuffled = keys.sample(frac=1.0, random_state=3)
    again = pd.Series(split_mask(shuffled, 11, 0.25), index=shuffled["respondent"])
    assert (again.loc[mask.index] == mask).all()
    # a later version of the table has more rows; the old ones keep their side
    more = split_mask(_keys(3000), 11, 0.25)
    assert more[:2000].tolist() == mask.tolist()


def test_split_mask_holds_out_close_to_the_fraction_and_depends_on_the_seed():
    keys = _keys(10_000)
    first, second = split_mask(keys, 1, 0.2), split_mask(keys, 2, 0.2)
    # measured: 0.2042 and 0.1913 of the 10 000 keys (binomial sd 0.004)
    assert abs(first.mean() - 0.2) < 0.01 and abs(second.mean() - 0.2) < 0.01
    # independent splits of 20 % differ on about 2 * 0.2 * 0.8 = 32 % of the rows
    # (measured: 31.87 %)
    assert 0.30 < (first != second).mean() < 0.34
    # a smaller fraction with the same seed holds out a subset of the same rows
    smaller = split_mask(keys, 1, 0.1)
    assert not (smaller & ~first).any() and smaller.sum() > 800


def test_split_mask_hashes_nulls_and_integral_floats_stably():
    # pandas turns an int key with a null into floats; the other rows must not move
    as_int = pd.DataFrame({"id": [1, 2, 3], "wave": ["a", "b", None]})
    as_float = pd.DataFrame({"id": [1.0, math.nan, 3.0], "wave": ["a", "b", None]})
    rows = [["1", "a"], ["\x00", "b"], ["3", "\x00"]]
    for seed in range(20):
        ints, floats = split_mask(as_int, seed, 0.5), split_mask(as_float, seed, 0.5)
        assert [ints[0], ints[2]] == [floats[0], floats[2]]
        assert floats.tolist() == [_held_out(r, seed, 0.5) for r in rows]


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.2", math.nan])
def test_split_mask_refuses_a_fraction_outside_0_1(fraction: Any):
    with pytest.raises(UsageError, match="between 0 and 1"):
        split_mask(_keys(3), 1, fraction)


def test_split_mask_of_no_rows_and_no_keys():
    assert split_mask(_keys(0), 1, 0.2).tolist() == []
    with pytest.raises(UsageError, match="at least one key column"):
        split_mask(pd.DataFrame(index=range(3)), 1, 0.2)


# --- compute_metrics -----------------------------------------------------------------------

def _sklearn(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "weighted_f1": f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "macro_precision": precision_score(y_true, y_pred, average="macro", zero_division=0),
        "macro_recall": recall_score(y_true, y_pred, average="macro", zero_division=0),
    }


def test_compute_metrics_equals_sklearn_exactly():
    rng = np.random.default_rng(5)
    # codes that sort differently as bytes and as numbers, and a class only predicted
    codes = np.array(["2221", "10", "9112", "Ä", "a", "Z", "ö"])
    y_true = codes[rng.integers(0, 6, 3000)].tolist()
    y_pred = [t if rng.random() < 0.7 else str(codes[rng.integers(0, 7)]) for t in y_true]
    assert "ö" in y_pred and "ö" not in y_true
    assert compute_metrics(y_true, y_pred, METRIC_NAMES) == _sklearn(y_true, y_pred)


def test_compute_metrics_gives_the_names_asked_for_and_nothing_for_no_rows():
    result = compute_metrics(["a", "b", "b"], ["a", "b", "a"], ["macro_recall", "accuracy"])
    assert result == {"macro_recall": 0.75, "accuracy": pytest.approx(2 / 3)}
    assert list(result) == ["macro_recall", "accuracy"]
    assert compute_metrics([], [], METRIC_NAMES) == {}


def test_compute_metrics_refuses_unknown_names_and_unequal_lengths():
    with pytest.raises(UsageError, match="unknown metrics: auc; give a list of: accuracy, "
                                         "macro_f1, weighted_f1, macro_precision, macro_recall"):
        compute_metrics(["a"], ["a"], ["accuracy", "auc"])
    with pytest.raises(UsageError, match="unknown metrics: accuracy; give a list"):
        compute_metrics(["a"], ["a"], "accuracy")
    with pytest.raises(UsageError, match="y_true has 2 labels but y_pred has 1"):
        compute_metrics(["a", "b"], ["a"], ["accuracy"])


# --- segment_metrics -----------------------------------------------------------------------

Y_TRUE = ["a", "a", "b", "b", "c", "a"]
Y_PRED = ["a", "b", "b", "b", "c", "c"]
SEGMENTS = pd.DataFrame({"language": ["fi", "fi", "sv", "sv", None, "fi"],
                         "wave": [1, 1, 1, 2, 2, 2]})


def test_segment_metrics_per_value_by_hand():
    result = segment_metrics(Y_TRUE, Y_PRED, SEGMENTS, ["accuracy", "macro_f1", "macro_recall"])
    assert list(result) == ["language", "wave"]
    assert list(result["language"]) == ["(missing)", "fi", "sv"]
    # fi: a a a -> a b c. Classes a, b, c: recall 1/3, 0, 0; f1 of a = 2*1*(1/3)/(4/3)
    assert result["language"]["fi"] == {"n": 3, "accuracy": pytest.approx(1 / 3),
                                        "macro_f1": pytest.approx(1 / 6),
                                        "macro_recall": pytest.approx(1 / 9)}
    assert result["language"]["sv"] == {"n": 2, "accuracy": 1.0, "macro_f1": 1.0,
                                        "macro_recall": 1.0}
    assert result["language"]["(missing)"]["n"] == 1
    assert result["wave"]["1"]["accuracy"] == pytest.approx(2 / 3)
    assert result["wave"]["2"]["n"] == 3 and result["wave"]["2"]["accuracy"] == pytest.approx(
        2 / 3)


def test_segment_metrics_needs_a_segment_row_per_prediction():
    with pytest.raises(UsageError, match="segments have 5 rows but there are 6"):
        segment_metrics(Y_TRUE, Y_PRED, SEGMENTS.iloc[:5], ["accuracy"])


# --- confidence_coverage -------------------------------------------------------------------

def test_confidence_coverage_by_hand():
    y_true = ["a", "b", "c", "d", "e"]
    y_pred = ["a", "b", "x", "d", "x"]          # rows 0, 1, 3 right
    confidence = np.array([0.95, 0.8, 0.75, math.nan, 0.55])
    result = confidence_coverage(y_true, y_pred, confidence, (0.5, 0.8, 0.9, 0.99))
    assert result[:3] == [
        {"threshold": 0.5, "coverage": 0.8, "accuracy": 0.5, "rows": 4},
        {"threshold": 0.8, "coverage": 0.4, "accuracy": 1.0, "rows": 2},   # 0.8 itself counts
        {"threshold": 0.9, "coverage": 0.2, "accuracy": 1.0, "rows": 1},
    ]
    last = result[3]
    assert (last["threshold"], last["coverage"], last["rows"]) == (0.99, 0.0, 0)
    assert math.isnan(last["accuracy"])


def test_confidence_coverage_default_thresholds_and_checks():
    result = confidence_coverage(["a", "b"], ["a", "a"], np.array([0.65, 0.95]))
    assert [(r["threshold"], r["rows"]) for r in result] == [
        (0.5, 2), (0.6, 2), (0.7, 1), (0.8, 1), (0.9, 1)]
    assert [r["accuracy"] for r in result] == [0.5, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(UsageError, match="2 confidences for 3 predictions"):
        confidence_coverage(["a"] * 3, ["a"] * 3, np.array([0.5, 0.5]))
    with pytest.raises(UsageError, match="thresholds"):
        confidence_coverage(["a"], ["a"], np.array([0.5]), (0.5, 1.5))


# --- primary_gap ---------------------------------------------------------------------------

def test_primary_gap_over_values_with_enough_rows():
    segments = {
        "language": {"en": {"n": 30, "accuracy": 0.9}, "fi": {"n": 50, "accuracy": 0.7},
                     "sv": {"n": 5, "accuracy": 0.1}},        # too few rows to count
        "wave": {"1": {"n": 25, "accuracy": 0.8}, "2": {"n": 10, "accuracy": 0.2}},
        "region": {"north": {"n": 20, "accuracy": 0.6}, "east": {"n": 20, "accuracy": 0.6},
                   "west": {"n": 40, "accuracy": 0.65}},
    }
    gaps = primary_gap(segments, "accuracy")
    assert gaps == [
        {"segment": "language", "metric": "accuracy", "best": "en", "best_value": 0.9,
         "worst": "fi", "worst_value": 0.7, "gap": pytest.approx(0.2), "min_rows": 20},
        # wave has one value with 20+ rows: no gap; of equal worst values "east" is first
        {"segment": "region", "metric": "accuracy", "best": "west", "best_value": 0.65,
         "worst": "east", "worst_value": 0.6, "gap": pytest.approx(0.05), "min_rows": 20},
    ]
    lower = primary_gap(segments, "accuracy", min_rows=5)
    assert [(g["segment"], g["worst"], g["gap"]) for g in lower] == [
        ("language", "sv", pytest.approx(0.8)), ("wave", "2", pytest.approx(0.6)),
        ("region", "east", pytest.approx(0.05))]


def test_primary_gap_from_segment_metrics_and_its_checks():
    segments = segment_metrics(Y_TRUE, Y_PRED, SEGMENTS, ["accuracy"])
    gaps = primary_gap(segments, "accuracy", min_rows=2)
    assert [(g["segment"], g["best"], g["worst"]) for g in gaps] == [
        ("language", "sv", "fi"), ("wave", "1", "1")]
    with pytest.raises(UsageError, match="unknown metrics: n"):
        primary_gap(segments, "n")
    with pytest.raises(UsageError, match="min_rows 0"):
        primary_gap(segments, "accuracy", min_rows=0)


# --- explanations --------------------------------------------------------------------------

TITLES = {"2221": ["sairaanhoitaja", "sjuksköterska", "registered nurse", "nurse"],
          "2512": ["ohjelmistokehittäjä", "mjukvaruutvecklare", "software developer"],
          "5120": ["kokki", "kock", "cook", "line cook"]}


def _text_only_data(n: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """The title decides the code; language and hours are noise."""
    rng = np.random.default_rng(seed)
    codes = sorted(TITLES)
    y = [codes[i] for i in rng.integers(0, len(codes), n)]
    frame = pd.DataFrame({
        "job_title": [str(rng.choice(TITLES[c])) for c in y],
        "language": rng.choice(["fi", "sv", "en"], n).astype(object),
        "hours": rng.normal(37.5, 3.0, n)})
    return frame, y


SPEC = FeatureSpec(text=("job_title",), numeric=("hours",), categorical=("language",))


def _text_model() -> Any:
    frame, y = _text_only_data(150, 1)
    return build_estimator(TEXT_CLASSIFIER, {}, SPEC, 3).fit(prepare_frame(frame, SPEC), y)


def test_influential_features_ranks_the_deciding_text_first_and_repeats():
    model = _text_model()
    frame, y = _text_only_data(300, 2)
    x = prepare_frame(frame, SPEC)
    found = influential_features(model, x, y, seed=4)
    # equal importances (the two noise columns) in name order
    assert [f["feature"] for f in found] == ["job_title", "hours", "language"]
    importance = {str(f["feature"]): float(f["importance"]) for f in found}
    # measured: shuffling the titles costs 0.693 of accuracy, the noise columns nothing
    assert importance["job_title"] > 0.6
    assert importance["hours"] == 0.0 and importance["language"] == 0.0
    assert influential_features(model, x, y, seed=4) == found
    sampled = influential_features(model, x, y, seed=4, max_rows=40)
    assert sampled[0]["feature"] == "job_title" and sampled != found


def test_influential_features_of_nothing_and_equal_ones_by_name():
    model = _text_model()
    frame, y = _text_only_data(5, 2)
    assert influential_features(model, prepare_frame(frame, SPEC).iloc[:0], [], seed=1) == []
    # a model that ignores every input: all importances 0, in name order
    constant = DummyClassifier(strategy="most_frequent").fit(prepare_frame(frame, SPEC), y)
    found = influential_features(constant, prepare_frame(frame, SPEC), y, seed=1)
    assert [(f["feature"], f["importance"]) for f in found] == [
        ("hours", 0.0), ("job_title", 0.0), ("language", 0.0)]
    with pytest.raises(UsageError, match="3 labels for 5 rows"):
        influential_features(model, prepare_frame(frame, SPEC), y[:3], seed=1)


def _with_coefficients(model: Any, weights: dict[str, dict[str, float]]) -> Any:
    """``model`` with its coefficients replaced: class -> {sklearn feature name: weight}."""
    names = list(model.named_steps["features"].get_feature_names_out())
    clf = model.named_steps["classifier"]
    coef = np.zeros_like(clf.coef_)
    rows = [str(c) for c in clf.classes_] if coef.shape[0] > 1 else [str(clf.classes_[1])]
    for label, by_name in weights.items():
        for name, weight in by_name.items():
            coef[rows.index(label), names.index(name)] = weight
    clf.coef_ = coef
    return model


def test_top_terms_names_words_ngrams_categories_and_numbers():
    model = _text_model()
    model = _with_coefficients(model, {
        "5120": {"text_word_0__kokki": 2.0, "text_char_0__kokki": 1.5,  # the same text
                 "numeric__hours": 1.0, "categorical__language_fi": 1.0},
        "2221": {"text_char_0__ nur": 3.0, "text_word_0__registered nurse": 0.5,
                 "categorical__language_sv": -4.0},                  # negative: left out
    })
    assert top_terms(model, k=3) == {
        "2221": ["job_title: ' nur'", "job_title: 'registered nurse'"],
        "2512": [],
        # equal weights keep the feature order: numbers come before categories
        "5120": ["job_title: 'kokki'", "hours", "language=fi"],
    }


def test_top_terms_of_a_trained_model_and_of_a_binary_one():
    terms = top_terms(_text_model(), k=8)
    assert list(terms) == ["2221", "2512", "5120"]
    assert "job_title: 'cook'" in terms["5120"] and "job_title: 'nurse'" in terms["2221"]
    spec = FeatureSpec(text=("t",), numeric=(), categorical=("home_lang",))
    frame = pd.DataFrame({"t": ["x y", "y", "x"], "home_lang": ["fi_sv", "en", "fi_sv"]})
    binary = build_estimator(TEXT_CLASSIFIER, {}, spec, 1).fit(frame, ["no", "yes", "yes"])
    binary = _with_coefficients(binary, {"yes": {"text_word_0__x": 2.0,
                                                 "text_word_0__y": -1.0,
                                                 "categorical__home_lang_fi_sv": -3.0}})
    # one row of coefficients: positive points to classes_[1], negative to classes_[0]
    assert top_terms(binary, k=2) == {"no": ["home_lang=fi_sv", "t: 'y'"], "yes": ["t: 'x'"]}


def test_top_terms_of_anything_else_is_empty():
    forest = build_estimator("sklearn.ensemble:RandomForestClassifier", {"n_estimators": 3},
                             SPEC, 1)
    frame, y = _text_only_data(30, 1)
    assert top_terms(forest.fit(prepare_frame(frame, SPEC), y)) == {}
    assert top_terms(_text_model().named_steps["classifier"]) == {}
    assert top_terms(build_estimator(TEXT_CLASSIFIER, {}, SPEC, 1)) == {}  # not fitted
