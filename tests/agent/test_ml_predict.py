"""Prediction: incremental by Delta version, exactly once, model@alias resolved per run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from agent.ml.artifacts import load_model
from agent.ml.estimators import FeatureSpec, predict_top_k, prepare_frame
from agent.ml.predict import app_id
from agent.ml.train import SPEC_KEY
from agent.runs import read_runs
from connectors.errors import StoreError
from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows
from tests.e2e._cli import delta_table


@pytest.fixture
def env(tmp_path: Path) -> Iterator[MlEnv]:
    e = MlEnv(tmp_path)
    e.sync()
    assert e.train().model_version == 1
    yield e
    e.close()


def _predictions(env: MlEnv) -> Path:
    return env.root / "lake" / "predictions" / "codes"


def test_every_row_is_predicted_once_and_only_new_rows_later(env: MlEnv, duck: Any) -> None:
    first = env.predict()
    assert (first.status, first.committed, first.rows, first.model_version,
            first.table_version) == ("ok", True, 450, 1, 0), first
    again = env.predict()
    assert (again.status, again.committed, again.rows) == ("ok", False, 0)
    assert "up to date" in again.message

    env.add_days(2, coded=False)
    env.sync("answers")
    later = env.predict()
    assert (later.committed, later.rows, later.table_version) == (True, 300, 1)
    assert later.inputs[0] == {"table": "raw/answers", "from_version": 0, "to_version": 1}

    table = _predictions(env)
    answers = env.root / "lake" / "raw" / "answers"
    # an independent reader: every answer exactly once, and nothing that is not an answer
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT response_id) FROM t") == [
        (750, 750)]
    assert duck.execute(
        f"SELECT count(*) FROM delta_scan('{answers}') a FULL JOIN delta_scan('{table}') p "
        "USING (response_id) WHERE a.response_id IS NULL OR p.response_id IS NULL"
    ).fetchall() == [(0,)]
    assert duck_rows(duck, table, "SELECT run_id, count(*) FROM t GROUP BY 1 ORDER BY 2 DESC"
                     ) == [(first.run_id, 450), (later.run_id, 300)]
    # each commit says which input range it holds, under the job's app transaction
    t = env.lake.require("predictions/codes")
    assert t.transaction_version(app_id("code_answers")) == 2  # input version 1, plus one
    entry = env.lake.find_commit("predictions/codes", app_id("code_answers"), 2)
    assert entry is not None
    assert (entry["silta.input_from"], entry["silta.input_to"], entry["silta.model_version"]) \
        == ("0", "1", "1")


def test_predictions_carry_confidence_top_k_and_the_review_flag(env: MlEnv) -> None:
    out = env.predict()
    data = delta_table(_predictions(env))
    assert data.column_names == ["response_id", "language", "predicted", "confidence",
                                 "needs_review", "top_k", "model", "model_version", "run_id",
                                 "predicted_at"]
    rows = data.to_pylist()
    # what the artifact itself predicts for the same answers
    v = env.registry.get("coder", 1)
    answers = env.lake.read("raw/answers").sort_by("response_id")
    expected = predict_top_k(load_model(v.artifact, v.artifact.sha256),
                             prepare_frame(answers, FeatureSpec.from_dict(v.params[SPEC_KEY])),
                             3)
    by_id = {r["response_id"]: r for r in rows}
    ids = answers.column("response_id").to_pylist()
    assert [by_id[i]["predicted"] for i in ids] == expected.predicted
    assert [by_id[i]["confidence"] for i in ids] == pytest.approx(
        expected.confidence.tolist())
    for i, codes, probs in zip(ids, expected.top_codes, expected.top_probabilities,
                               strict=True):
        top = by_id[i]["top_k"]
        assert [t["code"] for t in top] == codes
        assert [t["probability"] for t in top] == pytest.approx(probs)
        assert top[0]["code"] == by_id[i]["predicted"]
        # the model's min_confidence (0.6) decides who goes to the coders
        assert by_id[i]["needs_review"] is (by_id[i]["confidence"] < 0.6)
    flagged = sum(r["needs_review"] for r in rows)
    assert 0 < flagged < len(rows)
    assert out.metrics == {"rows": 450, "needs_review": flagged,
                           "needs_review_share": flagged / 450, "min_confidence": 0.6}
    assert {(r["model"], r["model_version"], r["run_id"]) for r in rows} == {
        ("coder", 1, out.run_id)}
    langs = {r["response_id"]: r["language"] for r in answers.to_pylist()}
    assert all(r["language"] == langs[r["response_id"]] for r in rows)


def test_the_alias_is_resolved_at_each_run(env: MlEnv) -> None:
    assert env.predict().model_version == 1
    v2 = env.train(force=True)
    assert v2.model_version == 2
    env.registry.set_alias("coder", "champion", 1, by="anna", reason="keep v1 for now")
    env.add_days(1, coded=False)
    env.sync("answers")
    assert env.predict().model_version == 1
    # promote between two runs: the second run uses the new champion
    env.registry.set_alias("coder", "champion", 2, by="anna", reason="v2 reviewed")
    env.add_days(1, coded=False)
    env.sync("answers")
    third = env.predict()
    assert (third.model_version, third.rows) == (2, 150)
    data = delta_table(_predictions(env))
    by_version: dict[int, int] = {}
    for r in data.to_pylist():
        by_version[r["model_version"]] = by_version.get(r["model_version"], 0) + 1
    assert by_version == {1: 600, 2: 150}
    run = read_runs(env.lake, run_id=third.run_id)[0]
    assert run["inputs"][1]["version"] == 2
    assert run["inputs"][1]["artifact_sha256"] == env.registry.get("coder", 2).artifact.sha256


def test_before_any_model_is_registered_a_prediction_waits(tmp_path: Path) -> None:
    early = MlEnv(tmp_path)
    early.sync()
    out = early.predict()  # the answers landed first; the training has not run yet
    assert (out.status, out.committed) == ("skipped", False)
    assert "coder@champion does not exist yet" in out.message
    assert "no model is registered yet" in out.message
    assert early.lake.open("predictions/codes") is None
    early.close()


def test_a_tampered_champion_is_refused_and_nothing_is_written(env: MlEnv) -> None:
    v = env.registry.get("coder", 1)
    path = Path(v.artifact.uri)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    out = env.predict()
    assert out.status == "failed" and out.retriable is False
    assert "has sha256" in str(out.error) and "it is not loaded" in str(out.error)
    assert env.lake.open("predictions/codes") is None
    assert read_runs(env.lake, run_id=out.run_id)[0]["status"] == "failed"


def test_a_range_predicted_meanwhile_by_another_run_is_not_written_twice(env: MlEnv) -> None:
    # Two runs plan the same range; the first commits; the second must not add its rows.
    from agent.ml.predict import plan

    conf = env.loaded.config.prediction("code_answers")
    unit = plan(env.lake, env.registry, conf)
    assert unit is not None and (unit.after, unit.to, unit.follows) == (None, 0, None)
    env.predict()
    env.add_days(1, coded=False)
    env.sync("answers")
    # a late writer of the old plan: its range (start, 0] is covered, so it lands nothing
    late = pa.table({"response_id": ["x"], "language": ["fi"]})
    result = env.lake.commit_batch("predictions/codes", late, app_id=app_id("code_answers"),
                                   seq=unit.to + 1, mode="append", schema_merge=True,
                                   metadata={}, follows=unit.follows)
    assert result.already
    # a writer that planned (0, 1] after a run that is not there any more is refused
    stale = env.lake.open("predictions/codes")
    assert stale is not None
    with pytest.raises(StoreError, match="planned again"):
        env.lake.commit_batch("predictions/codes", late, app_id=app_id("code_answers"),
                              seq=3, mode="append", schema_merge=True, metadata={},
                              follows=5)
    assert env.lake.count_rows("predictions/codes") == 450
    assert env.predict().rows == 150
