"""The checks of a monitoring run, from column profiles to check results and figures.

Each function adds to a :class:`Findings`: check results (which raise, count or
resolve alerts) and figures (every number measured, for the ``_silta/metrics`` time
series). A check that cannot be judged (too few rows, no reference) is
``insufficient``: recorded, but it neither fires nor resolves an alert.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from agent.alerts import CheckResult, Status
from agent.ml.drift import DriftResult, categorical_drift, numeric_drift, text_drift
from agent.ml.monitor_config import ColumnRule, MonitorConfig
from agent.ml.profile import ColumnProfile


@dataclass
class Findings:
    """Check results and figures of one run, in the order they were made."""

    conf: MonitorConfig
    results: list[CheckResult] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)

    def figure(self, check: str, target: str, metric: str, value: float | None, *,
               threshold: float | None = None, status: str = "info", table: str | None = None,
               rows: int | None = None, detail: Mapping[str, Any] | None = None,
               severity: str | None = None, summary: str | None = None) -> None:
        clean = None if value is None or not math.isfinite(float(value)) else float(value)
        self.figures.append({"check": check, "target": target, "metric": metric,
                             "value": clean, "threshold": threshold, "status": status,
                             "table": table, "rows": rows, "detail": dict(detail or {}),
                             "severity": severity, "summary": summary})

    def result(self, check: str, target: str, status: Status, summary: str, *,
               metric: str, value: float | None, threshold: float | None,
               table: str | None = None, rows: int | None = None,
               detail: Mapping[str, Any] | None = None, severity: str | None = None) -> None:
        sev = severity or self.conf.severity_of(check)
        self.results.append(CheckResult(check, target, status, sev, summary, value, threshold,
                                        dict(detail or {})))
        # severity and summary too: alerts can be rebuilt from the figures after a crash
        self.figure(check, target, metric, value, threshold=threshold, status=status,
                    table=table, rows=rows, detail=detail, severity=sev, summary=summary)

    @property
    def breaches(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "breach"]


# -- schema -----------------------------------------------------------------------------
def type_name(t: pa.DataType) -> str:
    """Arrow type as text, with the large/view variants named like the plain ones."""
    text = str(t)
    for wide, plain in (("large_string", "string"), ("string_view", "string"),
                        ("large_binary", "binary"), ("large_list", "list")):
        text = text.replace(wide, plain)
    return text.replace("utf8", "string")


def check_schema(f: Findings, table: str, schema: pa.Schema, expected: Mapping[str, str]
                 ) -> list[str]:
    """Each expected column present with its type; returns the columns that are not."""
    have = {n: type_name(schema.field(n).type) for n in schema.names}
    broken = []
    for column, want in expected.items():
        got = have.get(column)
        if got is None:
            f.result("schema", column, "breach",
                     f"{table}: column {column!r} is missing (expected {want}); trainings "
                     "of this model are halted until it is back",
                     metric="present", value=0.0, threshold=None, table=table,
                     detail={"expected": want, "found": None})
            broken.append(column)
        elif _normal(want) != got:
            f.result("schema", column, "breach",
                     f"{table}: column {column!r} is {got}, expected {want}; trainings of "
                     "this model are halted until the type is restored",
                     metric="type_matches", value=0.0, threshold=None, table=table,
                     detail={"expected": want, "found": got})
            broken.append(column)
        else:
            f.result("schema", column, "ok", f"{table}: {column} is {got}",
                     metric="type_matches", value=1.0, threshold=None, table=table,
                     detail={"expected": want, "found": got})
    return broken


def _normal(name: str) -> str:
    """A configured type name (``int64``, ``str``, ``double``) as :func:`type_name` writes it."""
    try:
        return type_name(pa.type_for_alias(name))
    except ValueError:
        return name  # a composite type, written as Arrow prints it


# -- quality ----------------------------------------------------------------------------
def check_quality(f: Findings, table: str, column: str, profile: ColumnProfile,
                  rule: ColumnRule | None) -> None:
    """Null rate, range and allowed values of one column in the window.

    A check with nothing to look at (no rows, or only nulls) is insufficient: an empty
    window neither fires nor resolves a quality alert.
    """
    rows = profile.rows
    max_null = rule.max_null_rate if rule and rule.max_null_rate is not None \
        else f.conf.max_null_rate
    if max_null is not None:
        if not rows:
            _unseen(f, table, column, "nulls", "null_rate", max_null, "no rows")
        else:
            rate = profile.null_rate
            bad = rate > max_null
            f.result("quality", f"{column}:nulls", "breach" if bad else "ok",
                     f"{table}.{column}: {rate:.1%} null ({profile.nulls} of {rows}), "
                     f"{'above' if bad else 'within'} the {max_null:.1%} allowed",
                     metric="null_rate", value=rate, threshold=max_null, table=table,
                     rows=rows, detail={"nulls": profile.nulls})
    if rule is None:
        return
    if (rule.min is not None or rule.max is not None) and profile.kind == "numeric":
        _range(f, table, column, profile, rule)
    if rule.allowed is not None:
        _allowed(f, table, column, profile, rule.allowed)


def _unseen(f: Findings, table: str, column: str, part: str, metric: str, threshold: float,
            why: str) -> None:
    f.result("quality", f"{column}:{part}", "insufficient",
             f"{table}.{column}: {why} in the window; nothing to judge", metric=metric,
             value=None, threshold=threshold, table=table, rows=0)


def _range(f: Findings, table: str, column: str, profile: ColumnProfile,
           rule: ColumnRule) -> None:
    values = profile.values
    if not len(values):
        _unseen(f, table, column, "range", "out_of_range_share", 0.0,
                f"no values in {profile.rows} row(s)")
        return
    low = int((values < rule.min).sum()) if rule.min is not None else 0
    high = int((values > rule.max).sum()) if rule.max is not None else 0
    out = low + high
    span = f"[{_num(rule.min)}, {_num(rule.max)}]"
    f.result("quality", f"{column}:range", "breach" if out else "ok",
             f"{table}.{column}: {out} value(s) outside {span} ({low} below, "
             f"{high} above)" if out else f"{table}.{column}: every value within {span}",
             metric="out_of_range_share", value=out / len(values), threshold=0.0,
             table=table, rows=profile.rows,
             detail={"below": low, "above": high, "values": len(values),
                     "min_seen": _stat(values, np.min), "max_seen": _stat(values, np.max)})


def _allowed(f: Findings, table: str, column: str, profile: ColumnProfile,
             allowed_values: list[str]) -> None:
    counts = _value_counts(profile)
    allowed = set(allowed_values)
    unknown = {v: n for v, n in counts.items() if v not in allowed}
    total = sum(counts.values())
    if not total:
        _unseen(f, table, column, "allowed", "unknown_value_share", 0.0,
                f"no values in {profile.rows} row(s)")
        return
    bad = sum(unknown.values())
    examples = sorted(unknown, key=lambda v: -unknown[v])[:5]
    f.result("quality", f"{column}:allowed", "breach" if unknown else "ok",
             f"{table}.{column}: {bad} value(s) outside the allowed set, e.g. "
             f"{', '.join(map(repr, examples))}" if unknown
             else f"{table}.{column}: every value allowed",
             metric="unknown_value_share", value=bad / total, threshold=0.0, table=table,
             rows=profile.rows, detail={"unknown": dict(sorted(unknown.items())[:20]),
                                        "unknown_rows": bad, "values": total})


def _value_counts(profile: ColumnProfile) -> dict[str, int]:
    if profile.kind == "numeric":
        uniq, n = np.unique(profile.values, return_counts=True)
        return {_num(float(u)): int(c) for u, c in zip(uniq, n, strict=True)}
    return profile.counts  # categories; texts when the profile was asked to count them


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _stat(values: np.ndarray, fn: Any) -> float | None:
    return float(fn(values)) if len(values) else None


def check_volume(f: Findings, table: str, rows: int) -> None:
    lo, hi = f.conf.expect_min_rows, f.conf.expect_max_rows
    f.figure("volume", "rows", "rows", float(rows), table=table, rows=rows)
    if lo is None and hi is None:
        return
    bad = (lo is not None and rows < lo) or (hi is not None and rows > hi)
    expect = f"{lo if lo is not None else 0}..{hi if hi is not None else '∞'}"
    f.result("volume", "rows", "breach" if bad else "ok",
             f"{table}: {rows} new row(s), expected {expect}", metric="rows_expected",
             value=float(rows), threshold=float(lo if bad and lo is not None and rows < lo
                                                else hi if hi is not None else lo or 0),
             table=table, rows=rows, detail={"expect_min_rows": lo, "expect_max_rows": hi})


def check_freshness(f: Findings, table: str, last_commit: dt.datetime | None) -> None:
    limit = f.conf.max_age_seconds
    if limit is None:
        return
    if last_commit is None:
        f.result("freshness", "table", "insufficient", f"{table}: no commit time recorded",
                 metric="age_seconds", value=None, threshold=limit, table=table)
        return
    age = (dt.datetime.now(dt.UTC) - last_commit).total_seconds()
    bad = age > limit
    f.result("freshness", "table", "breach" if bad else "ok",
             f"{table}: last commit {_ago(age)} ago (at {last_commit.isoformat()}), "
             f"{'older than' if bad else 'within'} {f.conf.max_age}", metric="age_seconds",
             value=age, threshold=limit, table=table)


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


# -- drift ------------------------------------------------------------------------------
def check_drift(f: Findings, table: str, column: str, current: ColumnProfile,
                reference: ColumnProfile, rule: ColumnRule | None, reference_name: str
                ) -> None:
    """Feature drift of one column against the reference (one or three results)."""
    method = None if rule is None or rule.drift == "auto" else rule.drift
    threshold = rule.threshold if rule else None
    rows = current.rows - current.nulls
    if rows < f.conf.min_rows or reference.rows - reference.nulls < f.conf.min_rows:
        f.result("drift", column, "insufficient",
                 f"{table}.{column}: {rows} value(s) in the window and "
                 f"{reference.rows - reference.nulls} in the reference; at least "
                 f"{f.conf.min_rows} each are needed to judge drift (min_rows)",
                 metric="values", value=float(rows), threshold=float(f.conf.min_rows),
                 table=table, rows=rows)
        return
    if current.kind == "text":
        found = text_drift(reference.text, current.text, length_method=method,
                           length_threshold=threshold,
                           oov_threshold=rule.oov_threshold if rule and rule.oov_threshold
                           else 0.1,
                           token_threshold=rule.token_threshold if rule and rule.token_threshold
                           else 0.1)
        for d in found:
            _drift_result(f, table, f"{column}:{_part(d.method)}", column, d, reference_name)
        return
    if current.kind == "numeric":
        d = numeric_drift(reference.values, current.values, method=method, threshold=threshold)
    else:
        d = categorical_drift(reference.counts, current.counts, method=method,
                              threshold=threshold)
    _drift_result(f, table, column, column, d, reference_name)


def _part(method: str) -> str:
    return method.split(":")[0]  # "length:wasserstein" -> "length"


def _drift_result(f: Findings, table: str, target: str, column: str, d: DriftResult,
                  reference_name: str, check: str = "drift") -> None:
    below = d.method in ("ks", "chi2") or d.method.endswith((":ks", ":chi2"))
    compare = "<" if below else ">"
    state = "drifted" if d.drifted else "no drift"
    severity = "critical" if d.level == "critical" else None
    f.result(check, target, "breach" if d.drifted else "ok",
             f"{table}.{column}: {state} against {reference_name} ({d.method} "
             f"{d.value:.4g}, drift when {compare} {d.threshold:g}; {d.current_rows} vs "
             f"{d.reference_rows} rows)", metric=d.method, value=d.value,
             threshold=d.threshold, table=table, rows=d.current_rows,
             detail={**d.as_dict(), "reference": reference_name}, severity=severity)


def check_prediction_drift(f: Findings, table: str, predicted: Mapping[str, int],
                           reference: Mapping[str, int], reference_name: str) -> None:
    rows = sum(predicted.values())
    if rows < f.conf.min_rows or not reference:
        f.result("prediction_drift", "classes", "insufficient",
                 f"{table}: {rows} prediction(s) in the window; at least {f.conf.min_rows} "
                 "and the champion's class counts are needed", metric="rows",
                 value=float(rows), threshold=float(f.conf.min_rows), table=table, rows=rows)
        return
    d = categorical_drift(reference, predicted, threshold=f.conf.prediction_threshold)
    _drift_result(f, table, "classes", "predicted", d, reference_name,
                  check="prediction_drift")


def check_confidence(f: Findings, table: str, confidence: np.ndarray, threshold: float,
                     reference_share: float | None) -> None:
    rows = len(confidence)
    if rows < f.conf.min_rows or reference_share is None:
        f.result("confidence", "low_confidence_share", "insufficient",
                 f"{table}: {rows} prediction(s) in the window"
                 + ("" if reference_share is not None else
                    "; the champion recorded no confidence on its held-out rows"),
                 metric="rows", value=float(rows), threshold=float(f.conf.min_rows),
                 table=table, rows=rows)
        return
    # a NaN confidence counts as low, as in the champion's own share (agent/ml/train.py)
    share = float((~(confidence >= threshold)).mean())
    limit = reference_share + f.conf.max_low_confidence_increase
    bad = share > limit
    f.result("confidence", "low_confidence_share", "breach" if bad else "ok",
             f"{table}: {share:.1%} of predictions below confidence {threshold:g} "
             f"(champion on held-out rows: {reference_share:.1%}; alert above {limit:.1%})",
             metric="low_confidence_share", value=share, threshold=limit, table=table,
             rows=rows, detail={"min_confidence": threshold,
                                "reference_share": reference_share,
                                "mean_confidence": _stat(confidence, np.nanmean)})
