"""A monitoring run that recorded its figures and then stopped (the agent killed between
the worker's commit and the alerts) loses no alert: the next start rebuilds them from
``_silta/metrics``, once, with the retraining they ask for.

The crash is made by doing the worker's part by hand, as the agent's worker does it
(open the run, measure, commit), and never doing the agent's part; then the store is
opened as a restarted agent opens it."""

from __future__ import annotations

from pathlib import Path

from agent.alerts import AlertBook
from agent.ml.monitor import commit_monitor, measure_monitor
from tests.agent.ml_env import MlEnv

WATCH = """
[[monitors]]
name = "watch"
model = "coder"
input = "raw/answers"
predictions = "predictions/codes"
"""


def _crashed_monitor_run(env: MlEnv) -> tuple[str, list[tuple[str, str]]]:
    """A run whose figures landed and whose alerts were never raised: (run id, breaches)."""
    state = env.state()
    run_id = state.start_run("monitor", "watch", "schedule", "test-agent")
    conf = env.loaded.config
    measured = measure_monitor(env.lake, conf.monitor("watch"), conf.models, run_id=run_id,
                               name="watch")
    out = commit_monitor(env.lake, measured)
    assert out.committed
    breaches = [(r.check, r.target) for r in measured.findings.breaches]
    state.close()
    return run_id, breaches


def test_alerts_of_a_run_that_died_after_its_commit_are_raised_at_restart(
        tmp_path: Path) -> None:
    env = MlEnv(tmp_path, model_extra='retrain_on = ["drift"]', tail=WATCH)
    env.sync()
    assert env.train().model_version == 1
    env.predict()
    env.add_drifted_month()
    env.sync()
    env.predict()
    run_id, breaches = _crashed_monitor_run(env)
    assert ("drift", "job_title:oov_rate") in breaches
    state = env.state()
    assert AlertBook(state).find() == []  # nobody knows yet

    # the restarted agent: stale runs interrupted, then recovery before anything runs
    assert [r["kind"] for r in state.interrupt_stale_runs()] == ["monitor"]
    runner = env.runner()
    retrain = runner.recover()
    alerts = AlertBook(state).find()
    assert sorted((a["check"], a["target"]) for a in alerts) == sorted(breaches)
    assert {a["last_run_id"] for a in alerts} == {run_id}
    oov = next(a for a in alerts if a["target"] == "job_title:oov_rate")
    assert oov["summary"].startswith("raw/answers.job_title: drifted against raw/answers@")
    assert oov["value"] > oov["threshold"] == 0.1
    first_drift = min(a["id"] for a in alerts if a["check"] == "drift")
    assert retrain == [("train:train_coder", first_drift)]
    run = state.run(run_id)
    assert run is not None
    assert (run["status"], run["verified"]) == ("ok", "recovered: alerts from _silta/metrics")

    # recovery is once: a second start finds nothing to do, and counts nothing again
    assert runner.recover() == []
    assert {a["id"]: a["count"] for a in AlertBook(state).find()} == {
        a["id"]: 1 for a in alerts}
    env.close()


def test_a_run_that_died_before_its_commit_leaves_nothing_to_recover(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, tail=WATCH)
    env.sync()
    env.train()
    env.predict()
    state = env.state()
    run_id = state.start_run("monitor", "watch", "schedule", "test-agent")
    assert [r["kind"] for r in state.interrupt_stale_runs()] == ["monitor"]
    assert env.runner().recover() == []
    run = state.run(run_id)
    assert run is not None and run["status"] == "interrupted"
    assert AlertBook(state).find() == []
    env.close()
