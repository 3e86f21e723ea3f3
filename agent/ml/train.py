"""Training: fit a model on pinned versions of its tables, evaluate it, register it.

1. The training table (and the labels table, joined on the key) are read at the
   versions current when the run starts; those versions, the row count and a content
   hash of the rows used go into the registry, so the data can be read again by time
   travel (``silta runs replay``).
2. Rows are sorted by key and split by a hash of key and seed: the split and the fit do
   not depend on file order, and a held-out row stays held out for the next version.
3. The model is fitted, evaluated on the held-out rows overall and per segment, and
   explained (permutation importance, top terms); it is registered with its model card.
4. Promotion follows the model's policy: a challenger is compared with the champion on
   the same held-out rows; with ``auto`` a better one becomes champion, with ``manual``
   it waits as ``challenger`` for an operator's ``silta models approve``.

A run whose inputs and config equal those of the latest version is skipped (nothing
would change) unless forced.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from agent.codeinfo import code_info, code_version, library_versions
from agent.jsonsafe import json_safe
from agent.ml import card as cards
from agent.ml.artifacts import load_model, save_model, save_version_file
from agent.ml.config import DEFAULT_MIN_CONFIDENCE, POLICY_FIELDS, ModelConfig
from agent.ml.content_hash import canonical_order, column_hashes, combine, table_hash
from agent.ml.estimators import (
    FeatureSpec,
    Predictions,
    build_estimator,
    classes_of,
    feature_spec,
    predict_top_k,
    prepare_frame,
)
from agent.ml.evaluate import (
    compute_metrics,
    confidence_coverage,
    primary_gap,
    segment_metrics,
    split_mask,
)
from agent.ml.explain import influential_features, top_terms
from agent.ml.registry import AWAITING_APPROVAL, ModelRegistry, ModelVersion
from agent.ml.registry import CHALLENGER_ALIAS as CHALLENGER
from agent.ml.registry import CHAMPION_ALIAS as CHAMPION
from agent.outcome import JobOutcome
from connectors.errors import (
    ArtifactIntegrityError,
    NotFoundError,
    SchemaMismatchError,
    SiltaError,
    UsageError,
)
from connectors.lake import DeltaLake

log = logging.getLogger("silta.train")

#: the fields of a model's config that shape the fitted model: its recipe, kept in the
#: registry so a version can be fitted again without today's config
RECIPE_EXCLUDES = set(POLICY_FIELDS)
EVAL_TOP_K = 3
#: metric differences within this are rounding, not change: one row of 20 is a drop of
#: 0.05, which 0.9 - 0.85 computes as 0.05000000000000004
METRIC_TOLERANCE = 1e-9
#: the key of the resolved feature columns (text / numeric / categorical) in a recipe
SPEC_KEY = "feature_spec"


@dataclass
class TrainingData:
    """The labelled rows of one training run, sorted by key."""

    table: pa.Table
    inputs: list[dict[str, Any]]
    content_hash: str
    unlabelled: int

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


@dataclass
class FitResult:
    """A fitted estimator and what its evaluation on the held-out rows found."""

    estimator: Any
    spec: FeatureSpec
    classes: list[str]
    train_rows: int
    eval_rows: int
    eval_table: pa.Table  # the held-out rows (key, features, segments, label)
    eval_predictions: Predictions
    metrics: dict[str, Any]
    segment_gaps: list[dict[str, Any]]
    importance: list[dict[str, Any]]
    terms: dict[str, list[str]]
    output_hashes: dict[str, str]
    output_hash: str
    class_counts: dict[str, int]  # training rows per class


def recipe(conf: ModelConfig) -> dict[str, Any]:
    """What shapes the fitted model, as JSON (stored with every version)."""
    return conf.model_dump(mode="json", exclude=RECIPE_EXCLUDES)


def config_from_recipe(data: Mapping[str, Any]) -> ModelConfig:
    """The model config a version was fitted with (for replays), from its recipe."""
    known = {k: v for k, v in data.items() if k in ModelConfig.model_fields}
    return ModelConfig.model_validate(known)


# -- data -----------------------------------------------------------------------------
def _columns(conf: ModelConfig) -> tuple[list[str], list[str]]:
    """(columns read from the training table, columns read from the labels table)."""
    wanted = [*conf.key, *conf.text_features, *conf.features]
    wanted += [s for s in conf.segments if s not in wanted]
    if conf.labels_table is None:
        return [*wanted, conf.label], []
    return wanted, [*conf.key, conf.label]


def _read(lake: DeltaLake, table: str, version: int, columns: list[str], role: str
          ) -> pa.Table:
    schema = lake.schema(table, version)
    if schema is None:
        raise NotFoundError("table", table, "the model's tables must exist in the lake; "
                            "run the syncs that fill them first")
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise SchemaMismatchError(
            f"{role} table {table!r} at version {version} lacks column(s) {missing}; it has "
            f"{', '.join(n for n in schema.names if not n.startswith('_silta_'))}")
    return _plain(lake.read(table, version=version, columns=columns))


def _plain(table: pa.Table) -> pa.Table:
    """View types (the change feed's) as plain strings: joins and sorts take those."""
    fields = []
    for f in table.schema:
        t = f.type
        if pa.types.is_string_view(t) or pa.types.is_large_string(t):
            t = pa.string()
        fields.append(pa.field(f.name, t))
    return table.cast(pa.schema(fields))


def _check_unique(table: pa.Table, key: list[str], what: str) -> None:
    counts = table.group_by(key).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        sample = ", ".join(str(tuple(r[k] for k in key) if len(key) > 1 else r[key[0]])
                           for r in repeated.slice(0, 3).to_pylist())
        raise SchemaMismatchError(
            f"{what} has {repeated.num_rows} key value(s) on more than one row (e.g. "
            f"{sample}); a training row needs one label: keep one row per key (a sync "
            'with mode = "merge" does)')


def load_training_data(lake: DeltaLake, conf: ModelConfig,
                       versions: Mapping[str, int] | None = None) -> TrainingData:
    """The labelled rows at the pinned ``versions`` (default: each table's latest)."""
    versions = dict(versions or {})
    wanted, label_cols = _columns(conf)
    tables = [conf.training_table] + ([conf.labels_table] if conf.labels_table else [])
    for t in tables:
        if t not in versions:
            versions[t] = lake.require(t).version()
    features = _read(lake, conf.training_table, versions[conf.training_table], wanted,
                     "training")
    inputs: list[dict[str, Any]] = [{"table": conf.training_table, "role": "features",
                                     "version": versions[conf.training_table],
                                     "rows": features.num_rows}]
    _check_unique(features, conf.key, f"training table {conf.training_table!r}")
    if conf.labels_table is not None:
        labels = _read(lake, conf.labels_table, versions[conf.labels_table], label_cols,
                       "labels")
        inputs.append({"table": conf.labels_table, "role": "labels",
                       "version": versions[conf.labels_table], "rows": labels.num_rows})
        _check_unique(labels, conf.key, f"labels table {conf.labels_table!r}")
        joined = features.join(labels, keys=conf.key, join_type="left outer")
    else:
        joined = features
    label = joined.column(conf.label)
    labelled = joined.filter(pc.is_valid(label))
    unlabelled = joined.num_rows - labelled.num_rows
    labelled = labelled.set_column(labelled.schema.get_field_index(conf.label), conf.label,
                                   pc.cast(labelled.column(conf.label), pa.string()))
    ordered = canonical_order(labelled, conf.key).select([*wanted, conf.label]
                                                         if conf.label not in wanted
                                                         else wanted)
    return TrainingData(table=ordered, inputs=inputs,
                        content_hash=table_hash(ordered, conf.key), unlabelled=unlabelled)


# -- fitting and evaluation -------------------------------------------------------------
def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=None)


def fit_and_evaluate(conf: ModelConfig, data: TrainingData) -> FitResult:
    """Fit on the training part, evaluate on the held-out part (deterministic)."""
    if data.rows < conf.min_training_rows:
        raise UsageError(f"only {data.rows} labelled row(s) for model training; the model "
                         f"needs at least {conf.min_training_rows} (min_training_rows)")
    frame = _frame(data.table)
    mask = split_mask(frame[conf.key], conf.seed, conf.split.test_fraction)
    train_df, eval_df = frame[~mask], frame[mask]
    if len(eval_df) == 0 or len(train_df) == 0:
        raise UsageError(f"the split left {len(train_df)} training and {len(eval_df)} "
                         f"held-out rows of {data.rows}; add labelled rows or change "
                         "split.test_fraction")
    y_train = train_df[conf.label].astype(str).tolist()
    if len(set(y_train)) < 2:
        raise UsageError(f"the training rows hold one class only ({y_train[0]!r}); a "
                         "classifier needs at least two")
    spec = feature_spec(data.table.schema, conf.text_features, conf.features)
    estimator = build_estimator(conf.estimator, conf.params, spec, conf.seed,
                                preprocess=conf.preprocess)
    try:
        estimator.fit(prepare_frame(train_df, spec), y_train)
    except SiltaError:
        raise
    except (ValueError, TypeError) as e:
        raise UsageError(f"fitting {conf.estimator} failed: {e}") from e
    x_eval = prepare_frame(eval_df, spec)
    y_eval = eval_df[conf.label].astype(str).tolist()
    preds = predict_top_k(estimator, x_eval, EVAL_TOP_K)
    overall = compute_metrics(y_eval, preds.predicted, conf.metrics)
    overall["n"] = len(y_eval)
    segments = (segment_metrics(y_eval, preds.predicted, eval_df[conf.segments], conf.metrics)
                if conf.segments else {})
    coverage = confidence_coverage(y_eval, preds.predicted, preds.confidence)
    low_at = conf.min_confidence if conf.min_confidence is not None else DEFAULT_MIN_CONFIDENCE
    # the share monitors compare new predictions with (NaN confidence counts as low)
    low = {"threshold": low_at,
           "share": float(np.mean(~(np.asarray(preds.confidence) >= low_at)))}
    metrics = json_safe({"overall": overall, "segments": segments, "coverage": coverage,
                         "low_confidence": low,
                         "primary_metric": conf.primary_metric, "train_rows": len(train_df),
                         "eval_rows": len(eval_df)})
    eval_table = pa.Table.from_pandas(eval_df, preserve_index=False)
    output = eval_output(eval_table, conf.key, preds)
    hashes = column_hashes(output, conf.key)
    return FitResult(
        estimator=estimator, spec=spec, classes=classes_of(estimator),
        train_rows=len(train_df), eval_rows=len(eval_df), eval_table=eval_table,
        eval_predictions=preds, metrics=metrics,
        segment_gaps=primary_gap(segments, conf.primary_metric) if segments else [],
        importance=json_safe(influential_features(estimator, x_eval, y_eval,
                                                  seed=conf.seed)),
        terms=top_terms(estimator), output_hashes=hashes,
        output_hash=combine(hashes, output.num_rows),
        class_counts=dict(sorted(Counter(y_train).items())))


def eval_output(eval_table: pa.Table, key: list[str], preds: Predictions) -> pa.Table:
    """The held-out rows' predictions: what a replay compares, column by column."""
    top = [json.dumps([[c, None if p != p else round(float(p), 12)] for c, p in
                       zip(codes, probs, strict=True)])
           for codes, probs in zip(preds.top_codes, preds.top_probabilities, strict=True)]
    return pa.table({
        **{k: eval_table.column(k) for k in key},
        "predicted": pa.array(preds.predicted, pa.string()),
        "confidence": pa.array(np.asarray(preds.confidence, dtype=float), pa.float64()),
        "top_k": pa.array(top, pa.string()),
    })


def signature(data: TrainingData, spec: FeatureSpec, conf: ModelConfig,
              classes: list[str]) -> dict[str, Any]:
    schema = data.table.schema
    roles = {c: r for r, cols in spec.as_dict().items() for c in cols}
    return {
        "inputs": [{"name": c, "type": str(schema.field(c).type), "role": roles[c]}
                   for c in spec.columns],
        "key": list(conf.key),
        "outputs": {"label": conf.label, "classes": classes},
    }


# -- promotion --------------------------------------------------------------------------
def champion_metric(registry: ModelRegistry, champion: ModelVersion, conf: ModelConfig,
                    fit: FitResult) -> tuple[float, dict[str, Any]] | None:
    """The champion's primary metric on the candidate's held-out rows, overall and per
    segment (None: it cannot be evaluated on them)."""
    spec = FeatureSpec.from_dict(champion.params.get(SPEC_KEY, {}))
    missing = [c for c in spec.columns if c not in fit.eval_table.column_names]
    if missing:
        log.warning("champion %s@%d needs column(s) %s the new data lacks; it cannot be "
                    "compared", champion.model, champion.version, missing)
        return None
    estimator = load_model(champion.artifact, champion.artifact.sha256,
                           trusted=conf.trusted_types,
                           storage_options=registry.lake.storage_options)
    preds = predict_top_k(estimator, prepare_frame(fit.eval_table, spec), 1)
    y = pc.cast(fit.eval_table.column(conf.label), pa.string()).to_pylist()
    overall = float(compute_metrics(y, preds.predicted, [conf.primary_metric])
                    [conf.primary_metric])
    segments = (segment_metrics(y, preds.predicted,
                                fit.eval_table.select(conf.segments).to_pandas(),
                                [conf.primary_metric]) if conf.segments else {})
    return overall, segments


def segment_drops(conf: ModelConfig, candidate: Mapping[str, Any],
                  champion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Segments where the candidate falls below the champion by more than
    ``max_segment_drop`` on the same held-out rows, worst first."""
    if conf.max_segment_drop is None:
        return []
    metric, out = conf.primary_metric, []
    for column, values in candidate.items():
        for value, figures in values.items():
            theirs = champion.get(column, {}).get(value, {})
            if figures.get("n", 0) < conf.segment_min_rows or metric not in theirs:
                continue
            drop = float(theirs[metric]) - float(figures[metric])
            if drop - conf.max_segment_drop > METRIC_TOLERANCE:
                out.append({"segment": f"{column}={value}", "rows": int(figures["n"]),
                            "candidate": float(figures[metric]),
                            "champion": float(theirs[metric]), "drop": drop})
    return sorted(out, key=lambda d: -d["drop"])


def decide(registry: ModelRegistry, conf: ModelConfig, model: str, version: int,
           fit: FitResult, by: str) -> dict[str, Any]:
    """Apply the promotion policy to a new version; returns the decision and its reason."""
    metric = conf.primary_metric
    candidate = float(fit.metrics["overall"][metric])
    current = registry.aliases(model).get(CHAMPION)
    decision: dict[str, Any] = {"policy": conf.promotion, "metric": metric,
                                "candidate": candidate, "champion_version": current,
                                "champion": None, "improvement": None,
                                "eval_rows": fit.eval_rows}
    if current is None:
        if conf.promotion == "auto":
            reason = (f"first version: {metric} {candidate:.4f} on {fit.eval_rows} held-out "
                      "rows")
            registry.set_alias(model, CHAMPION, version, by=by, reason=reason)
            return {**decision, "decision": "promoted", "reason": reason}
        reason = (f"no champion yet; {metric} {candidate:.4f} on {fit.eval_rows} held-out rows;"
                  f" {AWAITING_APPROVAL} (`silta models approve {model} {version}`)")
        registry.set_alias(model, CHALLENGER, version, by=by, reason=reason)
        return {**decision, "decision": "awaiting approval", "reason": reason}
    try:
        scored = champion_metric(registry, registry.get(model, current), conf, fit)
    except ArtifactIntegrityError as e:
        log.error("champion %s@%d cannot be loaded: %s", model, current, e)
        scored = None
    if scored is None:
        reason = (f"champion v{current} cannot be evaluated on these held-out rows; v{version}"
                  f" has {metric} {candidate:.4f}: an operator decides")
        registry.set_alias(model, CHALLENGER, version, by=by, reason=reason)
        return {**decision, "decision": "awaiting approval", "reason": reason}
    champ_value, champ_segments = scored
    gain = candidate - champ_value
    drops = segment_drops(conf, fit.metrics.get("segments", {}), champ_segments)
    decision.update(champion=champ_value, improvement=gain, segment_drops=drops)
    compared = (f"v{version} {metric} {candidate:.4f} vs champion v{current} "
                f"{champ_value:.4f} ({gain:+.4f}) on the same {fit.eval_rows} held-out rows")
    better = gain > METRIC_TOLERANCE and gain >= conf.min_improvement - METRIC_TOLERANCE
    if better and drops:
        worst = drops[0]
        reason = (f"{compared}; but segment {worst['segment']} falls from "
                  f"{worst['champion']:.4f} to {worst['candidate']:.4f} "
                  f"(-{worst['drop']:.4f}, more than max_segment_drop "
                  f"{conf.max_segment_drop}) on {worst['rows']} rows: the champion stays")
        registry.set_alias(model, CHALLENGER, version, by=by, reason=reason)
        return {**decision, "decision": "rejected", "reason": reason}
    if better and conf.promotion == "auto":
        reason = f"{compared}; beats it by at least {conf.min_improvement}"
        registry.set_alias(model, CHAMPION, version, by=by, reason=reason)
        return {**decision, "decision": "promoted", "reason": reason}
    if better:
        reason = (f"{compared}; {AWAITING_APPROVAL} (`silta models approve {model} "
                  f"{version}`)")
        registry.set_alias(model, CHALLENGER, version, by=by, reason=reason)
        return {**decision, "decision": "awaiting approval", "reason": reason}
    reason = (f"{compared}; does not beat it by {conf.min_improvement}: the champion stays")
    registry.set_alias(model, CHALLENGER, version, by=by, reason=reason)
    return {**decision, "decision": "kept champion", "reason": reason}


# -- the model card -----------------------------------------------------------------------
def card_facts(model: str, version: int, conf: ModelConfig, data: TrainingData,
               fit: FitResult, sig: dict[str, Any], training: dict[str, Any],
               artifact_uri: str, artifact_sha256: str, created_by: str) -> cards.CardFacts:
    info = code_info()
    return cards.CardFacts(
        model=model, version=version, description=conf.description,
        created_at=dt.datetime.now(dt.UTC), created_by=created_by, flavor="sklearn",
        estimator=conf.estimator, params=dict(conf.params), features=fit.spec.as_dict(),
        label=conf.label, classes=fit.classes, signature=sig, training_data=training,
        split={"method": "hash", "test_fraction": conf.split.test_fraction,
               "seed": conf.seed},
        metrics=fit.metrics, segment_gaps=fit.segment_gaps,
        influential_features=fit.importance, top_terms=fit.terms,
        code_version=code_version() if info["git_commit"] else None,
        libraries=library_versions(), config_hash=conf.config_hash(),
        artifact_uri=artifact_uri, artifact_sha256=artifact_sha256,
        promotion=conf.promotion, min_confidence=conf.min_confidence,
        text=cards.card_text_from_config(conf.card.model_dump(mode="json")))


def write_card(lake: DeltaLake, facts: cards.CardFacts) -> dict[str, Any]:
    card = cards.build_card(facts)
    text = json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    options = lake.storage_options
    save_version_file(lake.uri, options, facts.model, facts.version, "card.json",
                      text.encode())
    save_version_file(lake.uri, options, facts.model, facts.version, "card.md",
                      cards.render_markdown(card).encode())
    return card


# -- the job ----------------------------------------------------------------------------
def _latest_same_config(registry: ModelRegistry, model: str, conf: ModelConfig
                        ) -> ModelVersion | None:
    """The latest version when it was fitted with this config (else None)."""
    try:
        latest = registry.versions(model)[-1]
    except NotFoundError:
        return None
    return latest if latest.config_hash == conf.config_hash() else None


def _trained_versions(version: ModelVersion) -> dict[str, int]:
    return {str(i["table"]): int(i["version"])
            for i in version.training_data.get("inputs", [])}


def run_training(lake: DeltaLake, model: str, conf: ModelConfig, *, run_id: str,
                 name: str, force: bool = False, by: str | None = None) -> JobOutcome:
    """Fit, evaluate, register and (per policy) promote one version of ``model``."""
    by = by or f"{getpass.getuser()}@{socket.gethostname()}"
    out = JobOutcome("train", name, run_id, model=model, config_hash=conf.config_hash())
    registry = ModelRegistry(lake)
    tables = [conf.training_table] + ([conf.labels_table] if conf.labels_table else [])
    versions = {t: lake.require(t).version() for t in tables}
    latest = None if force else _latest_same_config(registry, model, conf)
    if latest is not None and _trained_versions(latest) == versions:
        out.status, out.model_version = "skipped", latest.version
        out.message = (f"up to date: {model}@{latest.version} was trained on the same data "
                       "and config (force a run to train again)")
        out.inputs = latest.training_data.get("inputs", [])
        return out
    data = load_training_data(lake, conf, versions)
    same = latest if latest is not None and (
        latest.training_data.get("content_hash") == data.content_hash) else None
    if same is not None:
        # new versions of the tables, but not of the labelled rows (new unlabelled answers)
        out.status, out.model_version = "skipped", same.version
        out.message = (f"up to date: the labelled rows and the config are those "
                       f"{model}@{same.version} was trained on (content "
                       f"{data.content_hash[:12]}); force a run to train again")
        out.inputs = data.inputs
        return out
    log.info("train=%s model=%s: %d labelled row(s) (%d unlabelled) from %s", name, model,
             data.rows, data.unlabelled,
             ", ".join(f"{i['table']}@{i['version']}" for i in data.inputs))
    fit = fit_and_evaluate(conf, data)
    sig = signature(data, fit.spec, conf, fit.classes)
    training = {"table": conf.training_table, "version": versions[conf.training_table],
                "rows": data.rows, "content_hash": data.content_hash,
                "labels": ({"table": conf.labels_table, "version": versions[conf.labels_table]}
                           if conf.labels_table else None),
                "inputs": data.inputs, "train_rows": fit.train_rows,
                "eval_rows": fit.eval_rows, "unlabelled_rows": data.unlabelled,
                "class_counts": fit.class_counts, "run_id": run_id}
    card_box: dict[str, Any] = {}

    def on_saved(version: int, artifact: Any) -> None:
        facts = card_facts(model, version, conf, data, fit, sig, training, artifact.uri,
                           artifact.sha256, by)
        card_box["card"] = write_card(lake, facts)

    registered = registry.register(
        model, save=lambda v: save_model(lake.uri, lake.storage_options, model, v,
                                         fit.estimator),
        flavor="sklearn", signature=sig, params={**recipe(conf), SPEC_KEY:
                                                 fit.spec.as_dict()},
        metrics=fit.metrics, training_data=training, code_version=code_version(),
        libraries=library_versions(), config_hash=conf.config_hash(), created_by=by,
        on_saved=on_saved)
    decision = decide(registry, conf, model, registered.version, fit, by)
    log.info("train=%s registered %s@%d (%s %.4f): %s", name, model, registered.version,
             conf.primary_metric, fit.metrics["overall"][conf.primary_metric],
             decision["reason"])
    out.committed, out.model_version = True, registered.version
    out.rows = data.rows
    out.message = f"{model}@{registered.version}: {decision['decision']} ({decision['reason']})"
    out.inputs = data.inputs
    out.outputs = [{"model": model, "version": registered.version,
                    "artifact_uri": registered.artifact.uri,
                    "artifact_sha256": registered.artifact.sha256}]
    out.metrics = {"overall": fit.metrics["overall"], "primary_metric": conf.primary_metric,
                   "promotion": decision, "rows": data.rows}
    out.detail = {"content_hash": data.content_hash, "output_hash": fit.output_hash,
                  "output_columns": fit.output_hashes, "recipe": recipe(conf),
                  "seed": conf.seed}
    return out
