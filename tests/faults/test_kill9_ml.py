"""kill -9 of predictions and trainings, mid-work: every answer predicted once, whole models.

What it breaks, each time in one small world (tests/agent/ml_env.py) reused by all kills:

- predict, 23 rounds: `silta jobs run code_answers` killed at a random moment of its run,
  or just after its commit reached the predictions table's Delta log (before the run
  could record it); the service (`silta agent run --once`) killed while its worker process
  predicts, at a random moment or just after the worker's commit; or only the worker
  killed (the agent lives on and records the failure), at a random moment or just after
  its commit, before it could hand its outcome back;
- train, 21 rounds: `silta jobs run train_coder --force` killed at a random moment of its
  run, just after the new version's model file claimed its number, just after its model
  card was written (between artifact and registry commit), or just after the registry
  commit (before the run and the aliases were recorded).

What it checks: at least 20 kills of each kind landed mid-work (the killed run still
'running', or the agent's record that its worker was killed by SIGKILL); after a clean
run every answer is predicted exactly once (DuckDB and deltalake), the input ranges of the
commits follow each other without gap or overlap, each run's rows are in one commit;
registry versions are whole (no number twice in deltalake and DuckDB, each artifact loads
by its sha256, its card present and naming it; a number a killed run claimed stays an
unused gap, its model file whole); the aliases name registered versions; every killed
run is 'interrupted' with its reason, every worker kill a failed run with its reason;
each start after a kill raised the `interrupted` alert of monitor "agent", each worker
kill `run_failed`, and the next good run resolved them; the lake's `_silta/runs` holds
each recorded run once; the inbox is untouched; no file is half-written under a final
name, and nothing was created outside the configured roots.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from deltalake import DeltaTable

from agent.ml.predict_plan import app_id
from tests.agent.ml_env import MlEnv
from tests.conftest import duck_rows
from tests.e2e._cli import wait_for
from tests.faults._kill9 import (
    FINISHED,
    Ledger,
    Rounds,
    delta_commits,
    leftovers,
    top_level,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

SEED = 9
ROWS = 150  # answers a day: a small world, cheap to train and predict
PREDICT_KILLS = (["random"] * 9 + ["commit"] * 6 + ["agent", "agent-commit", "worker",
                                                    "worker-commit"] * 2)
TRAIN_KILLS = ["random"] * 6 + ["claimed"] * 5 + ["carded"] * 5 + ["registered"] * 5
WORKER_KILLED = ("the worker process was killed by signal SIGKILL before it finished (out of "
                 "memory? see the log); nothing half-written is kept, the next run starts "
                 "again")


def _worker(agent_pid: int) -> psutil.Process | None:
    """The agent's ML worker process (multiprocessing spawn), once it runs."""
    try:
        children = psutil.Process(agent_pid).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def _gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _sha256s(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _inbox(root: Path) -> dict[str, str]:
    return _sha256s([p for p in (root / "inbox").rglob("*") if p.is_file()])


def _lake_runs_once(root: Path, ledger: Ledger, kind: str) -> None:
    """`_silta/runs` holds each run of ``kind`` that committed or failed, once."""
    runs = DeltaTable(str(root / "lake" / "_silta" / "runs")).to_pyarrow_dataset().to_table(
        columns=["run_id", "kind"]).to_pylist()
    ids = [r["run_id"] for r in runs if r["kind"] == kind]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r["id"] for r in ledger.rows(
        "SELECT id FROM runs WHERE kind=? AND (batches=1 OR status='failed')", (kind,))}


def _no_leftovers_and_roots(root: Path, roots: set[str], lake: list[str],
                            internal: list[str]) -> None:
    known, unknown, broken = leftovers(root)
    assert (unknown, broken) == ([], [])
    print(f"temporary files left by the kills (never under a final name): {known}")
    assert top_level(root) == roots
    assert sorted(os.listdir(root / "lake")) == lake
    assert sorted(os.listdir(root / "lake" / "_silta")) == internal


# -- predictions ----------------------------------------------------------------------------
def test_kill_9_of_predictions_predicts_every_answer_exactly_once(tmp_path: Path,
                                                                  duck: Any) -> None:
    # retrain_on without new_data: the service's --once pass predicts, it does not train
    env = MlEnv(tmp_path, rows=ROWS, days=3, batch_rows=100,
                model_extra='retrain_on = ["schedule"]')
    env.sync()
    assert env.train().model_version == 1
    env.add_days(1, coded=False)
    env.sync("answers")
    env.close()
    table = tmp_path / "lake" / "predictions" / "codes"
    rounds = Rounds(tmp_path, env.config_path, "predict", "code_answers")
    # the first run creates the table: later ones work for less; kill within that
    work = rounds.clean("first") * 0.6  # for the kill delays only, never asserted
    roots = top_level(tmp_path)
    lake_names = sorted(os.listdir(tmp_path / "lake"))
    internal = sorted(os.listdir(tmp_path / "lake" / "_silta"))
    inbox = _inbox(tmp_path)

    def pending() -> bool:
        lake = env.lake
        done = lake.require("predictions/codes").transaction_version(app_id("code_answers"))
        return bool(done != lake.require("raw/answers").version() + 1)

    rng = random.Random(SEED)
    kinds = list(PREDICT_KILLS)
    rng.shuffle(kinds)
    worker_kills = 0
    after_commit = 0
    started = time.monotonic()
    for i, kind in enumerate(kinds):
        if not pending():  # every round has answers to predict
            inbox.update(_sha256s(env.add_days(1, coded=False)))
            env.sync("answers")
            env.close()
        before = delta_commits(table)
        worker: list[psutil.Process] = []

        def committed(b: set[str] = before) -> set[str]:
            return delta_commits(table) - b

        def moment(proc: subprocess.Popen[bytes], kind: str = kind,
                   worker: list[psutil.Process] = worker) -> int | None:
            if kind in ("random", "commit"):
                if kind == "random":
                    time.sleep(rng.uniform(0, work))
                else:
                    wait_until(proc, committed, interval=0.001)
                return None
            # a scan of /proc costs CPU the runs need: not too often (a worker lives for s)
            found = wait_until(proc, lambda: _worker(proc.pid), interval=0.02)
            if found is None:
                return None
            worker.append(found)
            if kind.endswith("-commit"):
                wait_until(proc, committed, interval=0.001)
            else:
                time.sleep(rng.uniform(0, work))
            return found.pid if kind.startswith("worker") else None

        in_agent = kind not in ("random", "commit")
        r = rounds.kill(f"predict{i:02d}-{kind}", moment,
                        args=["agent", "run", "--once"] if in_agent else None,
                        finished=FINISHED | {(1, "failed")})  # 1: --once saw a failure
        if kind.startswith("agent") and worker:
            # the worker dies with its agent: no orphan commits behind our back
            wait_for("the worker to die with the agent", lambda w=worker[0]: _gone(w),
                     timeout=30)
        if r.status == "failed":
            assert kind.startswith("worker"), r
            assert rounds.ledger.run(str(r.run_id))["error"] == WORKER_KILLED
            worker_kills += 1
        if (r.mid_work or r.status == "failed") and committed():
            after_commit += 1  # its commit landed; its run could not say so
    hits = len(rounds.killed) + worker_kills
    by_kind = Counter(r.kind.split("-", 1)[1] for r in rounds.killed)
    print(f"\nkill -9 of predict: {hits} mid-work kills of {len(kinds)} rounds ({dict(by_kind)}"
          f" left their run running; {worker_kills} workers killed under a live agent); "
          f"{after_commit} after their commit landed; {time.monotonic() - started:.1f} s")
    assert hits >= 20, rounds.done
    assert after_commit >= 1, rounds.done

    rounds.clean("final")
    answers = tmp_path / "lake" / "raw" / "answers"
    total = duck_rows(duck, answers, "SELECT count(*) FROM t")[0][0]
    assert total == env.days * ROWS
    # two readers: every answer predicted exactly once, nothing else
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT response_id) FROM t") == [
        (total, total)]
    assert duck.execute(
        f"SELECT count(*) FROM delta_scan('{answers}') a FULL JOIN delta_scan('{table}') p "
        "USING (response_id) WHERE a.response_id IS NULL OR p.response_id IS NULL"
    ).fetchall() == [(0,)]
    ids = DeltaTable(str(table)).to_pyarrow_dataset().to_table(
        columns=["response_id"])["response_id"].to_pylist()
    assert (len(ids), len(set(ids))) == (total, total)
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
    assert len(per_run) == len(ranges)
    assert sum(n for _, n in per_run) == total
    # every version of the model was trained before the kills: none was touched
    assert [v.version for v in env.registry.versions("coder")] == [1]

    rounds.check_runs_and_alerts(Counter({"failed": worker_kills}))
    _lake_runs_once(tmp_path, rounds.ledger, "predict")
    assert _inbox(tmp_path) == inbox
    _no_leftovers_and_roots(tmp_path, roots, lake_names, internal)


# -- training -------------------------------------------------------------------------------
def test_kill_9_of_training_leaves_only_whole_versions(tmp_path: Path, duck: Any) -> None:
    env = MlEnv(tmp_path, rows=ROWS, days=3)
    env.sync()
    env.close()
    lake = tmp_path / "lake"
    artifacts = lake / "_silta" / "artifacts" / "coder"
    registry_path = lake / "_silta" / "registry"
    rounds = Rounds(tmp_path, env.config_path, "train", "train_coder",
                    args=["jobs", "run", "train_coder", "--force"])
    work = rounds.clean("first")  # version 1; for the kill delays only, never asserted
    roots = top_level(tmp_path)
    lake_names = sorted(os.listdir(lake))
    internal = sorted(os.listdir(lake / "_silta"))
    inbox = _inbox(tmp_path)

    def with_file(name: str) -> set[int]:
        return {int(d) for d in os.listdir(artifacts) if (artifacts / d / name).exists()}

    def registered() -> set[int]:
        return set(DeltaTable(str(registry_path)).to_pyarrow_dataset().to_table(
            columns=["version"])["version"].to_pylist())

    rng = random.Random(SEED + 1)
    kinds = list(TRAIN_KILLS)
    rng.shuffle(kinds)
    gaps: set[int] = set()  # numbers claimed by a model file of a run that never registered
    hit: Counter[str] = Counter()
    started = time.monotonic()
    for i, kind in enumerate(kinds):
        models, cards = with_file("model.skops"), with_file("card.md")
        numbered, commits = registered(), delta_commits(registry_path)

        def moment(proc: subprocess.Popen[bytes], kind: str = kind, models: set[int] = models,
                   cards: set[int] = cards, commits: set[str] = commits) -> None:
            if kind == "random":
                time.sleep(rng.uniform(0, work))
            elif kind == "claimed":
                wait_until(proc, lambda: with_file("model.skops") - models, interval=0.001)
            elif kind == "carded":
                wait_until(proc, lambda: with_file("card.md") - cards, interval=0.001)
            else:
                wait_until(proc, lambda: delta_commits(registry_path) - commits,
                           interval=0.001)

        r = rounds.kill(f"train{i:02d}-{kind}", moment)
        new_models, new_versions = with_file("model.skops") - models, registered() - numbered
        assert len(new_models) <= 1 and new_versions <= new_models, (r, new_models)
        gaps |= new_models - new_versions
        if r.mid_work:
            hit["claimed, not registered" if new_models - new_versions else
                "registered, run not recorded" if new_versions else "before the claim"] += 1
    print(f"\nkill -9 of train: {len(rounds.killed)} mid-work kills of {len(kinds)} rounds "
          f"({dict(Counter(r.kind.split('-', 1)[1] for r in rounds.killed))}); {dict(hit)}; "
          f"{time.monotonic() - started:.1f} s")
    assert len(rounds.killed) >= 20, rounds.done
    assert hit["claimed, not registered"] >= 1, hit
    assert hit["registered, run not recorded"] >= 1, hit

    rounds.clean("final")
    import skops.io as sio

    from agent.ml.artifacts import load_model

    versions = env.registry.versions("coder")
    numbers = [v.version for v in versions]
    assert numbers == sorted(set(numbers))  # no number twice
    assert duck_rows(duck, registry_path, "SELECT version, count(*) FROM t WHERE model = "
                     "'coder' GROUP BY 1 ORDER BY 1") == [(n, 1) for n in numbers]
    assert len(numbers) == len(rounds.done) - len(rounds.killed) + hit[
        "registered, run not recorded"]
    # a killed run leaves at most an unused number (a model file without a row), never a
    # row without its files
    assert with_file("model.skops") == set(numbers) | gaps
    assert gaps & set(numbers) == set()
    for v in versions:  # whole: loads by its sha256, its card names it
        folder = artifacts / str(v.version)
        assert sorted(p.name for p in folder.iterdir()) == ["card.json", "card.md",
                                                           "model.skops"]
        assert hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest() == \
            v.artifact.sha256
        assert type(load_model(v.artifact, v.artifact.sha256)).__name__ == "Pipeline"
        details = json.loads((folder / "card.json").read_text(encoding="utf-8"))[
            "model_details"]
        assert (details["name"], details["version"]["name"], details["artifact_sha256"]) == (
            "coder", str(v.version), v.artifact.sha256)
    # the model file of a gap is whole too: it parses, to the same types as version 1's
    types = sio.get_untrusted_types(data=(artifacts / "1" / "model.skops").read_bytes())
    for n in gaps:
        assert sio.get_untrusted_types(data=(artifacts / str(n) / "model.skops").read_bytes()
                                       ) == types
    aliases = lake / "_silta" / "aliases"
    assert {v for (v,) in duck_rows(duck, aliases, "SELECT DISTINCT version FROM t")} <= \
        set(numbers)
    assert env.registry.resolve("coder@champion").version in numbers

    rounds.check_runs_and_alerts()
    _lake_runs_once(tmp_path, rounds.ledger, "train")
    assert _inbox(tmp_path) == inbox
    _no_leftovers_and_roots(tmp_path, roots, lake_names, internal)
