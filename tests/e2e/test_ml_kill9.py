"""kill -9 during predictions, in the CLI and in the agent's worker: every row exactly once."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.ml.predict import app_id
from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows
from tests.e2e._cli import background, silta, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ATTEMPTS = 10


def _gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_9_during_predictions_then_restart_predicts_every_row_once(
        tmp_path: Path, duck: Any) -> None:
    env = MlEnv(tmp_path, rows=2000, days=3, batch_rows=500)
    env.sync()
    assert env.train().model_version == 1
    env.add_days(6, coded=False)
    env.sync("answers")
    env.close()
    config = env.config_path
    rng = random.Random(9)
    killed = killed_workers = 0
    for attempt in range(ATTEMPTS):
        if attempt == ATTEMPTS // 2:
            # new answers arrive between crashes: the next range is (last landed, newest]
            env.add_days(6, coded=False)
            env.sync("answers")
            env.close()
        in_agent = attempt % 2 == 1  # in the agent's worker process, or in the CLI itself
        args = (["agent", "run", "--once"] if in_agent else ["jobs", "run", "code_answers"])
        with background(tmp_path, *args, "--config", config, name=f"run{attempt}") as proc:
            workers: list[psutil.Process] = []
            if in_agent:
                # kill the agent while its worker predicts: wait for the worker, then a bit
                deadline = time.monotonic() + 60
                while not workers and time.monotonic() < deadline and proc.alive():
                    try:
                        workers = psutil.Process(proc.pid).children()
                    except psutil.NoSuchProcess:
                        break
                    time.sleep(0.05)
                delay = rng.uniform(0.5, 3.0)
            else:
                delay = rng.uniform(0.5, 6.0)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.alive():
                time.sleep(0.05)
            if proc.alive():
                proc.kill()  # SIGKILL
                killed += 1
                for w in workers:
                    # the worker dies with its agent: no orphan commits behind our back
                    wait_for("the worker to die with the agent", lambda w=w: _gone(w),
                             timeout=20)
                    killed_workers += 1
            else:
                assert proc.proc.returncode == 0, proc.stderr()
    assert killed >= 4, "too few runs were killed mid-way to test anything"
    assert killed_workers >= 1, "no agent was killed while its worker ran"

    final = silta(tmp_path, "jobs", "run", "code_answers", "--json", "--config", config)
    assert final.code == 0, final
    env.sync("answers")
    table = tmp_path / "lake" / "predictions" / "codes"
    answers = tmp_path / "lake" / "raw" / "answers"
    total = duck_rows(duck, answers, "SELECT count(*) FROM t")[0][0]
    assert total == 15 * 2000
    # an independent reader: every answer predicted exactly once, nothing else
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT response_id) FROM t") == [
        (total, total)]
    assert duck.execute(
        f"SELECT count(*) FROM delta_scan('{answers}') a FULL JOIN delta_scan('{table}') p "
        "USING (response_id) WHERE a.response_id IS NULL OR p.response_id IS NULL"
    ).fetchall() == [(0,)]
    # the commits' input ranges follow each other without gap or overlap
    history = env.lake.history("predictions/codes")
    ranges = sorted((int(h["silta.input_from"] or -1), int(h["silta.input_to"]))
                    for h in history if h.get("silta.job") == "predict:code_answers")
    assert ranges[0][0] == -1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)), ranges
    assert ranges[-1][1] == env.lake.require("raw/answers").version()
    assert env.lake.require("predictions/codes").transaction_version(
        app_id("code_answers")) == ranges[-1][1] + 1
    # each run's rows are whole: a run id is in one commit only, with all of its rows
    per_run = duck_rows(duck, table, "SELECT run_id, count(*) FROM t GROUP BY 1")
    assert sum(n for _, n in per_run) == total
    assert len(per_run) == len(ranges)


def test_kill_9_during_training_leaves_only_whole_versions(tmp_path: Path) -> None:
    env = MlEnv(tmp_path, rows=1500, days=3)
    env.sync()
    env.close()
    rng = random.Random(3)
    killed = 0
    for attempt in range(6):
        with background(tmp_path, "jobs", "run", "train_coder", "--force", "--config",
                        env.config_path, name=f"train{attempt}") as proc:
            deadline = time.monotonic() + rng.uniform(0.5, 5.0)
            while time.monotonic() < deadline and proc.alive():
                time.sleep(0.05)
            if proc.alive():
                proc.kill()
                killed += 1
            else:
                assert proc.proc.returncode == 0, proc.stderr()
    assert killed >= 2, "too few trainings were killed mid-way to test anything"
    final = silta(tmp_path, "jobs", "run", "train_coder", "--force", "--config",
                  env.config_path)
    assert final.code == 0, final

    from agent.ml.artifacts import load_model, version_dir

    registry = env.registry
    versions = registry.versions("coder")
    numbers = [v.version for v in versions]
    assert numbers == sorted(set(numbers))  # no number twice
    artifacts = sorted(int(p.name) for p in (tmp_path / "lake" / "_silta" / "artifacts" /
                                             "coder").iterdir())
    # every registered version is whole: its artifact loads by its sha256, its card is there
    for v in versions:
        assert load_model(v.artifact, v.artifact.sha256) is not None
        assert sorted(p.name for p in version_dir(env.lake.uri, "coder", v.version).iterdir()
                      ) == ["card.json", "card.md", "model.skops"]
    # a killed run leaves at most an unused number (an artifact without a row), never a
    # row without its artifact, and never a partial file under a final name
    assert set(numbers) <= set(artifacts)
    import skops.io as sio

    for path in (tmp_path / "lake" / "_silta" / "artifacts").rglob("model.skops"):
        sio.get_untrusted_types(data=path.read_bytes())  # a whole skops file, or it raises
    champion = registry.resolve("coder@champion")
    assert champion.version in numbers
