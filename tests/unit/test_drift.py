"""Drift statistics: values against scipy (or an independent numpy version), method choice,
flags and levels, text profiles, streaming and errors."""

from __future__ import annotations

import json
import math
import re
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from scipy.spatial import distance

from agent.ml.drift import (
    SMALL_SAMPLE,
    TextProfile,
    categorical_drift,
    count_tokens,
    count_values,
    merge_counts,
    numeric_drift,
    numeric_summary,
    text_drift,
)
from connectors.errors import UsageError

REL = 1e-9


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- numeric: values against scipy ---------------------------------------------------------

KS_CASES = [
    (40, 40, False),      # exact, equal sizes
    (300, 450, False),    # exact, different sizes
    (1000, 1000, False),  # exact at the auto limit
    (800, 9000, True),    # exact, ties
    (700, 30_000, False),  # asymptotic (the current side is over scipy's exact limit)
    (20_000, 15_000, True),  # asymptotic, ties
]


@pytest.mark.parametrize(("n_ref", "n_cur", "ties"), KS_CASES)
def test_ks_statistic_and_pvalue_equal_scipy(n_ref: int, n_cur: int, ties: bool) -> None:
    rng = _rng(n_ref + n_cur)
    ref, cur = rng.normal(size=n_ref), rng.normal(0.1, 1.1, size=n_cur)
    if ties:
        ref, cur = np.round(ref, 1), np.round(cur, 1)
    expected = stats.ks_2samp(ref, cur)
    result = numeric_drift(ref, cur, method="ks")
    assert result.method == "ks"
    assert result.statistic == pytest.approx(expected.statistic, rel=REL)
    assert result.value == pytest.approx(expected.pvalue, rel=REL)
    assert result.drifted == (expected.pvalue < 0.05)


@pytest.mark.parametrize(("n_ref", "n_cur", "ties"), [(2000, 3000, False), (5000, 1500, True),
                                                      (50_000, 50_000, False)])
def test_ks_statistic_equals_scipy_in_wasserstein_detail(n_ref: int, n_cur: int,
                                                         ties: bool) -> None:
    rng = _rng(3)
    ref, cur = rng.exponential(size=n_ref), rng.exponential(1.2, size=n_cur)
    if ties:
        ref, cur = np.floor(ref * 4), np.floor(cur * 4) + 0.0
    result = numeric_drift(ref, cur, method="wasserstein")
    assert result.detail["ks_statistic"] == pytest.approx(stats.ks_2samp(ref, cur).statistic,
                                                          rel=REL)


@pytest.mark.parametrize(("n_ref", "n_cur", "ties"), [(1500, 1500, False), (3000, 800, True),
                                                      (200_000, 150_000, False)])
def test_wasserstein_equals_scipy_over_population_std(n_ref: int, n_cur: int,
                                                      ties: bool) -> None:
    """Normalized by the reference's population std (np.std, ddof=0), as Evidently does."""
    rng = _rng(11)
    ref, cur = rng.normal(5, 2, size=n_ref), rng.normal(5.5, 2, size=n_cur)
    if ties:
        ref, cur = np.round(ref), np.round(cur)
    raw = stats.wasserstein_distance(ref, cur)
    result = numeric_drift(ref, cur, method="wasserstein")
    assert result.statistic == pytest.approx(raw, rel=REL)
    assert result.value == pytest.approx(raw / np.std(ref, ddof=0), rel=REL)
    assert result.detail["normalized_by"] == "reference_std"


def test_non_finite_values_are_left_out() -> None:
    rng = _rng(5)
    ref, cur = rng.normal(size=300), rng.normal(size=400)
    dirty_ref = np.concatenate([ref, [np.nan, np.inf]])
    dirty_cur = np.concatenate([[np.nan], cur, [-np.inf, np.nan]])
    result = numeric_drift(dirty_ref, dirty_cur, method="ks")
    assert result.value == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=REL)
    assert (result.reference_rows, result.current_rows) == (300, 400)
    assert (result.detail["reference_dropped"], result.detail["current_dropped"]) == (2, 3)


def test_integer_input_is_compared_as_numbers() -> None:
    rng = _rng(6)
    ref, cur = rng.integers(0, 100, size=600), rng.integers(5, 105, size=500)
    result = numeric_drift(ref, cur)
    assert result.method == "ks"
    assert result.value == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=REL)


# --- numeric: zero spread ------------------------------------------------------------------

def test_wasserstein_with_a_constant_reference_uses_the_current_spread() -> None:
    cur = np.array([1.0, 2.0, 3.0, 4.0])
    result = numeric_drift(np.full(10, 2.0), cur, method="wasserstein")
    expected = stats.wasserstein_distance(np.full(10, 2.0), cur) / np.std(cur)
    assert result.value == pytest.approx(expected, rel=REL)
    assert result.detail["normalized_by"] == "current_std"


def test_wasserstein_of_two_constants() -> None:
    same = numeric_drift(np.full(5, 3.0), np.full(8, 3.0), method="wasserstein")
    assert (same.value, same.drifted) == (0.0, False)
    moved = numeric_drift(np.full(5, 3.0), np.full(8, 4.0), method="wasserstein")
    assert math.isinf(moved.value) and moved.drifted
    assert moved.as_dict()["value"] is None
    json.dumps(moved.as_dict(), allow_nan=False)


# --- numeric: PSI --------------------------------------------------------------------------

def _psi_by_numpy(ref: np.ndarray, cur: np.ndarray) -> float:
    """The documented PSI written out independently with np.quantile and np.histogram."""
    inner = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    ref_share = np.histogram(ref, bins=edges)[0] / ref.size
    cur_share = np.histogram(cur, bins=edges)[0] / cur.size
    ref_share[ref_share == 0] = 1e-4
    cur_share[cur_share == 0] = 1e-4
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


@pytest.mark.parametrize("shift", [0.0, 0.2, 0.5, 3.0])
def test_psi_equals_independent_numpy_version(shift: float) -> None:
    rng = _rng(13)
    ref, cur = rng.normal(size=5001), rng.normal(shift, 1, size=3000)
    result = numeric_drift(ref, cur, method="psi")
    assert result.value == pytest.approx(_psi_by_numpy(ref, cur), rel=REL)
    assert len(result.detail["edges"]) == 9


def test_psi_with_heavy_ties_merges_edges() -> None:
    rng = _rng(14)
    ref, cur = rng.poisson(1.0, size=4000).astype(float), rng.poisson(1.6, size=4000) * 1.0
    result = numeric_drift(ref, cur, method="psi")
    assert result.value == pytest.approx(_psi_by_numpy(ref, cur), rel=REL)
    assert len(result.detail["edges"]) < 9


def test_psi_levels() -> None:
    rng = _rng(15)
    ref = rng.normal(size=20_000)
    steady = numeric_drift(ref, rng.normal(size=20_000), method="psi")
    moderate = numeric_drift(ref, rng.normal(0.35, 1, size=20_000), method="psi")
    significant = numeric_drift(ref, rng.normal(0.8, 1, size=20_000), method="psi")
    assert steady.value < 0.1 and (steady.drifted, steady.level) == (False, "ok")
    assert 0.1 <= moderate.value < 0.2 and (moderate.drifted, moderate.level) == (True, "warning")
    assert significant.value >= 0.2
    assert (significant.drifted, significant.level) == (True, "critical")


def test_psi_thresholds_can_be_overridden() -> None:
    rng = _rng(15)
    ref, cur = rng.normal(size=20_000), rng.normal(0.35, 1, size=20_000)
    value = numeric_drift(ref, cur, method="psi").value
    assert not numeric_drift(ref, cur, method="psi", threshold=value + 0.01).drifted
    critical = numeric_drift(ref, cur, method="psi", critical_threshold=value)
    assert critical.level == "critical"


# --- numeric: method choice and flags ------------------------------------------------------

def test_auto_method_on_both_sides_of_the_small_sample_limit() -> None:
    rng = _rng(17)
    cur = rng.normal(size=2000)
    assert numeric_drift(rng.normal(size=SMALL_SAMPLE), cur).method == "ks"
    assert numeric_drift(rng.normal(size=SMALL_SAMPLE + 1), cur).method == "wasserstein"


def test_five_distinct_values_are_compared_as_categories() -> None:
    rng = _rng(19)
    small = numeric_drift(rng.integers(0, 5, size=500), rng.integers(0, 5, size=500))
    assert small.method == "chi2" and small.detail["as_categorical"]
    large = numeric_drift(rng.integers(0, 5, size=5000).astype(float), rng.normal(size=100))
    assert large.method == "jensenshannon"
    six = numeric_drift(rng.integers(0, 6, size=500), rng.integers(0, 6, size=500))
    assert six.method == "ks"


def test_numbers_as_categories_equal_the_counted_strings() -> None:
    ref = np.array([1.0, 2.0, 2.0, 0.0, 0.0, 3.5])
    cur = np.array([2.0, 2.0, 0.0, 7.0])
    result = numeric_drift(ref, cur)
    expected = categorical_drift(count_values(pa.array(ref)), count_values(pa.array(cur)))
    assert (result.method, result.value, result.statistic) == (
        expected.method, expected.value, expected.statistic)
    assert result.detail["new_categories"] == ["7"]
    # -0.0 is 0.0 (numpy compares them equal), so it is one category on both sides
    signed = numeric_drift(np.array([1.0, 2.0, 2.0, -0.0, 0.0, 3.5]), np.array([-0.0, 7.0]))
    assert signed.detail["categories"] == 5


def test_a_shifted_normal_drifts_and_the_same_distribution_does_not() -> None:
    rng = _rng(23)
    for size in (800, 50_000):  # ks, then wasserstein
        ref = rng.normal(size=size)
        same = numeric_drift(ref, rng.normal(size=size))
        shifted = numeric_drift(ref, rng.normal(0.5, 1, size=size))
        assert (same.drifted, same.level) == (False, "ok")
        assert (shifted.drifted, shifted.level) == (True, "warning")
        assert shifted.detail["current_mean"] == pytest.approx(0.5, abs=0.1)


def test_threshold_override_applies_to_the_chosen_method() -> None:
    rng = _rng(29)
    ref, cur = rng.normal(size=50_000), rng.normal(0.05, 1, size=50_000)
    default = numeric_drift(ref, cur)
    assert default.method == "wasserstein" and not default.drifted
    strict = numeric_drift(ref, cur, threshold=default.value / 2)
    assert strict.drifted and strict.threshold == default.value / 2


# --- categorical ---------------------------------------------------------------------------

REF_COUNTS = {"a": 40, "b": 30, "c": 20, "d": 10}
CUR_COUNTS = {"a": 25, "b": 30, "c": 25, "e": 15}


def _table(ref: dict[str, int], cur: dict[str, int]) -> np.ndarray:
    keys = sorted(set(ref) | set(cur))
    return np.array([[ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]])


@pytest.mark.parametrize(("ref", "cur"), [(REF_COUNTS, CUR_COUNTS),
                                          ({"x": 30, "y": 70}, {"x": 45, "y": 55})])
def test_chi2_equals_scipy(ref: dict[str, int], cur: dict[str, int]) -> None:
    expected = stats.chi2_contingency(_table(ref, cur))  # k = 2: Yates' correction, as scipy
    result = categorical_drift(ref, cur)
    assert result.method == "chi2"
    assert result.statistic == pytest.approx(expected.statistic, rel=REL)
    assert result.value == pytest.approx(expected.pvalue, rel=REL)
    assert result.drifted == (expected.pvalue < 0.05)


def test_jensenshannon_equals_scipy() -> None:
    table = _table(REF_COUNTS, CUR_COUNTS)
    expected = distance.jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum())
    result = categorical_drift(REF_COUNTS, CUR_COUNTS, method="jensenshannon")
    assert result.value == pytest.approx(expected, rel=REL)
    assert result.drifted == (expected > 0.1)


def test_categorical_psi_uses_one_bin_per_category() -> None:
    table = _table(REF_COUNTS, CUR_COUNTS)
    ref, cur = table[0] / table[0].sum(), table[1] / table[1].sum()
    ref[ref == 0], cur[cur == 0] = 1e-4, 1e-4
    result = categorical_drift(REF_COUNTS, CUR_COUNTS, method="psi")
    assert result.value == pytest.approx(np.sum((cur - ref) * np.log(cur / ref)), rel=REL)
    assert result.level == "critical"


def test_auto_categorical_method_on_both_sides_of_the_limit() -> None:
    assert categorical_drift({"a": 600, "b": 400}, {"a": 1}).method == "chi2"
    assert categorical_drift({"a": 600, "b": 401}, {"a": 1}).method == "jensenshannon"


def test_categorical_detail() -> None:
    result = categorical_drift(REF_COUNTS, CUR_COUNTS)
    top = result.detail["top_changed"]
    assert top[0] == {"value": "e", "reference_share": 0.0, "current_share": pytest.approx(
        15 / 95)}
    assert len(top) <= 5
    assert result.detail["new_categories"] == ["e"]
    json.dumps(result.as_dict(), allow_nan=False)


def test_same_categorical_distribution_does_not_drift() -> None:
    rng = _rng(31)
    labels = np.array(["a", "b", "c", "d"])
    probs = [0.4, 0.3, 0.2, 0.1]
    for size in (900, 20_000):  # chi2, then jensenshannon
        ref = count_values(pa.array(rng.choice(labels, size, p=probs)))
        same = categorical_drift(ref, count_values(pa.array(rng.choice(labels, size, p=probs))))
        moved = categorical_drift(ref, count_values(pa.array(rng.choice(labels, size))))
        assert not same.drifted and moved.drifted


# --- counting and streaming ----------------------------------------------------------------

def test_count_values_leaves_out_nulls_and_casts_to_string() -> None:
    assert count_values(pa.array(["x", None, "y", "x"])) == {"x": 2, "y": 1}
    assert count_values(pa.array([1, 2, None, 2])) == {"1": 1, "2": 2}
    assert count_values(pa.array(["x", "y", "x", None]).dictionary_encode()) == {"x": 2, "y": 1}


def test_counts_over_batches_equal_counts_of_one_array() -> None:
    rng = _rng(37)
    values = rng.choice(np.array(["p", "q", "r", "s"]), 10_000).tolist()
    values[::7] = [None] * len(values[::7])
    whole = count_values(pa.array(values))
    batches = [count_values(pa.array(values[i:i + 1500])) for i in range(0, 10_000, 1500)]
    assert merge_counts(*batches) == whole
    assert count_values(pa.chunked_array([values[:4000], values[4000:]])) == whole


def test_text_profiles_over_batches_equal_one_profile() -> None:
    texts = ["Tilasto on hyvä.", None, "Data, data ja DATA!", "", "hyvä_päivä 2024"] * 50
    whole = TextProfile()
    whole.add(pa.array(texts))
    batched = TextProfile()
    for start in range(0, len(texts), 37):
        batched.add(pa.array(texts[start:start + 37]))
    left, right = TextProfile(), TextProfile()
    left.add(pa.chunked_array([texts[:100]]))
    right.add(pa.array(texts[100:]))
    for profile in (batched, left.merge(right)):
        assert profile.rows == whole.rows == 200
        assert profile.tokens == whole.tokens
        assert profile.total_tokens == whole.total_tokens
        np.testing.assert_array_equal(profile.lengths, whole.lengths)


# --- text ----------------------------------------------------------------------------------

def _profile(*texts: str | None) -> TextProfile:
    profile = TextProfile()
    profile.add(pa.array(list(texts), type=pa.string()))
    return profile


def test_tokens_are_lowercased_unicode_word_runs() -> None:
    texts = ["Hello, World!  hello", "Kyllä ÄÄNESTYS: 3½ x² naïve_café", "  ", "e-mail@työ.fi",
             "日本語のテキスト", "tab\there\nnew line"]
    expected: dict[str, int] = {}
    for text in texts:  # Python's \w on composed text is the reference
        for token in re.findall(r"\w+", unicodedata.normalize("NFC", text).lower()):
            expected[token] = expected.get(token, 0) + 1
    assert count_tokens(pa.array(texts)) == expected


def test_combining_marks_stay_in_their_word() -> None:
    decomposed = unicodedata.normalize("NFD", "Kyllä")
    assert count_tokens(pa.array([decomposed])) == {decomposed.lower(): 1}


def test_lengths_are_characters_of_non_null_texts() -> None:
    profile = _profile("abc", None, "", "päivä ☀")
    assert profile.rows == 3
    assert profile.lengths.tolist() == [3, 0, 7]


def test_oov_rate_by_hand() -> None:
    reference = _profile("The cat sat", "the cat")
    current = _profile("the dog sat", None, "On the mat")
    # current tokens: the dog sat on the mat -> dog, on, mat are new: 3 of 6
    _, oov, _ = text_drift(reference, current)
    assert oov.method == "oov_rate"
    assert oov.value == 0.5
    assert oov.drifted and oov.threshold == 0.1
    assert sorted(oov.detail["top_oov_tokens"]) == ["dog", "mat", "on"]
    assert not text_drift(reference, current, oov_threshold=0.5)[1].drifted


def test_token_drift_equals_scipy_with_an_other_bucket() -> None:
    reference = _profile("a a a a b b b c c d")  # a 4, b 3, c 2, d 1
    current = _profile("a b b c c c e e")        # a 1, b 2, c 3, e 2
    tokens = text_drift(reference, current, vocabulary_size=2)[2]
    # vocabulary: a, b; other: c + d on the reference side, c + e on the current side
    expected = distance.jensenshannon([4 / 10, 3 / 10, 3 / 10], [1 / 8, 2 / 8, 5 / 8])
    assert tokens.method == "tokens"
    assert tokens.value == pytest.approx(expected, rel=REL)
    assert tokens.drifted == (expected > 0.1)
    full = text_drift(reference, current)[2]
    expected_full = distance.jensenshannon([4, 3, 2, 1, 0, 0], [1, 2, 3, 0, 2, 0])
    assert full.value == pytest.approx(expected_full, rel=REL)


def test_text_length_drift() -> None:
    rng = _rng(41)
    short = [" ".join(["word"] * n) for n in rng.integers(1, 20, size=3000)]
    long = [" ".join(["word"] * n) for n in rng.integers(10, 40, size=3000)]
    reference, same, longer = _profile(*short[:1500]), _profile(*short[1500:]), _profile(*long)
    unchanged = text_drift(reference, same)
    changed = text_drift(reference, longer, length_method="ks")[0]
    assert unchanged[0].method == "length:wasserstein" and not unchanged[0].drifted
    assert unchanged[1].value == 0.0 and not unchanged[2].drifted
    lengths = np.array([len(t) for t in short[:1500]]), np.array([len(t) for t in long])
    assert changed.method == "length:ks" and changed.drifted
    assert changed.value == pytest.approx(stats.ks_2samp(*lengths).pvalue, rel=REL)


def test_text_without_tokens() -> None:
    reference, current = _profile("...", "!"), _profile("?")
    _, oov, tokens = text_drift(reference, current)
    assert (oov.value, tokens.value, tokens.drifted) == (0.0, 0.0, False)
    assert text_drift(_profile("words here"), current)[2].drifted


# --- summary and results -------------------------------------------------------------------

def test_numeric_summary_is_nan_safe() -> None:
    summary = numeric_summary(np.array([1.0, np.nan, 3.0, 2.0, np.inf]))
    assert summary == {"rows": 5.0, "missing": 2.0, "mean": 2.0, "std": pytest.approx(
        np.std([1.0, 2.0, 3.0])), "min": 1.0, "p50": 2.0, "max": 3.0}
    empty = numeric_summary(np.array([np.nan]))
    assert empty["rows"] == 1.0 and math.isnan(empty["mean"])


def test_as_dict_is_json_safe() -> None:
    rng = _rng(43)
    result = numeric_drift(rng.normal(size=100), rng.normal(size=100))
    data = result.as_dict()
    assert data["method"] == "ks" and data["level"] in ("ok", "warning")
    assert json.loads(json.dumps(data, allow_nan=False)) == data


# --- errors --------------------------------------------------------------------------------

def test_unknown_numeric_method_names_the_choices() -> None:
    with pytest.raises(UsageError, match=r"unknown drift method 'kolmogorov'.*ks, wasserstein"):
        numeric_drift(np.arange(10.0), np.arange(10.0), method="kolmogorov")


def test_unknown_categorical_method_names_the_choices() -> None:
    with pytest.raises(UsageError, match=r"unknown drift method 'ks'.*chi2, jensenshannon, psi"):
        categorical_drift({"a": 1}, {"a": 1}, method="ks")


def test_unknown_length_method_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown drift method 'mean'"):
        text_drift(_profile("a"), _profile("b"), length_method="mean")


@pytest.mark.parametrize("current", [np.array([]), np.array([np.nan, np.nan])])
def test_empty_numeric_sample_is_refused(current: np.ndarray) -> None:
    with pytest.raises(UsageError, match="current sample has no finite values"):
        numeric_drift(np.arange(5.0), current)


def test_empty_counts_and_profiles_are_refused() -> None:
    with pytest.raises(UsageError, match="reference sample is empty"):
        categorical_drift({"a": 0}, {"a": 3})
    with pytest.raises(UsageError, match="negative"):
        categorical_drift({"a": -1, "b": 3}, {"a": 3})
    with pytest.raises(UsageError, match="current text profile is empty"):
        text_drift(_profile("a"), _profile(None))


def test_bad_thresholds_are_refused() -> None:
    data = np.arange(100.0)
    with pytest.raises(UsageError, match="p-value between 0 and 1"):
        numeric_drift(data, data, method="ks", threshold=5)
    with pytest.raises(UsageError, match="number >= 0"):
        numeric_drift(data, data, method="wasserstein", threshold=-0.1)
    with pytest.raises(UsageError, match="psi only"):
        numeric_drift(data, data, method="ks", critical_threshold=0.3)
    with pytest.raises(UsageError, match="below its warning threshold"):
        numeric_drift(data, data, method="psi", threshold=0.3, critical_threshold=0.2)
    with pytest.raises(UsageError, match="vocabulary size"):
        text_drift(_profile("a"), _profile("a"), vocabulary_size=0)


def test_non_numeric_input_is_refused() -> None:
    with pytest.raises(UsageError, match="not numeric"):
        numeric_drift(np.array(["a", "b"]), np.array([1.0]))
