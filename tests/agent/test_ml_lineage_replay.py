"""Lineage back to the source files, replays of trainings and predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agent.lineage import Lineage, lineage, parse_ref, render
from agent.ml.content_hash import column_hashes, table_hash
from agent.ml.replay import replay
from agent.runs import read_runs
from connectors.errors import NotFoundError, UsageError
from tests.agent.ml_env import MlEnv, sha256_of


@pytest.fixture
def env(tmp_path: Path) -> Iterator[MlEnv]:
    e = MlEnv(tmp_path)
    e.sync()
    yield e
    e.close()


def _walk(node: Any, kind: str) -> list[dict[str, Any]]:
    """Nodes of a type ("table", "commit", "model"), or commits of a kind ("sync", ...)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == kind or (node.get("type") == "commit"
                                        and node.get("kind") == kind):
            found.append(node)
        for v in node.values():
            found += _walk(v, kind)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v, kind)
    return found


def _source_files(env: MlEnv, folder: str) -> set[tuple[str, str]]:
    base = env.root / "inbox"
    return {(p.relative_to(base).as_posix(), sha256_of(p))
            for p in (base / folder).glob("*.csv")}


def test_lineage_of_predictions_names_model_data_and_source_files(env: MlEnv) -> None:
    train = env.train()
    first = env.predict()
    answers_v0 = _source_files(env, "responses")
    coded_v0 = _source_files(env, "coded")
    env.add_days(1, coded=False)
    new_day = _source_files(env, "responses") - answers_v0
    env.sync("answers")
    second = env.predict()

    tree = lineage(env.lake, "predictions/codes@1")
    assert (tree["table"], tree["version"], tree["commit_count"]) == ("predictions/codes", 1,
                                                                     2)
    commits = tree["commits"]
    assert [(c["version"], c["kind"], c["run_id"]) for c in commits] == [
        (1, "predict", second.run_id), (0, "predict", first.run_id)]
    newest, oldest = commits
    # the newest predictions came from the new day's file only
    assert (newest["input"]["table"], newest["input"]["after"], newest["input"]["version"]) \
        == ("raw/answers", 0, 1)
    assert {(f["path"], f["sha256"]) for f in _walk(newest["input"], "sync")[0]["files"]} == \
        new_day
    # the first ones from the first three days; the model from those and the coded sample.
    # raw/answers@0 is expanded once (under the model, met first) and referred to after.
    assert oldest["input"] == {"type": "table", "table": "raw/answers", "version": 0,
                               "after": None, "ref": "raw/answers@0", "repeat": True}
    expanded = [t for t in _walk(tree, "table")
                if t["ref"] == "raw/answers@0" and not t.get("repeat")]
    assert len(expanded) == 1
    assert {(f["path"], f["sha256"]) for f in _walk(expanded[0], "sync")[0]["files"]} == \
        answers_v0
    model = newest["model"]
    assert (model["model"], model["version"], model["sha256_matches"]) == ("coder", 1, True)
    assert model["artifact_sha256"] == env.registry.get("coder", 1).artifact.sha256
    assert model["run_id"] == train.run_id and model["run"]["status"] == "ok"
    trained = {t["role"]: t for t in model["trained_on"]}
    assert (trained["features"]["table"], trained["features"]["version"]) == ("raw/answers", 0)
    assert (trained["labels"]["table"], trained["labels"]["version"]) == ("raw/codes", 0)
    label_files = {(f["path"], f["sha256"]) for f in _walk(trained["labels"], "sync")[0]["files"]}
    assert label_files == coded_v0
    # every file of every sync commit reachable from the predictions, exactly the inbox's
    reachable = {(f["path"], f["sha256"]) for s in _walk(tree, "sync") for f in s["files"]}
    assert reachable == answers_v0 | new_day | coded_v0
    # the model is expanded once and referred to after that
    assert oldest["model"].get("repeat") is True
    runs = {c["run"]["run_id"]: c["run"] for c in _walk(tree, "commit") if c.get("run")}
    assert runs[first.run_id]["kind"] == "predict"
    assert {r["kind"] for r in runs.values()} == {"predict", "sync"}

    text = render(tree)
    assert text.splitlines()[0] == "table predictions/codes@1: 2 commit(s)"
    for path, sha in reachable:
        assert f"file {path} sha256 {sha}" in text
    assert f"model coder@1 sha256 {model['artifact_sha256']}" in text
    assert "(shown above)" in text


def test_lineage_of_an_older_version_stops_at_that_version(env: MlEnv) -> None:
    env.train()
    env.predict()
    env.add_days(1, coded=False)
    env.sync("answers")
    env.predict()
    tree = Lineage(env.lake).table("predictions/codes", 0)
    assert [c["version"] for c in tree["commits"]] == [0]
    assert lineage(env.lake, "raw/answers")["commit_count"] == 2
    with pytest.raises(NotFoundError, match=r"predictions/codes@7.*versions are 0..1"):
        lineage(env.lake, "predictions/codes@7")
    with pytest.raises(UsageError, match="TABLE@VERSION"):
        parse_ref("predictions/codes@latest")


def test_replays_of_a_training_and_a_prediction_are_identical(env: MlEnv) -> None:
    train = env.train()
    pred = env.predict()
    # later commits and a new champion do not change what a replay of the past computes
    env.add_days(1)
    env.sync()
    env.train()
    env.predict()

    again = replay(env.lake, train.run_id)
    assert again["identical"] is True, again
    assert again["data_identical"] is True
    assert again["differing_columns"] == []
    assert again["rows"] == again["replay_rows"] == env.registry.get(
        "coder", 1).training_data["eval_rows"]
    assert again["inputs"] == ["raw/answers@0", "raw/codes@0"]
    assert all(m["then"] == m["now"] for m in again["metrics"].values())

    again = replay(env.lake, pred.run_id)
    assert again["identical"] is True, again
    assert (again["rows"], again["replay_rows"]) == (450, 450)
    assert again["output"] == "predictions/codes@0"
    assert set(again["columns"]) >= {"predicted", "confidence", "top_k", "needs_review"}


def test_a_replay_names_the_columns_that_differ(env: MlEnv) -> None:
    # the comparison itself: same rows in another order and layout are identical ...
    a = pa.table({"k": ["b", "a", "c"], "p": ["x", "y", "z"], "c": [0.5, 0.25, 0.75]})
    b = pa.table({"k": pa.array(["a", "b", "c"], pa.large_string()),
                  "p": ["y", "x", "z"], "c": [0.25, 0.5, 0.75]})
    assert column_hashes(a, ["k"]) == column_hashes(b, ["k"])
    assert table_hash(a, ["k"]) == table_hash(b, ["k"])
    # ... and one changed value shows in its column only
    c = b.set_column(2, "c", pa.array([0.25, 0.5, 0.7500001]))
    ha, hc = column_hashes(a, ["k"]), column_hashes(c, ["k"])
    assert [k for k in ha if ha[k] != hc[k]] == ["c"]
    # a null is not an empty string
    d = b.set_column(1, "p", pa.array([None, "x", "z"]))
    e = b.set_column(1, "p", pa.array(["", "x", "z"]))
    assert column_hashes(d, ["k"])["p"] != column_hashes(e, ["k"])["p"]

    # a run without output cannot be replayed; a sync is not replayable
    env.configure(promotion="manual")
    train = env.train()
    skipped = env.predict()
    assert skipped.status == "skipped"
    with pytest.raises(NotFoundError):
        replay(env.lake, skipped.run_id)  # skipped runs leave no lake record
    sync_run = read_runs(env.lake, kind="sync")[0]
    with pytest.raises(UsageError, match="only train and predict runs"):
        replay(env.lake, sync_run["run_id"])
    assert replay(env.lake, train.run_id)["identical"] is True
