"""`silta runs replay RUN`: run a past training or prediction again and compare.

A replay uses only what the run recorded, never today's config: the tables at the
versions it read (time travel), the model version by its sha256-checked artifact, the
recipe stored with the model version, the prediction settings stored with the run. It
writes nothing. The output is compared column by column by content hash (row order
and layout do not count), so the answer is either "identical" or the columns that
differ, with the code and library versions then and now to explain why.

- a training's output is its predictions on the held-out rows (and its metrics);
- a prediction's output is the rows it wrote, ``run_id`` and ``predicted_at`` aside.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.compute as pc

from agent.codeinfo import code_version, library_versions
from agent.ml.config import PredictionConfig
from agent.ml.content_hash import column_hashes, combine
from agent.ml.predict import RUN_COLUMNS, predict_range
from agent.ml.registry import ModelRegistry
from agent.ml.train import config_from_recipe, fit_and_evaluate, load_training_data
from agent.runs import get_run
from connectors.errors import ArtifactIntegrityError, NotFoundError, UsageError
from connectors.lake import DeltaLake

log = logging.getLogger("silta.replay")


def replay(lake: DeltaLake, run_id: str) -> dict[str, Any]:
    """Re-run ``run_id`` from its recorded inputs; the comparison as stable keys."""
    run = get_run(lake, run_id)
    if run["status"] != "ok" or not run["outputs"]:
        raise UsageError(f"run {run_id} ({run['kind']} {run['name']}) finished "
                         f"{run['status']} without output; only runs that produced "
                         "something can be replayed")
    if run["kind"] == "train":
        result = _replay_train(lake, run)
    elif run["kind"] == "predict":
        result = _replay_predict(lake, run)
    else:
        raise UsageError(f"run {run_id} is a {run['kind']} run; only train and predict runs "
                         "can be replayed (a sync's input is on-prem, and its commit is "
                         "already verified by checksums)")
    then = run.get("code_version")
    result.update(run_id=run_id, kind=run["kind"], name=run["name"],
                  code_then=then, code_now=code_version(),
                  libraries_now=library_versions())
    return result


def _compare(original: dict[str, str], again: dict[str, str], rows: tuple[int, int]
             ) -> dict[str, Any]:
    columns = sorted(set(original) | set(again))
    differ = [c for c in columns if original.get(c) != again.get(c)]
    return {"identical": not differ and rows[0] == rows[1],
            "output_hash": combine(original, rows[0]), "replay_hash": combine(again, rows[1]),
            "rows": rows[0], "replay_rows": rows[1], "differing_columns": differ,
            "columns": columns}


def _replay_train(lake: DeltaLake, run: dict[str, Any]) -> dict[str, Any]:
    registry = ModelRegistry(lake)
    version = registry.get(str(run["model"]), int(run["model_version"]))
    conf = config_from_recipe(version.params)
    versions = {str(i["table"]): int(i["version"]) for i in version.training_data["inputs"]}
    data = load_training_data(lake, conf, versions)
    recorded = version.training_data.get("content_hash")
    fit = fit_and_evaluate(conf, data)
    detail = run.get("detail") or {}
    original = detail.get("output_columns") or {}
    result = _compare(original, fit.output_hashes,
                      (int(version.training_data.get("eval_rows") or 0), fit.eval_rows))
    metrics_then = (run.get("metrics") or {}).get("overall") or {}
    metrics_now = fit.metrics["overall"]
    result.update(
        model=version.model, version=version.version,
        inputs=[f"{t}@{v}" for t, v in versions.items()],
        data_identical=recorded == data.content_hash,
        metrics={k: {"then": metrics_then.get(k), "now": metrics_now.get(k)}
                 for k in sorted(set(metrics_then) | set(metrics_now))})
    if not result["data_identical"]:
        result["identical"] = False
        result["differing_columns"] = ["(training data)", *result["differing_columns"]]
    return result


def _replay_predict(lake: DeltaLake, run: dict[str, Any]) -> dict[str, Any]:
    source = next((i for i in run["inputs"] if "table" in i), None)
    model_in = next((i for i in run["inputs"] if "model" in i), None)
    target = run["outputs"][0]
    detail = run.get("detail") or {}
    if source is None or model_in is None or "prediction" not in detail:
        raise UsageError(f"run {run['run_id']} does not record its inputs fully; it cannot be "
                         "replayed")
    registry = ModelRegistry(lake)
    version = registry.get(str(model_in["model"]), int(model_in["version"]))
    if version.artifact.sha256 != model_in.get("artifact_sha256"):
        raise ArtifactIntegrityError(
            f"{version.model}@{version.version} is registered with sha256 "
            f"{version.artifact.sha256}, but run {run['run_id']} used "
            f"{model_in.get('artifact_sha256')}; the registry was changed")
    model_conf = config_from_recipe(version.params)
    conf = PredictionConfig.model_validate({**detail["prediction"],
                                            "min_confidence": detail.get("threshold")})
    key = list(detail.get("key") or version.signature.get("key") or model_conf.key)
    after = source.get("from_version")
    again = predict_range(lake, conf, model_conf, version,
                          None if after is None else int(after), int(source["to_version"]),
                          str(run["run_id"]))
    table = lake.require(str(target["table"]), int(target["version"]))
    written = table.to_pyarrow_dataset().to_table(
        filter=pc.field("run_id") == str(run["run_id"]))
    if written.num_rows == 0:
        raise NotFoundError("rows of run", str(run["run_id"]),
                            f"{target['table']}@{target['version']} holds none")
    keep = [c for c in again.column_names if c not in RUN_COLUMNS]
    result = _compare(column_hashes(written.select(keep), key),
                      column_hashes(again.select(keep), key),
                      (written.num_rows, again.num_rows))
    result.update(model=version.model, version=version.version,
                  inputs=[f"{conf.input} ({after if after is not None else 'start'}, "
                          f"{source['to_version']}]"],
                  output=f"{target['table']}@{target['version']}")
    return result
