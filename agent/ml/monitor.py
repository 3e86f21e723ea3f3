"""A monitoring run: check new data and predictions, record every figure, report breaches.

1. The window: the rows each watched table gained since this monitor's previous run
   (``window = "new"``; the previous run's versions are read back from the metrics
   table), or the whole table (``"all"``).
2. The input table: schema against the champion's signature (a missing or retyped
   column is *schema skew*, which halts the model's trainings), data quality, volume,
   freshness, and feature drift against the reference: by default the champion's
   training data at the version it was trained on.
3. The predictions table: class drift against the champion's training labels, and the
   share of predictions below ``min_confidence`` against the champion's own share.
4. When coded labels are configured: accuracy and macro-F1 on them (``monitor_performance``).
5. Every figure lands in ``_silta/metrics`` in one commit, conditional on the
   monitor's last commit as it was when the windows were read (a compare-and-swap: of
   two runs that planned the same window, the second is refused and not recorded).

Check results go back to the agent, which turns them into alerts (``agent/alerts.py``);
this module never touches the state store, so it can run in a worker process.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from agent.jsonsafe import json_safe
from agent.ml.config import DEFAULT_MIN_CONFIDENCE, ModelConfig
from agent.ml.drift import count_values
from agent.ml.metrics_history import METRICS_TABLE
from agent.ml.monitor_checks import (
    Findings,
    check_confidence,
    check_drift,
    check_freshness,
    check_prediction_drift,
    check_quality,
    check_schema,
    check_volume,
)
from agent.ml.monitor_config import MonitorConfig
from agent.ml.monitor_performance import check_performance
from agent.ml.profile import Kind, is_numeric, profile_batches
from agent.ml.registry import CHAMPION_ALIAS, ModelRegistry, ModelVersion
from agent.outcome import JobOutcome
from connectors.errors import NotFoundError, StoreError
from connectors.lake import DeltaLake
from connectors.lake_changes import added_rows

log = logging.getLogger("silta.monitor")

METRICS_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("monitor", pa.string()), ("model", pa.string()),
    ("model_version", pa.int64()), ("check", pa.string()), ("target", pa.string()),
    ("metric", pa.string()), ("value", pa.float64()), ("threshold", pa.float64()),
    ("status", pa.string()), ("table", pa.string()), ("rows", pa.int64()),
    ("detail", pa.string()), ("measured_at", pa.timestamp("us", tz="UTC")),
    ("severity", pa.string()), ("summary", pa.string()),
])


#: commit metadata of a monitor's metrics commit: {table: version} its windows reached
WINDOWS_KEY = "silta.windows"


def app_id(monitor: str) -> str:
    return f"silta-monitor/{monitor}"


# -- windows ----------------------------------------------------------------------------
def _windows_in(table: DeltaTable, monitor: str) -> dict[str, int]:

    found = table.to_pyarrow_dataset().to_table(
        columns=["target", "value", "measured_at"],
        filter=(ds.field("monitor") == monitor) & (ds.field("check") == "window"))
    out: dict[str, tuple[Any, int]] = {}
    for target, value, at in zip(found.column("target").to_pylist(),
                                 found.column("value").to_pylist(),
                                 found.column("measured_at").to_pylist(), strict=True):
        if value is not None and (target not in out or at > out[target][0]):
            out[target] = (at, int(value))
    return {t: v for t, (_, v) in out.items()}


def _planned(lake: DeltaLake, monitor: str) -> tuple[int | None, dict[str, int]]:
    """(this monitor's last committed seq, the windows its runs reached): one snapshot.

    The metrics commit is conditional on that seq, so a run whose windows were read
    before another run of the same monitor committed cannot land on top of it.
    """
    table = lake.open(METRICS_TABLE)
    if table is None:
        return None, {}
    seq = table.transaction_version(app_id(monitor))
    if seq is None:
        return None, {}
    # the last commit names its windows: no scan of a metrics table that only grows
    entry = lake.find_commit(METRICS_TABLE, app_id(monitor), seq, table=table)
    recorded = entry.get(WINDOWS_KEY) if entry else None
    if isinstance(recorded, str):
        return seq, {str(t): int(v) for t, v in json.loads(recorded).items()}
    return seq, _windows_in(table, monitor)


def _window(lake: DeltaLake, conf: MonitorConfig, table: str, previous: Mapping[str, int]
            ) -> tuple[int | None, int]:
    to = lake.require(table).version()
    after = previous.get(table) if conf.window == "new" else None
    if after is not None and after > to:
        after = None  # the table was re-created: start again from its beginning
    if after is not None and after < to and _overwritten(lake, table, after, to):
        # every row at `to` was written after `after`; and the change feed of a rewrite
        # that retyped a column cannot be read with the new types
        after = None
    return after, to


def _overwritten(lake: DeltaLake, table: str, after: int, to: int) -> bool:
    """Whether a commit in ``(after, to]`` replaced the whole table."""
    for entry in lake.history(table, limit=to - after + 50):
        if not after < int(entry["version"]) <= to:
            continue
        params = entry.get("operationParameters") or {}
        operation = str(entry.get("operation", "")).upper()
        whole = str(params.get("mode", "")).lower() == "overwrite" and not (
            params.get("predicate") or params.get("replaceWhere"))
        if whole or operation.startswith(("CREATE OR REPLACE", "REPLACE TABLE")):
            return True
    return False


# -- reference --------------------------------------------------------------------------
def _champion(registry: ModelRegistry, model: str | None) -> ModelVersion | None:
    if model is None:
        return None
    try:
        return registry.resolve(f"{model}@{CHAMPION_ALIAS}")
    except NotFoundError:
        return None


def _reference(conf: MonitorConfig, champion: ModelVersion | None,
               lake: DeltaLake) -> tuple[str, int] | None:
    if conf.reference:
        table, _, version = conf.reference.partition("@")
        return table, int(version) if version else lake.require(table).version()
    if champion is None:
        return None
    data = champion.training_data
    return str(data["table"]), int(data["version"])


def _expected_schema(conf: MonitorConfig, champion: ModelVersion | None) -> dict[str, str]:
    expected: dict[str, str] = {}
    if champion is not None:
        for item in champion.signature.get("inputs", []):
            expected[str(item["name"])] = str(item["type"])
    for column, rule in conf.columns.items():
        if rule.type:
            expected[column] = rule.type
    return expected


def _drift_columns(conf: MonitorConfig, model: ModelConfig | None) -> list[str]:
    if conf.drift_columns is not None:
        return list(conf.drift_columns)
    if model is not None:
        return [*model.text_features, *model.features]
    return [c for c, rule in conf.columns.items() if rule.drift != "none"]


def _kind(column: str, schema: pa.Schema, conf: MonitorConfig, model: ModelConfig | None
          ) -> Kind:
    rule = conf.columns.get(column)
    if rule is not None and rule.kind:
        return rule.kind
    if model is not None and column in model.text_features:
        return "text"
    return "numeric" if is_numeric(schema.field(column).type) else "categorical"


# -- the checks -------------------------------------------------------------------------
def _input_checks(f: Findings, lake: DeltaLake, conf: MonitorConfig,
                  model: ModelConfig | None, champion: ModelVersion | None,
                  previous: Mapping[str, int]) -> dict[str, Any]:
    assert conf.input is not None
    table = conf.input
    after, to = _window(lake, conf, table, previous)
    schema = lake.schema(table, to)
    assert schema is not None
    broken = check_schema(f, table, schema, _expected_schema(conf, champion))
    history = lake.history(table, limit=1)
    stamp = history[0].get("timestamp") if history else None
    check_freshness(f, table, dt.datetime.fromtimestamp(stamp / 1000, dt.UTC)
                    if isinstance(stamp, int | float) else None)
    drift_cols = [c for c in _drift_columns(conf, model)
                  if c in schema.names and c not in broken
                  and (conf.columns.get(c) is None or conf.columns[c].drift != "none")]
    quality_cols = [c for c in conf.columns if c in schema.names and c not in broken]
    if conf.max_null_rate is not None:
        quality_cols += [c for c in drift_cols if c not in quality_cols]
    kinds = {c: _kind(c, schema, conf, model) for c in [*drift_cols, *quality_cols]}
    rows, current = profile_batches(
        added_rows(lake, table, after, to, columns=list(kinds), batch_rows=conf.batch_rows),
        kinds, count_texts=[c for c in quality_cols
                            if conf.columns.get(c) and conf.columns[c].allowed is not None])
    check_volume(f, table, rows)
    for column in quality_cols:
        check_quality(f, table, column, current[column], conf.columns.get(column))
    reference = _reference(conf, champion, lake)
    if reference is None:
        for column in drift_cols:
            f.result("drift", column, "insufficient",
                     f"{table}.{column}: no reference to compare with (the model has no "
                     "champion yet; or set `reference = \"TABLE@VERSION\"`)", metric="values",
                     value=float(current[column].rows), threshold=None, table=table)
        return {"table": table, "after": after, "to": to, "rows": rows}
    ref_table, ref_version = reference
    ref_schema = lake.schema(ref_table, ref_version)
    ref_names = ref_schema.names if ref_schema is not None else []
    ref_kinds = {c: kinds[c] for c in drift_cols if c in ref_names}
    _, ref_profiles = profile_batches(
        added_rows(lake, ref_table, None, ref_version, columns=list(ref_kinds),
                   batch_rows=conf.batch_rows), ref_kinds)
    ref_name = f"{ref_table}@{ref_version}"
    for column in drift_cols:
        if column not in ref_profiles:
            f.result("drift", column, "insufficient", f"{ref_name} has no column {column!r}",
                     metric="values", value=None, threshold=None, table=table)
            continue
        check_drift(f, table, column, current[column], ref_profiles[column],
                    conf.columns.get(column), ref_name)
    return {"table": table, "after": after, "to": to, "rows": rows,
            "reference": ref_name}


def reference_low_confidence(champion: ModelVersion, threshold: float) -> float | None:
    """The champion's share of held-out rows below ``threshold`` (None: not recorded)."""
    low = champion.metrics.get("low_confidence")
    if isinstance(low, dict) and low.get("threshold") == threshold:
        return float(low["share"])
    for entry in champion.metrics.get("coverage", []):
        if entry.get("threshold") == threshold and entry.get("coverage") is not None:
            return 1.0 - float(entry["coverage"])
    return None


def _prediction_checks(f: Findings, lake: DeltaLake, conf: MonitorConfig,
                       model: ModelConfig | None, champion: ModelVersion | None,
                       previous: Mapping[str, int]) -> dict[str, Any] | None:
    assert conf.predictions is not None
    table = conf.predictions
    if lake.open(table) is None:
        for check, target in (("prediction_drift", "classes"),
                              ("confidence", "low_confidence_share")):
            f.result(check, target, "insufficient", f"{table}: no predictions yet (the "
                     "table does not exist)", metric="rows", value=0.0,
                     threshold=float(f.conf.min_rows), table=table, rows=0)
        return None
    after, to = _window(lake, conf, table, previous)
    counts: dict[str, int] = {}
    confidence: list[np.ndarray] = []
    rows = 0
    for batch in added_rows(lake, table, after, to, columns=["predicted", "confidence"],
                            batch_rows=conf.batch_rows):
        rows += batch.num_rows
        for k, v in count_values(batch.column("predicted")).items():
            counts[k] = counts.get(k, 0) + v
        values = pc.fill_null(pc.cast(batch.column("confidence"), pa.float64()), 0.0)
        confidence.append(np.asarray(values, dtype=np.float64))
    f.figure("volume", "predictions", "rows", float(rows), table=table, rows=rows)
    threshold = (model.min_confidence if model is not None and model.min_confidence
                 is not None else DEFAULT_MIN_CONFIDENCE)
    ref_counts: dict[str, int] = {}
    ref_share = None
    where = "no champion"
    if champion is not None:
        ref_counts = {str(k): int(v) for k, v in
                      (champion.training_data.get("class_counts") or {}).items()}
        ref_share = reference_low_confidence(champion, threshold)
        where = f"{champion.model}@{champion.version} training labels"
    check_prediction_drift(f, table, counts, ref_counts, where)
    check_confidence(f, table, np.concatenate(confidence) if confidence else np.empty(0),
                     threshold, ref_share)
    return {"table": table, "after": after, "to": to, "rows": rows}


# -- the job ----------------------------------------------------------------------------
def _metric_rows(f: Findings, name: str, run_id: str, champion: ModelVersion | None,
                 model: str | None, windows: list[dict[str, Any]]) -> pa.Table:
    at = dt.datetime.now(dt.UTC)
    figures = list(f.figures)
    for w in windows:  # the windows last: the next run starts where these end
        figures.append({"check": "window", "target": w["table"], "metric": "to_version",
                        "value": float(w["to"]), "threshold": None, "status": "info",
                        "table": w["table"], "rows": w["rows"],
                        "detail": {"after": w["after"], "to": w["to"],
                                   "reference": w.get("reference")}})
    cols: dict[str, list[Any]] = {n: [] for n in METRICS_SCHEMA.names}
    for fig in figures:
        cols["run_id"].append(run_id)
        cols["monitor"].append(name)
        cols["model"].append(model)
        cols["model_version"].append(champion.version if champion else None)
        for key in ("check", "target", "metric", "value", "threshold", "status", "table",
                    "rows"):
            cols[key].append(fig[key])
        cols["severity"].append(fig.get("severity"))
        cols["summary"].append(fig.get("summary"))
        cols["detail"].append(json.dumps(json_safe(fig["detail"]), sort_keys=True,
                                         default=str, allow_nan=False)
                              if fig["detail"] else None)
        cols["measured_at"].append(at)
    return pa.table(cols, schema=METRICS_SCHEMA)


@dataclass
class MeasuredRun:
    """A monitoring run measured but not yet recorded (see :func:`commit_monitor`)."""

    name: str
    run_id: str
    model: str | None
    champion: ModelVersion | None
    findings: Findings
    #: this monitor's last committed seq when the windows were planned (None: first run)
    follows: int | None
    windows: list[dict[str, Any]] = field(default_factory=list)


def measure_monitor(lake: DeltaLake, conf: MonitorConfig, models: Mapping[str, ModelConfig],
                    *, run_id: str, name: str) -> MeasuredRun:
    """Plan the windows and run every configured check; nothing is written."""
    model = models.get(conf.model) if conf.model else None
    champion = _champion(ModelRegistry(lake), conf.model)
    follows, previous = _planned(lake, name)
    f = Findings(conf)
    run = MeasuredRun(name, run_id, conf.model, champion, f, follows)
    if conf.input:
        run.windows.append(_input_checks(f, lake, conf, model, champion, previous))
    if conf.predictions:
        window = _prediction_checks(f, lake, conf, model, champion, previous)
        if window is not None:
            run.windows.append(window)
    if conf.labels and model is not None:
        check_performance(f, lake, conf, model, champion)
    return run


def commit_monitor(lake: DeltaLake, run: MeasuredRun) -> JobOutcome:
    """Record a measured run's figures in one commit, conditional on its planned seq.

    Raises a retriable StoreError when another run of the monitor committed after this
    one was planned: both would claim the same window, so this one is not recorded.
    """
    f, name, run_id, champion = run.findings, run.name, run.run_id, run.champion
    data = _metric_rows(f, name, run_id, champion, run.model, run.windows)
    seq = (run.follows or 0) + 1
    result = lake.commit_batch(METRICS_TABLE, data, app_id=app_id(name), seq=seq,
                               mode="append", schema_merge=False,
                               metadata={"run_id": run_id, "monitor": name,
                                         WINDOWS_KEY: json.dumps(
                                             {w["table"]: w["to"] for w in run.windows},
                                             sort_keys=True)},
                               follows=run.follows)
    if result.already:
        raise StoreError(f"monitor {name!r}: another run recorded its figures as seq {seq} "
                         f"(version {result.version} of {METRICS_TABLE}) while run {run_id} "
                         "was measuring the same window; this run is not recorded (run it "
                         "again to judge what is new since)", retriable=True)
    out = JobOutcome("monitor", name, run_id, model=run.model)
    out.model_version = champion.version if champion else None
    breaches = f.breaches
    windows = run.windows
    out.committed = True
    out.table, out.table_version = METRICS_TABLE, result.version
    out.rows = sum(int(w["rows"]) for w in windows)
    out.inputs = [{"table": w["table"], "after": w["after"], "version": w["to"],
                   "rows": w["rows"]} for w in windows]
    out.outputs = [{"table": METRICS_TABLE, "version": result.version,
                    "rows": data.num_rows}]
    judged = [r for r in f.results if r.status in ("ok", "breach")]
    out.metrics = {"checks": len(f.results), "judged": len(judged),
                   "breaches": len(breaches), "figures": data.num_rows}
    out.detail = {"checks": [r.as_dict() for r in f.results]}
    out.message = (f"{len(judged)} check(s) judged, {len(breaches)} breach(es)"
                   + (": " + "; ".join(f"{r.check} {r.target}" for r in breaches[:5])
                      if breaches else "")
                   + (f"; {len(f.results) - len(judged)} not judged (too few rows or no "
                      "reference)" if len(judged) < len(f.results) else ""))
    log.info("monitor=%s run %s: %s", name, run_id, out.message)
    return out


def run_monitor(lake: DeltaLake, conf: MonitorConfig, models: Mapping[str, ModelConfig], *,
                run_id: str, name: str) -> JobOutcome:
    """Run every configured check once; the figures are committed, the results returned."""
    return commit_monitor(lake, measure_monitor(lake, conf, models, run_id=run_id, name=name))


def recorded_checks(lake: DeltaLake, monitor: str, run_id: str) -> list[dict[str, Any]] | None:
    """The judged check results a committed run recorded (None: the run committed
    nothing), as :meth:`agent.alerts.CheckResult.from_dict` reads them."""
    table = lake.open(METRICS_TABLE)
    if table is None:
        return None

    rows = table.to_pyarrow_dataset().to_table(
        columns=["check", "target", "status", "severity", "summary", "value", "threshold",
                 "detail"],
        filter=(ds.field("monitor") == monitor) & (ds.field("run_id") == run_id)).to_pylist()
    if not rows:
        return None
    return [{**r, "detail": json.loads(r["detail"]) if r["detail"] else {},
             "severity": r["severity"] or "warning", "summary": r["summary"] or ""}
            for r in rows if r["status"] in ("ok", "breach")]

