"""Prediction: code the rows an input table gained since the last run, exactly once.

Each run pins the input's current version ``V`` and predicts the rows added in
``(last, V]``, ``last`` being the end of the range the predictions table already holds
for this job. The range is one Delta commit to the predictions table carrying
``Transaction("silta-predict/<job>", V + 1)``, written only if the table's last
transaction of the job is still the one planned from (``commit_batch(follows=...)``).
So the predictions table itself says which input versions are done:

- a run killed before its commit left nothing, and the next run predicts the range;
- a commit that raised but landed is found by its transaction: not written again;
- two runs at once (an orphaned worker, a second agent) cannot both land overlapping
  ranges: the later one's snapshot no longer follows what it planned from.

``model@alias`` is resolved at the start of every run, so moving ``champion`` between
two runs changes the model of the second. Rows stream through in ``batch_rows`` batches.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from agent.ml.artifacts import load_model
from agent.ml.config import ModelConfig, PredictionConfig
from agent.ml.estimators import FeatureSpec, predict_top_k, prepare_frame
from agent.ml.predict_plan import app_id, plan_range
from agent.ml.registry import ModelRegistry, ModelVersion
from agent.ml.train import SPEC_KEY
from agent.outcome import JobOutcome
from connectors.errors import (
    ArtifactIntegrityError,
    CommitConflictError,
    NotFoundError,
    StoreError,
    UsageError,
)
from connectors.lake import DeltaLake
from connectors.lake_changes import added_rows
from connectors.prefetch import off_runtime

log = logging.getLogger("silta.predict")

#: output columns Silta adds next to the key and the passed-through input columns
TOP_K_TYPE = pa.list_(pa.struct([("code", pa.string()), ("probability", pa.float64())]))
PREDICTION_FIELDS = [
    pa.field("predicted", pa.string()), pa.field("confidence", pa.float64()),
    pa.field("needs_review", pa.bool_()), pa.field("top_k", TOP_K_TYPE),
    pa.field("model", pa.string()), pa.field("model_version", pa.int64()),
    pa.field("run_id", pa.string()), pa.field("predicted_at", pa.timestamp("us", tz="UTC")),
]
#: columns that differ between two runs of the same prediction (left out of replays)
RUN_COLUMNS = ("run_id", "predicted_at")
PLAN_ATTEMPTS = 6


@dataclass(frozen=True)
class Plan:
    """One run's unit: the input range, the model version, what the table followed."""

    follows: int | None  # the job's last transaction in the predictions table
    to: int  # the input version pinned for this run
    model: ModelVersion

    @property
    def after(self) -> int | None:
        """The input version predicted up to before (None: nothing yet)."""
        return None if self.follows is None else self.follows - 1


def plan(lake: DeltaLake, registry: ModelRegistry, conf: PredictionConfig) -> Plan | None:
    """The range to predict now, or None when the predictions are up to date."""
    unit = plan_range(lake, conf)
    if unit is None:
        return None
    return Plan(follows=unit[0], to=unit[1], model=registry.resolve(conf.model_ref))


def output_schema(input_schema: pa.Schema, key: list[str], passthrough: list[str]
                  ) -> pa.Schema:
    names = [f.name for f in PREDICTION_FIELDS]
    clash = [c for c in [*key, *passthrough] if c in names]
    if clash:
        raise UsageError(f"column(s) {clash} of the input have the names of prediction "
                         f"columns ({', '.join(names)}); leave them out of passthrough or "
                         "rename them")
    copied = [input_schema.field(c) for c in dict.fromkeys([*key, *passthrough])]
    return pa.schema([*copied, *PREDICTION_FIELDS])


class Predictor:
    """A loaded model version that turns input batches into prediction batches."""

    def __init__(self, lake: DeltaLake, version: ModelVersion, model_conf: ModelConfig,
                 conf: PredictionConfig, run_id: str, input_schema: pa.Schema) -> None:
        self.version = version
        self.conf = conf
        self.run_id = run_id
        try:
            self.estimator = load_model(version.artifact, version.artifact.sha256,
                                        trusted=model_conf.trusted_types,
                                        storage_options=lake.storage_options)
        except ArtifactIntegrityError as e:
            # The operator needs the version first (alerts keep 300 characters), then a way
            # out; the file's path and both checksums follow.
            mv = f"{version.model}@{version.version}"
            raise ArtifactIntegrityError(
                f"{mv} ({conf.model_ref}) refused, nothing predicted: {e.msg}. Restore the "
                f"artifact from a backup, or point the alias at another version (`silta "
                f"models rollback {version.model}`, `silta models promote {version.model} "
                "VERSION`), or train a new version") from e
        self.spec = FeatureSpec.from_dict(version.params[SPEC_KEY])
        self.key = list(version.signature.get("key") or model_conf.key)
        missing = [c for c in [*self.key, *conf.passthrough, *self.spec.columns]
                   if c not in input_schema.names]
        if missing:
            raise UsageError(f"input table {conf.input!r} lacks column(s) {missing} that "
                             f"{version.model}@{version.version} or the prediction needs")
        self.threshold = (conf.min_confidence if conf.min_confidence is not None
                          else model_conf.min_confidence)
        self.schema = output_schema(input_schema, self.key, conf.passthrough)
        self.predicted_at = dt.datetime.now(dt.UTC)
        self.rows = 0
        self.flagged = 0

    @property
    def input_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.key, *self.conf.passthrough, *self.spec.columns]))

    def batch(self, data: pa.RecordBatch) -> pa.RecordBatch:
        preds = predict_top_k(self.estimator, prepare_frame(pa.Table.from_batches([data]),
                                                             self.spec), self.conf.top_k)
        n = data.num_rows
        confidence = np.asarray(preds.confidence, dtype=float)
        if self.threshold is None:
            review = np.zeros(n, dtype=bool)
        else:  # a row without a probability cannot be trusted either
            review = ~(confidence >= self.threshold)
        top = [[{"code": c, "probability": None if p != p else float(p)}
                for c, p in zip(codes, probs, strict=True)]
               for codes, probs in zip(preds.top_codes, preds.top_probabilities, strict=True)]
        columns = [data.column(c) for c in dict.fromkeys([*self.key, *self.conf.passthrough])]
        columns += [
            pa.array(preds.predicted, pa.string()),
            pa.array(confidence, pa.float64(), mask=np.isnan(confidence)),
            pa.array(review, pa.bool_()), pa.array(top, TOP_K_TYPE),
            pa.repeat(pa.scalar(self.version.model, pa.string()), n),
            pa.repeat(pa.scalar(self.version.version, pa.int64()), n),
            pa.repeat(pa.scalar(self.run_id, pa.string()), n),
            pa.repeat(pa.scalar(self.predicted_at, PREDICTION_FIELDS[-1].type), n),
        ]
        self.rows += n
        self.flagged += int(review.sum())
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def stream(self, source: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        for data in source:
            if data.num_rows:
                yield self.batch(data)


def _first(batches: Iterator[pa.RecordBatch]) -> tuple[pa.RecordBatch | None,
                                                      Iterator[pa.RecordBatch]]:
    """The first batch and the stream again with it in front (to skip empty ranges)."""
    first = next(batches, None)
    if first is None:
        return None, iter(())

    def again() -> Iterator[pa.RecordBatch]:
        yield first
        yield from batches

    return first, again()


def run_prediction(lake: DeltaLake, conf: PredictionConfig, model_conf: ModelConfig, *,
                   run_id: str, agent: str) -> JobOutcome:
    """Predict the input's new rows with the model the alias names now."""
    out = JobOutcome("predict", conf.name, run_id, table=conf.output)
    registry = ModelRegistry(lake)
    for attempt in range(PLAN_ATTEMPTS):
        try:
            unit = plan(lake, registry, conf)
        except NotFoundError as e:
            if e.kind not in ("alias", "model"):
                raise  # a pinned version that does not exist is a mistake, not a wait
            # nothing to predict with yet: the first training, or the first promotion,
            # has not happened (predictions that follow a training run after it)
            out.status = "skipped"
            out.message = (f"{conf.model_ref} does not exist yet, so nothing is predicted: "
                           f"{e.msg}")
            return out
        if unit is None:
            out.message = f"up to date: {conf.input} has no rows newer than the last run"
            table = lake.open(conf.output)
            out.table_version = table.version() if table is not None else None
            return out
        out.model, out.model_version = unit.model.model, unit.model.version
        try:
            return _predict(lake, conf, model_conf, unit, run_id, agent, out)
        except (CommitConflictError, StoreError) as e:
            if not e.retriable or attempt + 1 == PLAN_ATTEMPTS:
                raise
            log.info("predict=%s: %s; planning again", conf.name, e)
            time.sleep(min(2.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _predict(lake: DeltaLake, conf: PredictionConfig, model_conf: ModelConfig, unit: Plan,
             run_id: str, agent: str, out: JobOutcome) -> JobOutcome:
    input_schema = lake.schema(conf.input, unit.to)
    assert input_schema is not None  # plan() found the table
    predictor = Predictor(lake, unit.model, model_conf, conf, run_id, input_schema)
    source = added_rows(lake, conf.input, unit.after, unit.to,
                        columns=predictor.input_columns, batch_rows=conf.batch_rows)
    first, batches = _first(predictor.stream(source))
    span = f"({'start' if unit.after is None else unit.after}, {unit.to}]"
    mv = f"{unit.model.model}@{unit.model.version}"
    out.inputs = [{"table": conf.input, "from_version": unit.after, "to_version": unit.to},
                  {"model": unit.model.model, "version": unit.model.version,
                   "artifact_sha256": unit.model.artifact.sha256, "ref": conf.model_ref}]
    if first is None:
        out.message = f"versions {span} of {conf.input} added no rows"
        return out
    metadata = {
        "silta.job": f"predict:{conf.name}", "silta.run_id": run_id, "silta.agent": agent,
        "silta.model": unit.model.model, "silta.model_version": str(unit.model.version),
        "silta.model_sha256": unit.model.artifact.sha256, "silta.input": conf.input,
        "silta.input_from": "" if unit.after is None else str(unit.after),
        "silta.input_to": str(unit.to), "silta.source": f"lake:{conf.input}",
    }
    # the input is read from Delta while delta-rs writes the output: off its runtime
    reader = off_runtime(predictor.schema, batches)
    result = lake.commit_batch(conf.output, reader, app_id=app_id(conf.name), seq=unit.to + 1,
                               mode="append", schema_merge=True, metadata=metadata,
                               follows=unit.follows)
    out.table_version = result.version
    if result.already:
        # Landed by an earlier attempt (or a later range covers it): nothing new here.
        out.message = f"versions {span} of {conf.input} were predicted already"
        return out
    out.committed, out.rows = True, predictor.rows
    # what a replay needs to predict the range again the same way, today's config aside
    out.detail = {"prediction": conf.model_dump(mode="json"), "threshold": predictor.threshold,
                  "key": predictor.key}
    out.outputs = [{"table": conf.output, "version": result.version, "rows": predictor.rows}]
    share = predictor.flagged / predictor.rows if predictor.rows else 0.0
    out.metrics = {"rows": predictor.rows, "needs_review": predictor.flagged,
                   "needs_review_share": share, "min_confidence": predictor.threshold}
    out.message = (f"{predictor.rows} row(s) of {conf.input} {span} predicted with {mv}; "
                   f"{predictor.flagged} ({share:.0%}) flagged for manual coding")
    log.info("predict=%s %s -> %s version %d", conf.name, out.message, conf.output,
             result.version)
    return out


def predict_range(lake: DeltaLake, conf: PredictionConfig, model_conf: ModelConfig,
                  version: ModelVersion, after: int | None, to: int, run_id: str) -> pa.Table:
    """The predictions of a range in memory, nothing written (for replays)."""
    input_schema = lake.schema(conf.input, to)
    if input_schema is None:
        raise NotFoundError("table", conf.input)
    predictor = Predictor(lake, version, model_conf, conf, run_id, input_schema)
    source = added_rows(lake, conf.input, after, to, columns=predictor.input_columns,
                        batch_rows=conf.batch_rows)
    return pa.Table.from_batches(list(predictor.stream(source)), schema=predictor.schema)
