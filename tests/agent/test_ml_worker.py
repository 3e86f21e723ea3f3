"""ML runs in worker processes: a crash is a failed run, never a dead or stalled agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from agent.ml.jobrunner import MlJobRunner
from agent.ml.worker import run_in_worker
from agent.runs import read_runs
from tests.agent.ml_env import MlEnv
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(240)


def _env(tmp_path: Path, estimator: str = "", params: str = "{}") -> MlEnv:
    extra = f'estimator = "{estimator}"\npreprocess = true' if estimator else ""
    env = MlEnv(tmp_path, params=params if estimator else "{ C = 10.0 }", model_extra=extra)
    env.sync()
    return env


def _worker_runner(env: MlEnv) -> MlJobRunner:
    return MlJobRunner(env.loaded, env.state(), env.lake, "test-agent", in_process=False)


def test_a_run_in_a_worker_process_registers_like_one_in_process(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = _worker_runner(env).run("train", "train_coder", trigger="test")
    assert (out.status, out.model_version) == ("ok", 1), out
    pred = _worker_runner(env).run("predict", "code_answers", trigger="test")
    assert (pred.status, pred.rows) == ("ok", 450), pred
    assert env.lake.count_rows("predictions/codes") == 450
    runs = {r["run_id"]: r for r in read_runs(env.lake)}
    assert runs[out.run_id]["status"] == runs[pred.run_id]["status"] == "ok"
    env.close()


def test_a_worker_that_dies_is_a_failed_run_and_the_next_run_works(tmp_path: Path) -> None:
    env = _env(tmp_path, "tests.agent.misbehaving:DiesInFit")
    runner = _worker_runner(env)
    out = runner.run("train", "train_coder", trigger="test")
    assert out.status == "failed" and out.retriable is True
    assert "the worker process was killed by signal SIGKILL before it finished" in str(
        out.error)
    run = env.state().run(out.run_id)
    assert run is not None and (run["status"], run["error"]) == ("failed", out.error)
    assert read_runs(env.lake, run_id=out.run_id)[0]["status"] == "failed"
    assert env.lake.open("_silta/registry") is None
    # the same runner (the agent) goes on: with a sane estimator the next run registers
    env.configure(model_extra="")
    runner = _worker_runner(env)
    assert runner.run("train", "train_coder", trigger="test").model_version == 1
    env.close()


def test_shutdown_stops_a_long_fit_after_its_grace(tmp_path: Path) -> None:
    env = _env(tmp_path, "tests.agent.misbehaving:SlowFit", "{ seconds = 120 }")
    cancel = threading.Event()
    threading.Timer(3.0, cancel.set).start()
    started = time.monotonic()
    out = run_in_worker(str(env.config_path), "train", "train_coder", "r1", force=False,
                        cancel=cancel, grace=1.0)
    took = time.monotonic() - started
    assert out.status == "failed" and "stopped by the agent's shutdown after 1 s" in str(
        out.error)
    assert took < 60  # not the fit's 120 s (a bound for a hung test, not a benchmark)
    assert env.lake.open("_silta/registry") is None
    env.close()


def test_the_worker_dies_with_a_killed_agent(tmp_path: Path) -> None:
    env = _env(tmp_path, "tests.agent.misbehaving:SlowFit", "{ seconds = 120 }")
    code = ("import sys, threading\n"
            "from agent.ml.worker import run_in_worker\n"
            f"run_in_worker({str(env.config_path)!r}, 'train', 'train_coder', 'r1', "
            "force=False, cancel=threading.Event(), grace=30)\n")
    agent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.2)
            children = psutil.Process(agent.pid).children()
        assert children, "the worker process never started"
        worker = children[0]
        time.sleep(2)  # inside the fit by now
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)

        def gone() -> bool:
            try:
                return worker.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + 20
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert gone(), "the worker outlived the agent that started it"
    finally:
        if agent.poll() is None:
            agent.kill()
    env.close()
