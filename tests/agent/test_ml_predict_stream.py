"""A prediction over several new input versions: the input is read while delta-rs writes.

The change data feed of each input version is read lazily, from the stream that
``write_deltalake`` pulls on its own runtime; reading Delta from there panicked ("Cannot
start a runtime from within a runtime") for every version after the first. Found by the
soak benchmark (bench/soak.py), where a sync lands a file every few seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.ml.jobrunner import MlJobRunner
from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows


def test_a_range_of_many_new_versions_is_predicted_in_one_run(tmp_path: Path, duck: Any
                                                              ) -> None:
    env = MlEnv(tmp_path, rows=120, days=2, batch_rows=50)
    env.sync()
    assert env.train().model_version == 1
    first = env.predict()
    assert first.status == "ok", first
    before = env.lake.require("raw/answers").version()
    for _ in range(4):  # four input versions, each with new rows
        env.add_days(1, coded=False)
        env.sync("answers")
    assert env.lake.require("raw/answers").version() == before + 4
    out = env.predict()
    assert out.status == "ok", out.error
    assert out.rows == 4 * 120
    assert out.inputs[0]["from_version"] == before
    assert out.inputs[0]["to_version"] == before + 4
    lake = tmp_path / "lake"
    table, answers = lake / "predictions" / "codes", lake / "raw" / "answers"
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT response_id) FROM t") == [
        (6 * 120, 6 * 120)]
    assert duck.execute(
        f"SELECT count(*) FROM delta_scan('{answers}') a FULL JOIN delta_scan('{table}') p "
        "USING (response_id) WHERE a.response_id IS NULL OR p.response_id IS NULL"
    ).fetchall() == [(0,)]
    env.close()


def test_the_agent_predicts_nothing_new_without_starting_a_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle agent predicts every scheduled minute: with no new input, no worker process
    (seconds of CPU for its imports and the model) is started. The spy on run_in_worker is
    the only way to see from here whether a worker was started; it calls the real one."""
    import agent.ml.jobrunner as jobrunner

    env = MlEnv(tmp_path, rows=60, days=1)
    env.sync()
    assert env.train().model_version == 1
    started: list[str] = []
    real = jobrunner.run_in_worker

    def spy(*args: Any, **kwargs: Any) -> Any:
        started.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(jobrunner, "run_in_worker", spy)
    agent = MlJobRunner(env.loaded, env.state(), env.lake, "test-agent")  # workers
    first = agent.run("predict", "code_answers", trigger="schedule")
    assert (first.status, first.committed, first.rows) == ("ok", True, 60), first.error
    assert started == ["predict"]
    idle = agent.run("predict", "code_answers", trigger="schedule")
    assert (idle.status, idle.committed, idle.table_version) == ("ok", False, 0)
    assert idle.message == "up to date: raw/answers has no rows newer than the last run"
    assert started == ["predict"]  # no second worker
    runs = env.state().runs(kind="predict")
    assert (runs[0]["id"], runs[0]["status"], runs[0]["verified"]) == (
        idle.run_id, "ok", idle.message)
    env.add_days(1, coded=False)
    env.sync("answers")
    assert agent.run("predict", "code_answers", trigger="schedule").rows == 60
    assert started == ["predict", "predict"]
    env.close()
