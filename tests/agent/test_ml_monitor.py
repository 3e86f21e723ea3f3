"""Monitoring: drift, schema skew, quality, windows, accuracy, and the figures they record.

Every monitor runs through the agent's job runner, so its check results become alerts;
the figures are read back from ``_silta/metrics`` with DuckDB, and the statistics are
recomputed here with scipy and scikit-learn from the rows themselves.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance
from sklearn.metrics import accuracy_score, f1_score

from agent.alerts import AlertBook
from agent.config import load_config
from agent.ml.monitor import METRICS_TABLE, app_id, commit_monitor, measure_monitor
from agent.outcome import JobOutcome
from connectors.errors import ConfigError, StoreError
from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows

WATCH = """
[[monitors]]
name = "watch"
model = "coder"
input = "raw/answers"
predictions = "predictions/codes"
drift_columns = ["job_title", "language", "sector", "age"]
"""
DRIFT_TARGETS = ["job_title:length", "job_title:oov_rate", "job_title:tokens", "language",
                 "sector", "age"]


# -- helpers ----------------------------------------------------------------------------
def _monitor(env: MlEnv, name: str = "watch") -> JobOutcome:
    out = env.runner().run("monitor", name, trigger="test")
    assert out.status == "ok", out
    return out


def _seen(out: JobOutcome) -> dict[str, list[int]]:
    """The alert ids a monitoring run fired, saw again and resolved."""
    seen: dict[str, list[int]] = out.detail["alerts"]  # type: ignore[assignment]
    return seen


def _breaches(out: JobOutcome) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = out.detail["breaches"]  # type: ignore[assignment]
    return found


def _table(env: MlEnv, name: str) -> Path:
    return env.root / "lake" / name


def _figures(duck: Any, env: MlEnv, run_id: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """This run's rows of ``_silta/metrics`` as DuckDB reads them, by (check, target, metric)."""
    rows = duck_rows(duck, _table(env, METRICS_TABLE),
                     'SELECT "check", target, metric, value, threshold, status, rows, detail, '
                     f"model, model_version FROM t WHERE run_id = '{run_id}'")
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for check, target, metric, value, threshold, status, n, detail, model, version in rows:
        key = (check, target, metric)
        assert key not in out, key
        out[key] = {"value": value, "threshold": threshold, "status": status, "rows": n,
                    "detail": json.loads(detail) if detail else {}, "model": model,
                    "model_version": version}
    return out


def _by_target(figures: dict[tuple[str, str, str], dict[str, Any]], check: str
               ) -> dict[str, dict[str, Any]]:
    """The figures of one check by target, each with its metric (one figure a target)."""
    out: dict[str, dict[str, Any]] = {}
    for (c, target, metric), fig in figures.items():
        if c == check:
            assert target not in out, (check, target)
            out[target] = {**fig, "metric": metric}
    return out


def _alerts(env: MlEnv, monitor: str = "watch") -> dict[tuple[str, str], dict[str, Any]]:
    """The monitor's alerts by (check, target); the newest one when a target had several."""
    found = AlertBook(env.state()).find(monitor=monitor)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for a in found:  # newest first
        out.setdefault((a["check"], a["target"]), a)
    return out


def _tokens(texts: list[str]) -> Counter[str]:
    """Lower-cased runs of word characters (the demo's titles are composed Unicode)."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(re.findall(r"\w+", t.lower()))
    return counts


def _text_stats(ref: list[str], cur: list[str]) -> dict[str, float]:
    """Length KS p-value, OOV rate and token Jensen-Shannon distance, recomputed."""
    r, c = _tokens(ref), _tokens(cur)
    oov = sum(n for t, n in c.items() if t not in r) / sum(c.values())
    vocab = [t for t, _ in sorted(r.items(), key=lambda kv: (-kv[1], kv[0]))[:1000]]
    ref_v = np.array([r[t] for t in vocab] + [sum(r.values()) - sum(r[t] for t in vocab)],
                     dtype=float)
    cur_v = np.array([c[t] for t in vocab] + [sum(c.values()) - sum(c[t] for t in vocab)],
                     dtype=float)
    return {"length": float(ks_2samp([len(t) for t in ref], [len(t) for t in cur]).pvalue),
            "oov_rate": oov,
            "tokens": float(jensenshannon(ref_v / ref_v.sum(), cur_v / cur_v.sum()))}


def _chi2(ref: list[str], cur: list[str]) -> float:
    r, c = Counter(ref), Counter(cur)
    keys = sorted(set(r) | set(c))
    return float(chi2_contingency(np.array([[r[k] for k in keys], [c[k] for k in keys]])
                                  ).pvalue)


def _js(ref: list[str], cur: list[str]) -> float:
    r, c = Counter(ref), Counter(cur)
    keys = sorted(set(r) | set(c))
    rv = np.array([r[k] for k in keys], dtype=float)
    cv = np.array([c[k] for k in keys], dtype=float)
    return float(jensenshannon(rv / rv.sum(), cv / cv.sum()))


def _close(x: float) -> Any:
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def _reference_rows(env: MlEnv) -> pa.Table:
    """The champion's training table at the version it records, read here directly."""
    champion = env.registry.resolve("coder@champion")
    data = champion.training_data
    return DeltaTable(str(_table(env, data["table"])), version=int(data["version"])
                      ).to_pyarrow_table()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[MlEnv]:
    e = MlEnv(tmp_path, tail=WATCH)
    e.sync()
    assert e.train().model_version == 1
    yield e
    e.close()


# -- 1. the same distribution -------------------------------------------------------------
def test_same_distribution_no_drift_and_the_figures_are_scipys(tmp_path: Path,
                                                              duck: Any) -> None:
    env = MlEnv(tmp_path, tail=WATCH + """
[[monitors]]
name = "watch_distances"
model = "coder"
input = "raw/answers"
drift_columns = ["language", "sector", "age"]
[monitors.columns.language]
drift = "jensenshannon"
[monitors.columns.sector]
drift = "jensenshannon"
[monitors.columns.age]
drift = "wasserstein"
""")
    try:
        env.sync()
        assert env.train().model_version == 1
        env.add_days(2, coded=False)  # two more days of the same survey
        env.sync("answers")
        assert env.predict().rows == 750
        out = _monitor(env)
        assert _breaches(out) == [], _breaches(out)
        assert _seen(out) == {"fired": [], "repeated": [], "resolved": []}
        figures = _figures(duck, env, out.run_id)
        drift = _by_target(figures, "drift")
        # reference: 450 rows (<= 1000), so tests: KS for numbers and lengths, chi-square
        assert {t: (f["metric"], f["status"], f["rows"]) for t, f in drift.items()} == {
            "job_title:length": ("length:ks", "ok", 750),
            "job_title:oov_rate": ("oov_rate", "ok", 750),
            "job_title:tokens": ("tokens", "ok", 750),
            "language": ("chi2", "ok", 750), "sector": ("chi2", "ok", 750),
            "age": ("ks", "ok", 750)}
        assert {f["detail"]["reference"] for f in drift.values()} == {"raw/answers@0"}
        assert {(f["model"], f["model_version"]) for f in figures.values()} == {("coder", 1)}

        ref = _reference_rows(env)
        assert ref.num_rows == 450
        answers = _table(env, "raw/answers")
        cur = duck_rows(duck, answers, "SELECT job_title, language, sector, age FROM t")
        assert len(cur) == 750  # the first run's window: the whole table
        titles = [r[0] for r in cur]
        text = _text_stats(ref.column("job_title").to_pylist(), titles)
        for part in ("length", "oov_rate", "tokens"):
            assert drift[f"job_title:{part}"]["value"] == _close(text[part]), part
        assert text["oov_rate"] < 0.1 and text["tokens"] < 0.1
        for i, column in [(1, "language"), (2, "sector")]:
            assert drift[column]["value"] == _close(
                _chi2(ref.column(column).to_pylist(), [r[i] for r in cur])), column
            assert drift[column]["threshold"] == 0.05
        ref_age = np.array(ref.column("age").to_pylist(), dtype=float)
        cur_age = np.array([r[3] for r in cur], dtype=float)
        assert drift["age"]["value"] == _close(float(ks_2samp(ref_age, cur_age).pvalue))
        assert drift["age"]["value"] > 0.05

        # the distances, asked for by column: Jensen-Shannon of shares, Wasserstein / std
        other = _monitor(env, "watch_distances")
        far = _by_target(_figures(duck, env, other.run_id), "drift")
        assert {t: (f["metric"], f["status"]) for t, f in far.items()} == {
            "language": ("jensenshannon", "ok"), "sector": ("jensenshannon", "ok"),
            "age": ("wasserstein", "ok")}
        for i, column in [(1, "language"), (2, "sector")]:
            assert far[column]["value"] == _close(
                _js(ref.column(column).to_pylist(), [r[i] for r in cur])), column
        assert far["age"]["value"] == _close(
            float(wasserstein_distance(ref_age, cur_age) / np.std(ref_age)))
        assert far["age"]["threshold"] == 0.1
    finally:
        env.close()


# -- 2. a drifted month -------------------------------------------------------------------
def test_a_drifted_month_fires_alerts_and_an_empty_window_leaves_them(env: MlEnv,
                                                                      duck: Any) -> None:
    env.predict()
    first = _monitor(env)
    assert _breaches(first) == []
    env.add_drifted_month(2)  # two days of 150 answers, and their coded sample
    env.sync()
    assert env.predict().rows == 300
    out = _monitor(env)
    figures = _figures(duck, env, out.run_id)
    drift = _by_target(figures, "drift")
    # the window is the new month only
    assert {t: f["rows"] for t, f in drift.items()} == dict.fromkeys(DRIFT_TARGETS, 300)
    assert figures[("window", "raw/answers", "to_version")]["detail"] == {
        "after": 0, "to": 1, "reference": "raw/answers@0"}
    assert figures[("window", "raw/answers", "to_version")]["rows"] == 300
    assert figures[("window", "predictions/codes", "to_version")]["rows"] == 300
    assert figures[("volume", "rows", "rows")]["value"] == 300.0
    assert figures[("volume", "predictions", "rows")]["value"] == 300.0
    assert out.rows == 600
    ref = _reference_rows(env)
    month = duck_rows(duck, _table(env, "raw/answers"),
                      "SELECT job_title, language, sector, age FROM t "
                      "WHERE response_id >= 'R26-500001'")
    assert len(month) == 300
    text = _text_stats(ref.column("job_title").to_pylist(), [r[0] for r in month])
    expected = {f"job_title:{part}": v for part, v in text.items()}
    expected |= {c: _chi2(ref.column(c).to_pylist(), [r[i] for r in month])
                 for i, c in [(1, "language"), (2, "sector")]}
    expected["age"] = float(ks_2samp(ref.column("age").to_pylist(),
                                     [r[3] for r in month]).pvalue)
    assert {t: f["value"] for t, f in drift.items()} == {
        t: _close(v) for t, v in expected.items()}
    # new job titles, more English, more private sector; the ages are as before
    assert {t: f["status"] for t, f in drift.items()} == {
        "job_title:length": "breach" if expected["job_title:length"] < 0.05 else "ok",
        **dict.fromkeys(["job_title:oov_rate", "job_title:tokens", "language", "sector"],
                        "breach"),
        "age": "ok"}
    oov = drift["job_title:oov_rate"]
    assert oov["value"] > oov["threshold"] == 0.1
    assert "analyytikko" in oov["detail"]["detail"]["top_oov_tokens"]
    confidence = figures[("confidence", "low_confidence_share", "low_confidence_share")]
    low = duck_rows(duck, _table(env, "predictions/codes"),
                    "SELECT avg(CASE WHEN confidence < 0.6 THEN 1.0 ELSE 0.0 END) FROM t "
                    "WHERE response_id >= 'R26-500001'")[0][0]
    assert confidence["value"] == _close(float(low))
    champion_share = env.registry.get("coder", 1).metrics["low_confidence"]["share"]
    assert confidence["threshold"] == _close(champion_share + 0.1)
    assert confidence["status"] == "breach"

    alerts = _alerts(env)
    wanted = [("drift", "job_title:oov_rate"), ("drift", "job_title:tokens"),
              ("drift", "language"), ("drift", "sector"),
              ("confidence", "low_confidence_share")]
    for key in wanted:
        assert alerts[key]["state"] == "firing", key
        assert alerts[key]["count"] == 1
        assert alerts[key]["id"] in _seen(out)["fired"]
    assert ("drift", "age") not in alerts
    fired = {k: a["count"] for k, a in alerts.items() if a["state"] == "firing"}
    assert len(fired) == len(_seen(out)["fired"])

    # nothing new: nothing to judge drift on; the alerts neither resolve nor count up
    again = _monitor(env)
    figures = _figures(duck, env, again.run_id)
    assert {t: (f["status"], f["rows"]) for t, f in _by_target(figures, "drift").items()
            } == {"job_title": ("insufficient", 0), "language": ("insufficient", 0),
                  "sector": ("insufficient", 0), "age": ("insufficient", 0)}
    assert figures[("confidence", "low_confidence_share", "rows")]["status"] == "insufficient"
    assert figures[("window", "raw/answers", "to_version")]["detail"]["after"] == 1
    assert figures[("window", "raw/answers", "to_version")]["rows"] == 0
    assert _seen(again) == {"fired": [], "repeated": [], "resolved": []}
    assert {k: a["count"] for k, a in _alerts(env).items() if a["state"] == "firing"
            } == fired


# -- 3. the window ------------------------------------------------------------------------
def test_each_run_sees_only_the_rows_added_since_the_previous_one(tmp_path: Path,
                                                                  duck: Any) -> None:
    env = MlEnv(tmp_path, tail=WATCH + """
[[monitors]]
name = "watch_all"
model = "coder"
input = "raw/answers"
window = "all"
drift_columns = ["age"]
""")
    try:
        env.sync()
        env.train()
        # before the first prediction: the predictions are not judged, the input is
        early = _monitor(env)
        figures = _figures(duck, env, early.run_id)
        assert figures[("prediction_drift", "classes", "rows")]["status"] == "insufficient"
        assert figures[("confidence", "low_confidence_share", "rows")]["status"] == \
            "insufficient"
        assert ("window", "predictions/codes", "to_version") not in figures
        assert figures[("window", "raw/answers", "to_version")]["detail"] == {
            "after": None, "to": 0, "reference": "raw/answers@0"}
        assert figures[("window", "raw/answers", "to_version")]["rows"] == 450

        env.predict()
        env.add_days(1, coded=False)
        env.sync("answers")
        env.predict()
        second = _monitor(env)
        figures = _figures(duck, env, second.run_id)
        windows = {t: (f["detail"]["after"], f["detail"]["to"], f["rows"], f["value"])
                   for (c, t, _), f in figures.items() if c == "window"}
        assert windows == {"raw/answers": (0, 1, 150, 1.0),
                           # no window of predictions was recorded: all of them are new
                           "predictions/codes": (None, 1, 600, 1.0)}
        assert second.inputs == [
            {"table": "raw/answers", "after": 0, "version": 1, "rows": 150},
            {"table": "predictions/codes", "after": None, "version": 1, "rows": 600}]
        # the age figure is that of the 150 new rows alone
        ref = _reference_rows(env)
        new_ages = duck_rows(duck, _table(env, "raw/answers"),
                             "SELECT age FROM t WHERE response_id > 'R26-000450'")
        assert len(new_ages) == 150
        age = figures[("drift", "age", "ks")]
        assert (age["rows"], age["value"]) == (150, _close(float(ks_2samp(
            ref.column("age").to_pylist(), [r[0] for r in new_ages]).pvalue)))

        env.add_days(1, coded=False)
        env.sync("answers")
        env.predict()
        third = _monitor(env)
        later = {t: (f["detail"]["after"], f["detail"]["to"], f["rows"])
                 for (c, t, _), f in _figures(duck, env, third.run_id).items()
                 if c == "window"}
        assert later == {"raw/answers": (1, 2, 150), "predictions/codes": (1, 2, 150)}
        # window = "all": the whole table every time
        whole = [_figures(duck, env, _monitor(env, "watch_all").run_id)[
            ("window", "raw/answers", "to_version")] for _ in range(2)]
        assert [(w["detail"]["after"], w["detail"]["to"], w["rows"]) for w in whole] == [
            (None, 2, 750), (None, 2, 750)]
        assert duck_rows(duck, _table(env, "raw/answers"), "SELECT count(*) FROM t") == [
            (750,)]
    finally:
        env.close()


# -- 4. schema skew -----------------------------------------------------------------------
def test_schema_skew_halts_training_until_the_column_is_back(env: MlEnv, duck: Any) -> None:
    path = str(_table(env, "raw/answers"))
    full = DeltaTable(path).to_pyarrow_table()
    assert _breaches(_monitor(env)) == []

    write_deltalake(path, full.drop_columns(["job_title"]), mode="overwrite",
                    schema_mode="overwrite")
    out = _monitor(env)
    figures = _figures(duck, env, out.run_id)
    assert figures[("schema", "job_title", "present")]["value"] == 0.0
    assert figures[("schema", "job_title", "present")]["status"] == "breach"
    assert figures[("schema", "language", "type_matches")]["status"] == "ok"
    # a missing column is not measured for drift
    assert not [k for k in figures if k[0] == "drift" and k[1].startswith("job_title")]
    alert = _alerts(env)[("schema", "job_title")]
    assert (alert["state"], alert["severity"], alert["model"]) == ("firing", "critical",
                                                                    "coder")
    assert alert["detail"] == {"expected": "string", "found": None}

    halted = env.train()
    assert halted.status == "skipped"
    assert halted.message.startswith(f"halted: schema alert {alert['id']} ")
    forced = env.runner().run("train", "train_coder", trigger="test", force=True)
    # not held back: it ran, and found the input as broken as the monitor said
    assert forced.status == "failed"
    assert "lacks column(s) ['job_title']" in str(forced.error)

    write_deltalake(path, full, mode="overwrite", schema_mode="overwrite")
    back = _monitor(env)
    assert _seen(back)["resolved"] == [alert["id"]]
    resolved = AlertBook(env.state()).get(alert["id"])
    assert (resolved["state"], resolved["resolved_by"]) == ("resolved", "auto")
    after = env.train()  # goes again: the labelled rows are those v1 was trained on
    assert (after.status, after.model_version) == ("skipped", 1), after
    assert after.message.startswith("up to date: the labelled rows and the config")

    # a retyped column: the language as numbers
    codes = pc.cast(pc.index_in(full.column("language"), value_set=pa.array(["fi", "sv",
                                                                              "en"])),
                    pa.int64())
    retyped = full.set_column(full.schema.get_field_index("language"), "language", codes)
    write_deltalake(path, retyped, mode="overwrite", schema_mode="overwrite")
    out = _monitor(env)
    figures = _figures(duck, env, out.run_id)
    assert figures[("schema", "language", "type_matches")]["value"] == 0.0
    assert figures[("schema", "language", "type_matches")]["detail"] == {
        "expected": "string", "found": "int64"}
    assert ("drift", "language", "chi2") not in figures
    assert figures[("drift", "job_title:oov_rate", "oov_rate")]["status"] == "ok"
    typed = _alerts(env)[("schema", "language")]
    assert (typed["state"], typed["severity"]) == ("firing", "critical")
    assert env.train().message.startswith(f"halted: schema alert {typed['id']} ")
    write_deltalake(path, full, mode="overwrite", schema_mode="overwrite")
    assert _seen(_monitor(env))["resolved"] == [typed["id"]]


# -- 5. quality, volume, freshness --------------------------------------------------------
QUALITY = """
[[monitors]]
name = "qa"
input = "qa/people"
expect_min_rows = 12
[monitors.columns.age]
type = "int64"
min = 18
max = 67
max_null_rate = 0.1
drift = "none"
[monitors.columns.language]
allowed = ["fi", "sv", "en"]
drift = "none"
[monitors.columns.hours]
max = 80
max_null_rate = 0.05
drift = "none"
[monitors.columns.region]
kind = "text"
allowed = ["Uusimaa", "Lappi"]
drift = "none"
[[monitors]]
name = "fresh_tight"
input = "qa/people"
max_age = "1s"
[[monitors]]
name = "fresh_loose"
input = "qa/people"
max_age = "30d"
"""


def _people(ids: range, ages: Sequence[int | None], languages: Sequence[str],
            hours: Sequence[float | None], regions: Sequence[str | None] | None = None
            ) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.int64()), "age": pa.array(ages, pa.int64()),
                     "language": pa.array(languages, pa.string()),
                     "hours": pa.array(hours, pa.float64()),
                     "region": pa.array(regions or ["Uusimaa"] * len(ids), pa.string())})


def _quality(figures: dict[tuple[str, str, str], dict[str, Any]]
             ) -> dict[str, tuple[str, Any, Any]]:
    return {t: (f["status"], f["value"], f["detail"])
            for (c, t, _), f in figures.items() if c in ("quality", "volume")}


def test_quality_rules_breach_with_exact_counts_and_pass_otherwise(tmp_path: Path,
                                                                  duck: Any) -> None:
    env = MlEnv(tmp_path, tail=QUALITY)
    try:
        path = str(_table(env, "qa/people"))
        clean_ages: list[int | None] = [20 + i for i in range(20)]
        clean_ages[4] = None  # 1 null in 20: 5%, within 10%
        langs = ["fi", "sv", "en", "fi"] * 5
        write_deltalake(path, _people(range(1, 21), clean_ages, langs, [37.5] * 20))
        ok = _quality(_figures(duck, env, _monitor(env, "qa").run_id))
        assert ok == {
            "rows": ("ok", 20.0, {"expect_min_rows": 12, "expect_max_rows": None}),
            "age:nulls": ("ok", 0.05, {"nulls": 1}),
            "age:range": ("ok", 0.0, {"below": 0, "above": 0, "values": 19,
                                      "min_seen": 20.0, "max_seen": 39.0}),
            "language:allowed": ("ok", 0.0, {"unknown": {}, "unknown_rows": 0, "values": 20}),
            "hours:nulls": ("ok", 0.0, {"nulls": 0}),
            "hours:range": ("ok", 0.0, {"below": 0, "above": 0, "values": 20,
                                        "min_seen": 37.5, "max_seen": 37.5}),
            "region:allowed": ("ok", 0.0, {"unknown": {}, "unknown_rows": 0, "values": 20})}

        # 10 new rows: 3 ages out of range, 2 missing; one unknown language; a NaN and a
        # null among the hours (both missing); an unknown region (a free-text column) and
        # a missing one; fewer rows than expected
        bad_ages: list[int | None] = [12, 17, 90, 30, 31, None, None, 40, 41, 42]
        write_deltalake(path, _people(range(21, 31), bad_ages, ["fi"] * 9 + ["de"],
                                      [37.5, float("nan"), None] + [40.0] * 7,
                                      ["Lappi"] * 8 + ["Narnia", None]), mode="append")
        bad = _monitor(env, "qa")
        found = _quality(_figures(duck, env, bad.run_id))
        assert found == {
            "rows": ("breach", 10.0, {"expect_min_rows": 12, "expect_max_rows": None}),
            "age:nulls": ("breach", 0.2, {"nulls": 2}),
            "age:range": ("breach", 3 / 8, {"below": 2, "above": 1, "values": 8,
                                            "min_seen": 12.0, "max_seen": 90.0}),
            "language:allowed": ("breach", 0.1, {"unknown": {"de": 1}, "unknown_rows": 1,
                                                 "values": 10}),
            "hours:nulls": ("breach", 0.2, {"nulls": 2}),
            "hours:range": ("ok", 0.0, {"below": 0, "above": 0, "values": 8,
                                        "min_seen": 37.5, "max_seen": 40.0}),
            "region:allowed": ("breach", 1 / 9, {"unknown": {"Narnia": 1}, "unknown_rows": 1,
                                                 "values": 9})}
        # an independent count of the same rows
        assert duck_rows(duck, _table(env, "qa/people"),
                         "SELECT count(*) FILTER (age < 18), count(*) FILTER (age > 67), "
                         "count(*) FILTER (age IS NULL), count(*) FILTER (language = 'de') "
                         "FROM t WHERE id > 20") == [(2, 1, 2, 1)]
        checks = {(c["check"], c["target"]): c for c in _breaches(bad)}
        assert checks[("quality", "age:range")]["summary"] == (
            "qa/people.age: 3 value(s) outside [18, 67] (2 below, 1 above)")
        assert checks[("volume", "rows")]["threshold"] == 12.0
        alerts = _alerts(env, "qa")
        firing = {k for k, a in alerts.items() if a["state"] == "firing"}
        assert firing == {("volume", "rows"), ("quality", "age:nulls"),
                          ("quality", "age:range"), ("quality", "language:allowed"),
                          ("quality", "hours:nulls"), ("quality", "region:allowed")}
        assert alerts[("quality", "age:range")]["severity"] == "warning"

        # nothing new: the quality rules have nothing to judge and leave their alerts;
        # an empty delivery is below the expected volume again
        empty = _monitor(env, "qa")
        found = _quality(_figures(duck, env, empty.run_id))
        assert {t: s for t, (s, _, _) in found.items()} == {
            "rows": "breach", "age:nulls": "insufficient", "age:range": "insufficient",
            "language:allowed": "insufficient", "hours:nulls": "insufficient",
            "hours:range": "insufficient", "region:allowed": "insufficient"}
        assert _seen(empty)["resolved"] == []
        counts = {k: a["count"] for k, a in _alerts(env, "qa").items()}
        assert counts == {**dict.fromkeys(firing - {("volume", "rows")}, 1),
                          ("volume", "rows"): 2}

        # a clean delivery of 15 rows: every rule passes and every alert resolves
        write_deltalake(path, _people(range(31, 46), [30] * 15, ["sv"] * 15, [20.0] * 15),
                        mode="append")
        good = _monitor(env, "qa")
        assert {t: s for t, (s, _, _) in _quality(_figures(duck, env, good.run_id)).items()
                } == dict.fromkeys(["rows", "age:nulls", "age:range", "language:allowed",
                                    "hours:nulls", "hours:range", "region:allowed"], "ok")
        assert sorted(_seen(good)["resolved"]) == sorted(
            a["id"] for a in alerts.values())
        assert {a["state"] for a in _alerts(env, "qa").values()} == {"resolved"}

        # freshness: the last commit is older than a second, and younger than 30 days
        committed = DeltaTable(path).history(1)[0]["timestamp"] / 1000
        time.sleep(max(0.0, committed + 1.5 - time.time()))
        tight = _monitor(env, "fresh_tight")
        age = _figures(duck, env, tight.run_id)[("freshness", "table", "age_seconds")]
        assert (age["status"], age["threshold"]) == ("breach", 1.0)
        assert age["value"] >= 1.5
        assert _alerts(env, "fresh_tight")[("freshness", "table")]["state"] == "firing"
        loose = _monitor(env, "fresh_loose")
        age = _figures(duck, env, loose.run_id)[("freshness", "table", "age_seconds")]
        assert (age["status"], age["threshold"]) == ("ok", 30 * 86400.0)
        assert age["value"] >= 1.5
        assert _alerts(env, "fresh_loose") == {}
    finally:
        env.close()


# -- 6. accuracy on coded rows ------------------------------------------------------------
PERFORMANCE = """
[[monitors]]
name = "accuracy"
model = "coder"
predictions = "predictions/codes"
labels = "raw/codes"
[[monitors]]
name = "accuracy_lenient"
model = "coder"
predictions = "predictions/codes"
labels = "raw/codes"
max_metric_drop = 0.9
"""


def _coded_predictions(duck: Any, env: MlEnv) -> list[tuple[str, str, str, str]]:
    """(id, true code, predicted code, language) of coded rows the champion never trained
    on, joined with the champion's predictions of them."""
    champion = env.registry.resolve("coder@champion")
    versions = {i["table"]: i["version"] for i in champion.training_data["inputs"]}
    trained = DeltaTable(str(_table(env, "raw/codes")), version=versions["raw/codes"]
                         ).to_pyarrow_table(columns=["response_id", "isco08"])
    trained_ids = {r["response_id"] for r in trained.to_pylist() if r["isco08"] is not None}
    rows = duck.execute(
        f"SELECT DISTINCT c.response_id, c.isco08, p.predicted, p.language FROM "
        f"delta_scan('{_table(env, 'raw/codes')}') c JOIN "
        f"delta_scan('{_table(env, 'predictions/codes')}') p USING (response_id) "
        f"WHERE p.model_version = {champion.version} AND c.isco08 IS NOT NULL "
        "ORDER BY 1").fetchall()
    return [r for r in rows if r[0] not in trained_ids]


def test_accuracy_on_new_coded_rows_is_sklearns_and_a_drop_alerts(tmp_path: Path,
                                                                 duck: Any) -> None:
    env = MlEnv(tmp_path, tail=PERFORMANCE)
    try:
        env.sync()
        env.train()
        env.predict()
        before = _figures(duck, env, _monitor(env, "accuracy").run_id)
        # every coded row so far was trained on (or held out from) the champion
        assert before[("performance", "labelled", "rows")]["value"] == 0.0
        assert before[("performance", "accuracy", "labelled")]["status"] == "insufficient"

        env.add_drifted_month(2)
        env.sync()
        env.predict()
        out = _monitor(env, "accuracy")
        figures = _figures(duck, env, out.run_id)
        rows = _coded_predictions(duck, env)
        assert all(r[0] >= "R26-500001" for r in rows)  # the new month's coded answers
        n = len(rows)
        assert n >= 30
        y, p = [r[1] for r in rows], [r[2] for r in rows]
        accuracy, macro = accuracy_score(y, p), f1_score(y, p, average="macro")
        champion = env.registry.resolve("coder@champion").metrics
        perf = {t: f for (c, t, m), f in figures.items() if c == "performance"}
        assert perf["labelled"]["value"] == float(n)
        assert perf["labelled"]["detail"]["not_trained_on"] == n
        assert (perf["accuracy"]["value"], perf["accuracy"]["rows"]) == (_close(accuracy), n)
        assert perf["macro_f1"]["value"] == _close(macro)
        for metric, value in (("accuracy", accuracy), ("macro_f1", macro)):
            held_out = champion["overall"][metric]
            assert perf[metric]["threshold"] == _close(held_out - 0.05)
            assert value < held_out - 0.05  # the new kinds of work are coded badly
            assert perf[metric]["status"] == "breach"
        # per language: the same metrics on each segment's rows
        sizes = Counter(r[3] for r in rows)
        # segment_min_rows (20): English and Finnish are judged, Swedish only measured
        assert sorted(lang for lang, k in sizes.items() if k >= 20) == ["en", "fi"]
        assert 0 < sizes["sv"] < 20
        for lang in sorted(sizes):
            seg = [r for r in rows if r[3] == lang]
            sy, sp = [r[1] for r in seg], [r[2] for r in seg]
            if len(seg) < 20:  # segment_min_rows: measured, not judged
                fig = figures[("performance", f"language={lang}", "accuracy")]
                assert (fig["status"], fig["rows"]) == ("insufficient", len(seg))
                assert fig["value"] == _close(accuracy_score(sy, sp))
                continue
            acc = figures[("performance", f"language={lang}:accuracy", "accuracy")]
            f1 = figures[("performance", f"language={lang}:macro_f1", "macro_f1")]
            assert (acc["value"], acc["rows"]) == (_close(accuracy_score(sy, sp)), len(seg))
            assert f1["value"] == _close(f1_score(sy, sp, average="macro"))
        alerts = _alerts(env, "accuracy")
        for target in ("accuracy", "macro_f1"):
            assert (alerts[("performance", target)]["state"],
                    alerts[("performance", target)]["severity"]) == ("firing", "critical")
        # the same figures within a tolerance that large: no alert
        lenient = _monitor(env, "accuracy_lenient")
        lf = _figures(duck, env, lenient.run_id)
        assert lf[("performance", "accuracy", "accuracy")]["value"] == _close(accuracy)
        assert lf[("performance", "accuracy", "accuracy")]["status"] == "ok"
        assert _seen(lenient)["fired"] == []

        # the answers written again: the champion predicts them again, but each coded row
        # still counts once
        answers = str(_table(env, "raw/answers"))
        write_deltalake(answers, DeltaTable(answers).to_pyarrow_table(), mode="overwrite")
        env.predict()
        assert duck_rows(duck, _table(env, "predictions/codes"),
                         "SELECT count(*) > count(DISTINCT response_id) FROM t") == [(True,)]
        again = _figures(duck, env, _monitor(env, "accuracy").run_id)
        assert again[("performance", "labelled", "rows")]["value"] == float(n)
        assert again[("performance", "accuracy", "accuracy")]["value"] == _close(accuracy)
    finally:
        env.close()


# -- 7. the conditional commit ------------------------------------------------------------
def test_two_runs_planned_on_the_same_seq_cannot_both_land(env: MlEnv, duck: Any) -> None:
    lake, config = env.lake, env.loaded.config
    conf = config.monitor("watch")
    # two runs measure the same (first) window before either commits
    a = measure_monitor(lake, conf, config.models, run_id="run-a", name="watch")
    b = measure_monitor(lake, conf, config.models, run_id="run-b", name="watch")
    assert (a.follows, b.follows) == (None, None)
    assert commit_monitor(lake, a).table_version == 0
    with pytest.raises(StoreError, match="another run recorded its figures as seq 1") as e:
        commit_monitor(lake, b)
    assert e.value.retriable is True
    metrics = _table(env, METRICS_TABLE)
    assert duck_rows(duck, metrics, "SELECT DISTINCT run_id FROM t") == [("run-a",)]
    table = DeltaTable(str(metrics))
    assert table.transaction_version(app_id("watch")) == 1

    # again with the table there: the run planned second is refused
    c = measure_monitor(lake, conf, config.models, run_id="run-c", name="watch")
    d = measure_monitor(lake, conf, config.models, run_id="run-d", name="watch")
    assert (c.follows, d.follows) == (1, 1)
    assert commit_monitor(lake, c).table_version == 1
    with pytest.raises(StoreError, match="seq 2"):
        commit_monitor(lake, d)
    assert duck_rows(duck, metrics, "SELECT run_id, count(*) FROM t GROUP BY 1 ORDER BY 1"
                     ) == [("run-a", len(a.findings.figures) + len(a.windows)),
                           ("run-c", len(c.findings.figures) + len(c.windows))]

    # runs one after the other: one commit each, the app transaction one higher each time
    seqs = []
    for _ in range(2):
        out = _monitor(env)
        seqs.append(DeltaTable(str(metrics)).transaction_version(app_id("watch")))
        commit = env.lake.find_commit(METRICS_TABLE, app_id("watch"), len(seqs) + 2)
        assert commit is not None and commit["run_id"] == out.run_id
    assert seqs == [3, 4]


# -- 8. config errors ---------------------------------------------------------------------
CONFIG_BASE = """[lake]
uri = "lake"
[models.coder]
training_table = "raw/answers"
key = ["response_id"]
label = "isco08"
text_features = ["job_title"]
[[monitors]]
name = "watch"
"""


@pytest.mark.parametrize(("body", "line_of", "key", "what"), [
    ('model = "coder"\n', "[[monitors]]", "monitors[0]",
     "give the table to watch: `input"),
    ('predictions = "predictions/codes"\nlabels = "raw/codes"\n', "[[monitors]]",
     "monitors[0]", "`labels` need the `model`"),
    ('model = "coder"\ninput = "raw/answers"\nlabels = "raw/codes"\n', "[[monitors]]",
     "monitors[0]", "`labels` are compared with predictions: set `predictions`"),
    ('model = "coder"\ninput = "raw/answers"\nseverity = { drfit = "critical" }\n',
     "severity =", "monitors[0].severity", "unknown check(s) ['drfit']"),
    ('model = "coder"\ninput = "raw/answers"\nmax_age = "soon"\n', "max_age =",
     "monitors[0].max_age", "'soon' is not a duration"),
    ('model = "coder"\ninput = "raw/answers"\nreference = "raw/answers@v3"\n',
     "reference =", "monitors[0].reference", "write `TABLE` or `TABLE@VERSION`"),
    ('model = "coder"\ninput = "raw/answers"\nreference = "../answers"\n', "reference =",
     "monitors[0].reference", "'..'"),
], ids=["no-table", "labels-without-model", "labels-without-predictions", "severity",
        "max-age", "reference-version", "reference-path"])
def test_monitor_config_errors_name_the_file_line_and_key(tmp_path: Path, body: str,
                                                          line_of: str, key: str,
                                                          what: str) -> None:
    text = CONFIG_BASE + body
    path = tmp_path / "silta.toml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(line_of))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(e.value.problems) == 1, e.value.problems
    problem = e.value.problems[0]
    assert problem.startswith(f"{path}:{line}: {key}: "), problem
    assert what in problem
