"""Drift statistics for Silta's monitors: has a column's distribution moved since the reference?

The defaults follow Evidently's anchors:

- numeric columns: the two-sample Kolmogorov-Smirnov test (drift when p < 0.05) when the
  reference has at most :data:`SMALL_SAMPLE` values, otherwise the Wasserstein distance in
  reference standard deviations (drift when > 0.1); PSI on request (>= 0.1 is a warning,
  >= 0.2 critical). A numeric column with at most five distinct reference values is compared
  as categories, like Evidently does;
- categorical columns: chi-square on the 2 x k table of counts (drift when p < 0.05) for small
  references, otherwise the Jensen-Shannon distance of the shares (natural log; drift when
  > 0.1);
- free text: drift of the character lengths (as numbers), the out-of-vocabulary rate of the
  current tokens, and the Jensen-Shannon distance of the token shares over the reference's
  most frequent tokens plus one "other" bucket.

Every threshold can be overridden. Non-finite numbers (NaN, +-inf) are left out of numeric
samples: they have no place on the axis a distance is measured along.

Numbers are sorted once per sample; the KS statistic, the Wasserstein distance and the PSI
bins all come from the sorted arrays, which is about four times faster than calling scipy for
each statistic and gives the same values. Counts (categories, tokens) are plain mappings that
add up over record batches, so a caller can stream a big table batch by batch.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats
from scipy.spatial import distance

from agent.jsonsafe import json_safe
from connectors.errors import UsageError

Level = Literal["ok", "warning", "critical"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NUMERIC_METHODS = ("ks", "wasserstein", "psi")
CATEGORICAL_METHODS = ("chi2", "jensenshannon", "psi")
#: up to this many reference values the tests (KS, chi-square) are used, above it distances
SMALL_SAMPLE = 1000
#: a numeric column with at most this many distinct reference values is compared as categories
CATEGORICAL_MAX_DISTINCT = 5
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05, "chi2": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "psi": 0.1,
}
#: PSI at or above this is a significant shift: level "critical"
PSI_CRITICAL = 0.2
PSI_BINS = 10
#: share given to an empty PSI bin, so that it does not make the index infinite (Evidently's)
PSI_EPSILON = 1e-4
TOP_CHANGED = 5
TOP_NEW = 10
#: the token bucket for everything outside the compared vocabulary; never a token itself
OTHER_TOKENS = "<other>"

_P_VALUE_METHODS = frozenset({"ks", "chi2"})
#: ks_2samp(method="auto") is exact while both samples are at most this big (scipy 1.17)
_SCIPY_KS_EXACT_MAX = 10_000
#: the PSI edges: reference deciles
_PSI_QUANTILES = np.arange(1, PSI_BINS) / PSI_BINS
#: Unicode word characters (letters, marks, digits, connectors: UTS #18); RE2's \w is ASCII only
_NON_WORD = r"[^\p{L}\p{M}\p{N}\p{Pc}]+"
#: the largest Jensen-Shannon distance (natural log): two distributions with nothing in common
_JS_MAX = math.sqrt(math.log(2))


@dataclass(frozen=True)
class DriftResult:
    """One drift statistic of one column, compared with its threshold."""

    #: "ks", "wasserstein", "psi", "chi2", "jensenshannon", "oov_rate", "length:<method>",
    #: "tokens"
    method: str
    #: what is compared with the threshold: the p-value for ks and chi2, otherwise the distance,
    #: index or rate
    value: float
    threshold: float
    drifted: bool
    #: "ok" when not drifted, "warning" when drifted, "critical" for PSI at its critical level
    level: Level
    reference_rows: int
    current_rows: int
    #: the test statistic next to a p-value (KS D, chi-square), or the raw Wasserstein distance
    statistic: float | None = None
    #: JSON-safe extras: means, top changed categories, new categories, ...
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-safe data; non-finite numbers become None."""
        safe: dict[str, Any] = json_safe(asdict(self))
        return safe


# --- numeric -------------------------------------------------------------------------------

def numeric_drift(reference: np.ndarray, current: np.ndarray, *, method: str | None = None,
                  threshold: float | None = None,
                  critical_threshold: float | None = None) -> DriftResult:
    """Drift of a numeric column; ``method`` None picks one as the module docstring says.

    ``chi2`` and ``jensenshannon`` compare the values as categories (as strings, the way
    :func:`count_values` writes them). ``threshold`` replaces the chosen method's default;
    ``critical_threshold`` (PSI only, default 0.2) is where a PSI warning becomes critical.
    Raises UsageError for an unknown method, a bad threshold or a sample with no finite values.
    """
    allowed = (*NUMERIC_METHODS, "chi2", "jensenshannon")
    if method is not None and method not in allowed:
        raise UsageError(f"unknown drift method {method!r} for a numeric column; use one of "
                         f"{', '.join(NUMERIC_METHODS)} (or chi2, jensenshannon to compare the "
                         "values as categories), or leave it out to choose automatically")
    ref, ref_dropped = _finite_sorted(reference, "reference")
    cur, cur_dropped = _finite_sorted(current, "current")
    dropped = {"reference_dropped": ref_dropped, "current_dropped": cur_dropped}
    if method in ("chi2", "jensenshannon") or (method is None and _few_distinct(ref)):
        result = categorical_drift(_sorted_value_counts(ref), _sorted_value_counts(cur),
                                   method=method, threshold=threshold,
                                   critical_threshold=critical_threshold)
        return replace(result, detail={**result.detail, "as_categorical": True, **dropped})
    chosen = method or ("ks" if ref.size <= SMALL_SAMPLE else "wasserstein")
    limit = _threshold(chosen, threshold)
    critical = _critical(chosen, critical_threshold, limit)
    detail = {**_moments(ref, cur), **dropped}
    if chosen == "psi":
        value, edges = numeric_psi(ref, cur)
        return _result("psi", value, limit, ref.size, cur.size, critical=critical,
                       detail={**detail, "edges": edges.tolist()})
    ks_d, wasserstein = _ks_and_wasserstein(ref, cur)
    if chosen == "ks":
        statistic, pvalue = _ks_pvalue(ref, cur, ks_d)
        return _result("ks", pvalue, limit, ref.size, cur.size, statistic=statistic,
                       detail=detail)
    value, scale = _normalized_wasserstein(wasserstein, ref, cur)
    return _result("wasserstein", value, limit, ref.size, cur.size, statistic=wasserstein,
                   detail={**detail, "normalized_by": scale, "ks_statistic": ks_d})


def numeric_summary(values: np.ndarray) -> dict[str, float]:
    """Rows, missing (non-finite), mean, std (ddof 0), min, median and max of the finite values.

    Statistics of an all-missing column are NaN.
    """
    arr = _as_float(values, "values")
    finite = arr[np.isfinite(arr)]
    summary = {"rows": float(arr.size), "missing": float(arr.size - finite.size)}
    if finite.size == 0:
        return summary | dict.fromkeys(("mean", "std", "min", "p50", "max"), math.nan)
    return summary | {"mean": float(finite.mean()), "std": float(finite.std()),
                      "min": float(finite.min()), "p50": float(np.median(finite)),
                      "max": float(finite.max())}


def numeric_psi(reference_sorted: FloatArray,
                current_sorted: FloatArray) -> tuple[float, FloatArray]:
    """Population stability index of two *sorted* samples, and the bin edges used.

    The edges ``e_1 < ... < e_k`` are the distinct reference deciles (numpy's default, linear
    quantiles at 0.1, ..., 0.9), so ``k <= 9``. The bins are ``(-inf, e_1)``, ``[e_1, e_2)``,
    ..., ``[e_k, +inf)``: what ``np.histogram`` counts with the edges ``-inf, e_1, ..., e_k,
    +inf``. With ``r_i`` and ``c_i`` the reference and current shares of bin ``i`` (an empty
    bin's share is taken as 1e-4)::

        PSI = sum_i (c_i - r_i) * ln(c_i / r_i)
    """
    edges = np.unique(np.quantile(reference_sorted, _PSI_QUANTILES))
    return _psi(_bin_counts(reference_sorted, edges), _bin_counts(current_sorted, edges)), edges


def _as_float(values: Any, side: str) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise UsageError(f"the {side} sample is not numeric ({e}); compare it as categories "
                         "or text instead") from e


def _finite_sorted(values: Any, side: str) -> tuple[FloatArray, int]:
    """The finite values sorted (a copy), and how many were left out."""
    arr = _as_float(values, side)
    finite = np.isfinite(arr)
    kept = arr if finite.all() else arr[finite]
    if kept.size == 0:
        raise UsageError(f"the {side} sample has no finite values ({arr.size} given); drift "
                         "needs at least one value on each side")
    return np.sort(kept), int(arr.size - kept.size)


def _few_distinct(sorted_values: FloatArray) -> bool:
    distinct = 1 + int(np.count_nonzero(sorted_values[1:] != sorted_values[:-1]))
    return distinct <= CATEGORICAL_MAX_DISTINCT


def _sorted_value_counts(sorted_values: FloatArray) -> dict[str, int]:
    """Counts of a sorted sample keyed by the values as strings (as :func:`count_values`)."""
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    counts = np.diff(np.r_[starts, sorted_values.size])
    # + 0.0 turns -0.0 into 0.0: they are one value and must get one key on both sides
    keys = pa.array(sorted_values[starts] + 0.0).cast(pa.string()).to_pylist()
    return dict(zip(keys, counts.tolist(), strict=True))


def _moments(ref: FloatArray, cur: FloatArray) -> dict[str, float]:
    return {"reference_mean": float(ref.mean()), "current_mean": float(cur.mean()),
            "reference_std": float(ref.std()), "current_std": float(cur.std())}


def _ks_and_wasserstein(ref: FloatArray, cur: FloatArray) -> tuple[float, float]:
    """KS statistic and Wasserstein distance of two sorted samples, as scipy computes them.

    Both come from the gap |F_ref - F_cur| of the empirical CDFs at every merged value: the
    KS statistic is its maximum, the Wasserstein distance its integral over the merged values.
    """
    n_ref, n_cur = ref.size, cur.size
    both = np.concatenate((ref, cur))
    # both halves are sorted, so a stable argsort is a linear merge (timsort finds the runs)
    order = np.argsort(both, kind="stable")
    merged = both[order]
    ref_seen = np.cumsum(order < n_ref)
    cur_seen = np.arange(1, both.size + 1) - ref_seen
    gap = np.abs(ref_seen / n_ref - cur_seen / n_cur)
    deltas = np.diff(merged)
    # in a run of equal values only the last position has counted all of them (scipy's
    # searchsorted side="right"); the others have delta 0, so they add nothing to the
    # integral, but they must not set the maximum either
    run_ends = gap[:-1][deltas != 0]
    ks_d = float(run_ends.max()) if run_ends.size else 0.0
    return ks_d, float(np.dot(gap[:-1], deltas))


def _ks_pvalue(ref: FloatArray, cur: FloatArray, ks_d: float) -> tuple[float, float]:
    """Statistic and p-value as ``scipy.stats.ks_2samp(ref, cur)`` gives them (two-sided, auto).

    Small samples get scipy's exact p-value from scipy itself (cheap at that size; it also
    rounds the statistic to the lattice it counts paths on); large ones its asymptotic
    formula, fed the statistic computed here.
    """
    if max(ref.size, cur.size) <= _SCIPY_KS_EXACT_MAX:
        result = stats.ks_2samp(ref, cur)
        return float(result.statistic), float(result.pvalue)
    # the same float operations as scipy's "asymp" branch, so the p-value is identical
    big, small = sorted((float(ref.size), float(cur.size)), reverse=True)
    effective = big * small / (big + small)
    return ks_d, float(np.clip(stats.kstwo.sf(ks_d, np.round(effective)), 0.0, 1.0))


def _normalized_wasserstein(wasserstein: float, ref: FloatArray,
                            cur: FloatArray) -> tuple[float, str]:
    """The distance in reference standard deviations (ddof 0, as Evidently), and the scale used.

    A constant reference has no spread to measure in, so the current one is used instead (still
    unit-free); when both are constant the distance is 0 if they are equal and infinite
    otherwise (a constant that changed has drifted whatever the threshold).
    """
    for name, sample in (("reference_std", ref), ("current_std", cur)):
        scale = float(sample.std())
        if scale > 0:
            return wasserstein / scale, name
    return (0.0 if wasserstein == 0 else math.inf), "none"


def _bin_counts(sorted_values: FloatArray, edges: FloatArray) -> IntArray:
    below = np.searchsorted(sorted_values, edges, side="left")  # values < each edge
    return np.diff(np.concatenate(([0], below, [sorted_values.size]))).astype(np.int64)


def _psi(ref_counts: npt.NDArray[Any], cur_counts: npt.NDArray[Any]) -> float:
    ref_share = _psi_shares(ref_counts)
    cur_share = _psi_shares(cur_counts)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _psi_shares(counts: npt.NDArray[Any]) -> FloatArray:
    shares = counts / counts.sum()
    return np.where(shares == 0, PSI_EPSILON, shares)


# --- categorical ---------------------------------------------------------------------------

def categorical_drift(reference: Mapping[str, int], current: Mapping[str, int], *,
                      method: str | None = None, threshold: float | None = None,
                      critical_threshold: float | None = None) -> DriftResult:
    """Drift of a categorical column given the count of each value on both sides.

    ``method`` None: chi-square when the reference has at most :data:`SMALL_SAMPLE` values,
    Jensen-Shannon above. Chi-square is ``scipy.stats.chi2_contingency`` on the 2 x k table
    over the union of the categories (scipy's defaults, so Yates' correction when k = 2);
    Jensen-Shannon is ``scipy.spatial.distance.jensenshannon`` of the two share vectors
    (natural log); PSI uses one bin per category. Raises UsageError for an unknown method,
    a bad threshold, negative counts or an empty side.
    """
    if method is not None and method not in CATEGORICAL_METHODS:
        raise UsageError(f"unknown drift method {method!r} for a categorical column; use one "
                         f"of {', '.join(CATEGORICAL_METHODS)}, or leave it out to choose "
                         "automatically")
    ref_total = _total(reference, "reference")
    cur_total = _total(current, "current")
    chosen = method or ("chi2" if ref_total <= SMALL_SAMPLE else "jensenshannon")
    limit = _threshold(chosen, threshold)
    critical = _critical(chosen, critical_threshold, limit)
    keys = sorted({k for k, n in reference.items() if n} | {k for k, n in current.items() if n})
    ref = np.array([reference.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current.get(k, 0) for k in keys], dtype=np.float64)
    detail = _category_detail(keys, ref, cur)
    if chosen == "chi2":
        test = stats.chi2_contingency(np.vstack((ref, cur)))
        return _result("chi2", float(test.pvalue), limit, ref_total, cur_total,
                       statistic=float(test.statistic), detail={**detail, "dof": int(test.dof)})
    if chosen == "psi":
        return _result("psi", _psi(ref, cur), limit, ref_total, cur_total, critical=critical,
                       detail=detail)
    value = float(distance.jensenshannon(ref / ref_total, cur / cur_total))
    return _result("jensenshannon", value, limit, ref_total, cur_total, detail=detail)


def count_values(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How often each value occurs, keyed by the value cast to string; nulls are left out.

    Counts of several record batches add up with :func:`merge_counts`.
    """
    counts = pc.value_counts(values)
    try:
        keys = counts.field("values").cast(pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise UsageError(f"values of type {values.type} cannot be counted as categories: "
                         f"{e}") from e
    out: dict[str, int] = {}
    for key, n in zip(keys, counts.field("counts").to_pylist(), strict=True):
        if key is not None:
            # two values can write the same string (a dictionary with repeats): add them up
            out[key] = out.get(key, 0) + n
    return out


def merge_counts(*counts: Mapping[str, int]) -> dict[str, int]:
    """The sum of several value counts (e.g. one per record batch)."""
    total: Counter[str] = Counter()
    for part in counts:
        total.update(part)
    return dict(total)


def _total(counts: Mapping[str, int], side: str) -> int:
    if any(n < 0 for n in counts.values()):
        raise UsageError(f"the {side} counts hold negative numbers; give how often each "
                         "value occurs")
    total = int(sum(counts.values()))
    if total == 0:
        raise UsageError(f"the {side} sample is empty; drift needs at least one value on "
                         "each side")
    return total


def _category_detail(keys: list[str], ref: FloatArray, cur: FloatArray) -> dict[str, Any]:
    """The categories whose shares moved most, and the ones the reference never had."""
    ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
    moved = np.argsort(-np.abs(cur_share - ref_share), kind="stable")[:TOP_CHANGED]
    new = [i for i in np.argsort(-cur, kind="stable").tolist() if ref[i] == 0]
    return {
        "categories": len(keys),
        "top_changed": [{"value": keys[i], "reference_share": float(ref_share[i]),
                         "current_share": float(cur_share[i])} for i in moved.tolist()],
        "new_categories": [keys[i] for i in new[:TOP_NEW]],
        "new_categories_total": len(new),
    }


# --- text ----------------------------------------------------------------------------------

class TextProfile:
    """Character lengths and token counts of a text column, added one record batch at a time.

    Tokens are lowercased (``utf8_lower``) runs of Unicode word characters: letters, marks,
    digits and connectors such as ``_``. On composed (NFC) text that is what Python's ``\\w+``
    finds; combining marks of decomposed text stay in their word.
    """

    def __init__(self) -> None:
        #: non-null texts added
        self.rows = 0
        self.tokens: Counter[str] = Counter()
        self.total_tokens = 0
        self._lengths: list[IntArray] = []

    @property
    def lengths(self) -> IntArray:
        """Length in characters of every non-null text added."""
        if len(self._lengths) != 1:  # join the batches once, when they are asked for
            joined = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
            self._lengths = [joined]
        return self._lengths[0]

    def add(self, values: pa.Array | pa.ChunkedArray) -> None:
        """Count one batch of texts in; nulls are left out."""
        texts = _texts(values)
        self.rows += len(texts)
        self._lengths.append(np.asarray(pc.utf8_length(texts), dtype=np.int64))
        counts = count_tokens(texts)
        self.tokens.update(counts)
        self.total_tokens += sum(counts.values())

    def merge(self, other: TextProfile) -> TextProfile:
        """A new profile of both profiles' texts (e.g. built by separate workers)."""
        merged = TextProfile()
        merged.rows = self.rows + other.rows
        merged.tokens = self.tokens + other.tokens
        merged.total_tokens = self.total_tokens + other.total_tokens
        merged._lengths = [*self._lengths, *other._lengths]
        return merged


def count_tokens(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How often each token (see :class:`TextProfile`) occurs in the texts; nulls are skipped."""
    texts = _texts(values)
    # whitespace never belongs to a token, so split on it first (fast) and run the costly
    # regex over the distinct pieces only; a piece's count carries over to its tokens
    pieces = pc.value_counts(pc.list_flatten(pc.utf8_split_whitespace(texts)))
    words = pc.split_pattern_regex(pc.utf8_lower(pieces.field("values")), pattern=_NON_WORD)
    table = pa.table({
        "token": pc.list_flatten(words),
        "n": pc.take(pieces.field("counts"), pc.list_parent_indices(words)),
    })
    table = table.filter(pc.not_equal(table["token"], ""))
    summed = table.group_by("token").aggregate([("n", "sum")])
    return dict(zip(summed["token"].to_pylist(), summed["n_sum"].to_pylist(), strict=True))


def text_drift(reference: TextProfile, current: TextProfile, *,
               length_method: str | None = None, length_threshold: float | None = None,
               oov_threshold: float = 0.1, token_threshold: float = 0.1,
               vocabulary_size: int = 1000) -> list[DriftResult]:
    """Drift of a text column: ``[length, oov_rate, tokens]``.

    - length: :func:`numeric_drift` of the character lengths, method ``length:<method>``;
    - oov_rate: the share of current tokens (occurrences, not distinct tokens) the reference
      never had; drifted above ``oov_threshold``;
    - tokens: the Jensen-Shannon distance (natural log) of the token shares over the
      reference's ``vocabulary_size`` most frequent tokens plus one bucket for all others;
      drifted above ``token_threshold``.

    Raises UsageError when a side has no texts or an argument is out of range.
    """
    for side, profile in (("reference", reference), ("current", current)):
        if profile.rows == 0:
            raise UsageError(f"the {side} text profile is empty; add texts before comparing")
    if isinstance(vocabulary_size, bool) or vocabulary_size < 1:
        raise UsageError(f"vocabulary size {vocabulary_size!r} is not allowed; give at least 1")
    length = numeric_drift(reference.lengths, current.lengths, method=length_method,
                           threshold=length_threshold)
    return [replace(length, method=f"length:{length.method}"),
            _oov_rate(reference, current, _limit("oov_rate", oov_threshold)),
            _token_drift(reference, current, _limit("tokens", token_threshold),
                         vocabulary_size)]


def _texts(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if not isinstance(values, pa.Array | pa.ChunkedArray):
        raise UsageError(f"texts must be a pyarrow array, not {type(values).__name__}")
    try:
        return pc.drop_null(values).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise UsageError(f"values of type {values.type} cannot be read as text: {e}") from e


def _oov_rate(reference: TextProfile, current: TextProfile, limit: float) -> DriftResult:
    new = Counter({t: n for t, n in current.tokens.items() if t not in reference.tokens})
    unseen = sum(new.values())
    rate = unseen / current.total_tokens if current.total_tokens else 0.0
    top = [t for t, _ in heapq.nsmallest(TOP_NEW, new.items(), key=_by_count)]
    return _result("oov_rate", rate, limit, reference.rows, current.rows,
                   detail={"oov_tokens": unseen, "current_tokens": current.total_tokens,
                           "top_oov_tokens": top})


def _token_drift(reference: TextProfile, current: TextProfile, limit: float,
                 vocabulary_size: int) -> DriftResult:
    top = heapq.nsmallest(vocabulary_size, reference.tokens.items(), key=_by_count)
    keys = [t for t, _ in top] + [OTHER_TOKENS]
    ref = _with_other([n for _, n in top], reference.total_tokens)
    cur = _with_other([current.tokens.get(t, 0) for t, _ in top], current.total_tokens)
    detail: dict[str, Any] = {"vocabulary": len(top), "reference_tokens": reference.total_tokens,
                              "current_tokens": current.total_tokens}
    if reference.total_tokens and current.total_tokens:
        value = float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))
        detail["top_changed"] = _category_detail(keys, ref, cur)["top_changed"]
    else:
        # no tokens on a side: shares do not exist; nothing in common unless both are empty
        value = 0.0 if reference.total_tokens == current.total_tokens else _JS_MAX
    return _result("tokens", value, limit, reference.rows, current.rows, detail=detail)


def _with_other(counts: list[int], total: int) -> FloatArray:
    return np.array([*counts, total - sum(counts)], dtype=np.float64)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    """Most frequent first, ties in string order, so the chosen vocabulary is reproducible."""
    return -item[1], item[0]


# --- shared --------------------------------------------------------------------------------

def _threshold(method: str, given: float | None) -> float:
    return DEFAULT_THRESHOLDS[method] if given is None else _limit(method, given)


def _limit(method: str, given: float) -> float:
    ok = not isinstance(given, bool) and isinstance(given, int | float) and math.isfinite(given)
    if not ok or given < 0 or (method in _P_VALUE_METHODS and given > 1):
        bound = "a p-value between 0 and 1" if method in _P_VALUE_METHODS else "a number >= 0"
        raise UsageError(f"threshold {given!r} for {method} is not allowed; give {bound}")
    return float(given)


def _critical(method: str, given: float | None, limit: float) -> float | None:
    """The PSI level at which a warning turns critical; None for the other methods."""
    if method != "psi":
        if given is not None:
            raise UsageError(f"a critical threshold applies to psi only, not to {method}")
        return None
    critical = max(PSI_CRITICAL, limit) if given is None else _limit("psi", given)
    if critical < limit:
        raise UsageError(f"critical threshold {critical} for psi is below its warning "
                         f"threshold {limit}; give one at least as high")
    return critical


def _result(method: str, value: float, limit: float, reference_rows: int, current_rows: int,
            *, statistic: float | None = None, critical: float | None = None,
            detail: dict[str, Any]) -> DriftResult:
    """The result with its drift flag and level (a NaN value never counts as drift)."""
    if method in _P_VALUE_METHODS:
        drifted = value < limit
    elif method == "psi":
        drifted = value >= limit  # PSI's bands are "0.1 and above", "0.2 and above"
    else:
        drifted = value > limit
    level: Level = "warning" if drifted else "ok"
    if drifted and critical is not None and value >= critical:
        level = "critical"
    return DriftResult(method=method, value=float(value), threshold=limit, drifted=bool(drifted),
                       level=level, reference_rows=int(reference_rows),
                       current_rows=int(current_rows), statistic=statistic, detail=detail)
