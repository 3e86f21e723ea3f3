"""Accuracy against manually coded rows: the monitor's performance check.

The coded rows (``labels``) are joined on the model's key with the predictions the
champion made; rows the champion was trained on are left out, so the figures are
those of answers it has never seen. Accuracy and macro-F1 are compared, overall and
per segment, with the champion's own figures on its held-out rows: a fall of more than
``max_metric_drop`` is a performance alert.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agent.ml.config import ModelConfig
from agent.ml.evaluate import compute_metrics, segment_metrics
from agent.ml.monitor_checks import Findings
from agent.ml.monitor_config import MonitorConfig
from agent.ml.registry import ModelVersion
from connectors.lake import DeltaLake, dedupe_last

METRICS = ("accuracy", "macro_f1")


def _batches(lake: DeltaLake, table: str, version: int | None, columns: list[str],
             batch_rows: int) -> Iterator[pa.RecordBatch]:
    dataset = lake.require(table, version).to_pyarrow_dataset()
    yield from dataset.to_batches(columns=columns, batch_size=batch_rows)


def _trained_keys(lake: DeltaLake, model: ModelConfig, champion: ModelVersion
                  ) -> pa.Table | None:
    """Key columns of the labelled rows the champion was fitted on (None: not recorded)."""
    table = model.labels_table or model.training_table
    versions = {str(i["table"]): int(i["version"])
                for i in champion.training_data.get("inputs", [])}
    if table not in versions:
        return None
    schema = lake.schema(table, versions[table])
    has_label = schema is not None and model.label in schema.names
    columns = [*model.key, *([model.label] if has_label else [])]
    keys = pa.Table.from_batches(list(_batches(lake, table, versions[table], columns,
                                               262_144)))
    if has_label:
        keys = keys.filter(pc.is_valid(keys.column(model.label)))
    return keys.select(model.key)


def _coded(lake: DeltaLake, conf: MonitorConfig, model: ModelConfig, champion: ModelVersion
           ) -> tuple[pa.Table, int]:
    """(coded rows not trained on: key, label, segments in the labels table; all coded)."""
    label = conf.label or model.label
    assert conf.labels is not None
    schema = lake.schema(conf.labels)
    names = schema.names if schema is not None else []
    segments = [s for s in model.segments if s in names and s not in model.key]
    columns = [*model.key, label, *segments]
    coded = pa.Table.from_batches(list(_batches(lake, conf.labels, None, columns,
                                                conf.batch_rows)))
    coded = coded.filter(pc.is_valid(coded.column(label)))
    total = coded.num_rows
    trained = _trained_keys(lake, model, champion)
    if trained is not None and trained.num_rows:
        coded = coded.join(trained, keys=list(model.key), join_type="left anti")
    return coded.rename_columns([*model.key, "__label", *segments]), total


def _predicted(lake: DeltaLake, conf: MonitorConfig, model: ModelConfig,
               champion: ModelVersion, coded: pa.Table) -> pa.Table | None:
    """The champion's predictions of the coded rows joined with them, one row per key.

    A key predicted more than once by the same version (its input row was written again)
    counts once, with its latest prediction.
    """
    assert conf.predictions is not None
    schema = lake.schema(conf.predictions)
    have = schema.names if schema is not None else []
    extra = [s for s in model.segments if s in have and s not in coded.column_names]
    order = ["predicted_at"] if "predicted_at" in have else []
    joined: list[pa.Table] = []
    columns = [*model.key, "predicted", "model_version", *extra, *order]
    for batch in _batches(lake, conf.predictions, None, columns, conf.batch_rows):
        mine = pa.Table.from_batches([batch]).filter(
            pc.equal(batch.column("model_version"), champion.version))
        if mine.num_rows:
            joined.append(mine.join(coded, keys=list(model.key), join_type="inner"))
    if not joined:
        return None
    rows = pa.concat_tables(joined)
    if order:
        rows = rows.sort_by([(order[0], "ascending")])  # stable: ties keep their order
    return dedupe_last(rows, list(model.key))


def check_performance(f: Findings, lake: DeltaLake, conf: MonitorConfig, model: ModelConfig,
                      champion: ModelVersion | None) -> None:
    assert conf.labels is not None and conf.predictions is not None
    if champion is None:
        f.result("performance", "accuracy", "insufficient",
                 f"{model.label}: no champion yet, nothing to measure", metric="labelled",
                 value=None, threshold=float(conf.min_labelled), table=conf.labels)
        return
    for what, table in (("coded rows", conf.labels), ("predictions", conf.predictions)):
        if lake.open(table) is None:
            f.result("performance", "accuracy", "insufficient",
                     f"{table}: no {what} yet (the table does not exist)", metric="labelled",
                     value=0.0, threshold=float(conf.min_labelled), table=conf.labels, rows=0)
            return
    coded, total = _coded(lake, conf, model, champion)
    rows = _predicted(lake, conf, model, champion, coded)
    n = 0 if rows is None else rows.num_rows
    where = f"{champion.model}@{champion.version}"
    f.figure("performance", "labelled", "rows", float(n), table=conf.labels, rows=n,
             detail={"coded_rows": total, "not_trained_on": coded.num_rows})
    if rows is None or n < conf.min_labelled:
        f.result("performance", "accuracy", "insufficient",
                 f"{n} coded row(s) predicted by {where} and not trained on; at least "
                 f"{conf.min_labelled} are needed (min_labelled)", metric="labelled",
                 value=float(n), threshold=float(conf.min_labelled), table=conf.labels, rows=n)
        return
    y = pc.cast(rows.column("__label"), pa.string()).to_pylist()
    p = pc.cast(rows.column("predicted"), pa.string()).to_pylist()
    overall = compute_metrics(y, p, METRICS)
    reference: dict[str, Any] = champion.metrics.get("overall", {})
    for metric in METRICS:
        _compare(f, conf, metric, metric, overall[metric], reference.get(metric), n, where)
    segments = [s for s in model.segments if s in rows.column_names]
    if not segments:
        return
    frame = rows.select(segments).to_pandas()
    found = segment_metrics(y, p, frame, METRICS)
    recorded: dict[str, Any] = champion.metrics.get("segments", {})
    for column, by_value in found.items():
        for value, figures in by_value.items():
            target = f"{column}={value}"
            small = figures["n"] < model.segment_min_rows
            for metric in METRICS:
                ref = recorded.get(column, {}).get(value, {}).get(metric)
                if small:
                    f.figure("performance", target, metric, figures[metric],
                             status="insufficient", table=conf.labels, rows=int(figures["n"]))
                elif metric == model.primary_metric or metric == "accuracy":
                    _compare(f, conf, f"{target}:{metric}", metric, figures[metric], ref,
                             int(figures["n"]), where)
                else:  # measured and recorded, not judged
                    f.figure("performance", target, metric, figures[metric],
                             table=conf.labels, rows=int(figures["n"]))


def _compare(f: Findings, conf: MonitorConfig, target: str, metric: str, value: float,
             reference: float | None, n: int, where: str) -> None:
    name = "macro-F1" if metric == "macro_f1" else metric
    if reference is None:
        f.result("performance", target, "insufficient",
                 f"{target}: {name} {value:.4f} on {n} coded rows; {where} recorded no "
                 "figure to compare with", metric=metric, value=value, threshold=None,
                 table=conf.labels, rows=n)
        return
    floor = float(reference) - conf.max_metric_drop
    bad = value < floor
    f.result("performance", target, "breach" if bad else "ok",
             f"{target}: {name} {value:.4f} on {n} coded rows, "
             f"{'below' if bad else 'within'} {floor:.4f} ({where} held-out "
             f"{float(reference):.4f} - {conf.max_metric_drop})",
             metric=metric, value=value, threshold=floor, table=conf.labels, rows=n,
             detail={"champion": float(reference), "drop": float(reference) - value})
