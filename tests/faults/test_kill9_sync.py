"""kill -9 of a folder -> lake sync, mid-work: never a row lost or repeated, nothing else.

What it breaks: 22 rounds, each releasing three new CSV files into the inbox and starting
the real `silta sync run k` (or, in 8 rounds, the service: `silta agent run --once`),
then SIGKILL once the run is under way (its row in the runs table), at a seeded moment:
a random one within a run's usual length (R), a random moment just after a batch was
planned (T: inside a batch), or just after a commit reached the Delta log (C: before the
ledger could record it). Files are moved to `.silta-done` once their commit is durable
(`on_success = "move"`). A clean run of the service ends it.

What it checks: at least 20 kills landed mid-work (the killed run's row still 'running');
after every round each moved file is in the table already (the source is only touched
once the target is durable); at the end every row is in the table exactly once (deltalake
and DuckDB), the ledger, the Delta log's app transaction and the data agree (every other
table version is a compaction by the agent's maintenance), every killed run is
'interrupted' with its reason, each start after a kill raised the `interrupted` alert of
monitor "agent" (counted while it was open) and the next good run resolved it, the
source files are byte for byte what was released, no file is half-written under a final
name, and nothing was created outside the configured roots.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from agent.state import INTERRUPTED_ERROR
from tests.conftest import duck_rows, write_config
from tests.e2e._cli import delta_table, silta, write_csv
from tests.faults._kill9 import (
    FINISHED,
    AlertModel,
    Ledger,
    Round,
    agent_alerts,
    delta_commits,
    kill,
    leftovers,
    new_run,
    start,
    top_level,
    wait_until,
)

PER_ROUND = 3
KINDS = ["R"] * 8 + ["T"] * 8 + ["C"] * 6
AGENT_ROUNDS = 8  # rounds that kill the service instead of `silta sync run`
ROUNDS = len(KINDS)
FILES = PER_ROUND * (ROUNDS + 1)  # the first three land in the warm-up run
SEED = 20261127
HEADER = "id,file,row,value,label"
DONE = ".silta-done"


def _row_count(f: int) -> int:
    return 1000 + (f * 397) % 1500  # 1000..2499, different per file


def _make_files(staging: Path) -> dict[str, tuple[int, str]]:
    """name -> (rows, sha256) of every file the test will release."""
    expected = {}
    for f in range(FILES):
        name = f"f{f:03d}.csv"
        n = _row_count(f)
        data = write_csv(staging / name, HEADER, [f"f{f:03d}-{r},{f},{r},{r * 0.25},"
                                                  f"{'abcdefg'[r % 7]}" for r in range(n)],
                         via_tmp=False)
        expected[name] = (n, hashlib.sha256(data).hexdigest())
    return expected


def _landed_sources(duck: Any, table: Path) -> set[str]:
    if not (table / "_delta_log").exists():
        return set()
    return {s for (s,) in duck_rows(duck, table, "SELECT DISTINCT _silta_source FROM t")}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kill9_of_a_sync_never_loses_or_repeats_a_row(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "k", "target": "lake:raw/k",
                                      "batch_max_files": 1, "settle_seconds": 0,
                                      "on_success": "move"}])
    inbox, staging, logs = tmp_path / "inbox", tmp_path / "staging", tmp_path / "logs"
    staging.mkdir()
    logs.mkdir()
    table = tmp_path / "lake" / "raw" / "k"
    expected = _make_files(staging)
    names = sorted(expected)
    total = sum(n for n, _ in expected.values())
    roots_before = top_level(tmp_path)
    ledger = Ledger(tmp_path / "state")
    rng = random.Random(SEED)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    agent_rounds = set(rng.sample(range(ROUNDS), AGENT_ROUNDS))
    model = AlertModel()

    def release(i: int) -> None:
        for name in names[i * PER_ROUND:(i + 1) * PER_ROUND]:
            os.replace(staging / name, inbox / name)

    def pending() -> set[int]:
        return {int(r["seq"]) for r in ledger.rows(
            "SELECT seq FROM batches WHERE sync='k' AND status='pending'")}

    # warm-up: a clean run lands the first files and shows how long a run works
    release(0)
    proc = start(tmp_path, ["sync", "run", "k", "--config", str(config)], logs / "warm.err")
    run_id = wait_until(proc, new_run(ledger, "sync", "k", []))
    began = time.monotonic()
    assert proc.wait(timeout=120) == 0, (logs / "warm.err").read_text()
    work = time.monotonic() - began  # for the kill delays only, never asserted
    assert run_id is not None
    model.started()
    model.ended(Round("warm", run_id, ledger.run(run_id)["status"], 0))

    rounds: list[Round] = []
    started = time.monotonic()
    for i, kind in enumerate(kinds):
        release(i + 1)
        before = ledger.run_ids("sync", "k")
        pending_before, commits_before = pending(), delta_commits(table)
        args = (["agent", "run", "--once"] if i in agent_rounds else ["sync", "run", "k"])
        log = logs / f"round{i:02d}.err"
        proc = start(tmp_path, [*args, "--config", str(config)], log)
        run_id = wait_until(proc, new_run(ledger, "sync", "k", before), interval=0.005)
        assert run_id is not None, f"round {i}: no run started\n{log.read_text()}"
        if kind == "R":
            time.sleep(rng.uniform(0, work))
        elif kind == "T":
            wait_until(proc, lambda b=pending_before: pending() - b)
            time.sleep(rng.uniform(0, 0.05))
        else:
            wait_until(proc, lambda b=commits_before: delta_commits(table) - b)
            time.sleep(rng.uniform(0, 0.003))
        code = kill(proc)
        r = Round(kind, run_id, ledger.run(run_id)["status"], code)
        if not r.mid_work:
            assert (code, r.status) in FINISHED, f"round {i}: {r}\n{log.read_text()}"
        model.started()  # this start found the run the last kill left
        model.ended(r)
        rounds.append(r)
        # the source is touched only once the target is durable: moved means landed
        moved = {f"inbox:{n}" for n in os.listdir(inbox / DONE)} if (inbox / DONE).exists() \
            else set()
        assert moved - _landed_sources(duck, table) == set(), f"round {i}"

    killed = [r for r in rounds if r.mid_work]
    by_kind = Counter(r.kind for r in killed)
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs.iterdir())
    recovered = text.count("recovered: it had committed")
    abandoned = text.count("abandoned: not in the table")
    print(f"\nkill -9 of sync: {len(killed)} mid-work kills of {ROUNDS} rounds "
          f"({by_kind['R']} random, {by_kind['T']} in a batch, {by_kind['C']} at a commit; "
          f"{sum(1 for i in agent_rounds if rounds[i].mid_work)} of the service); "
          f"{recovered} batch(es) recovered from the Delta log, {abandoned} abandoned and "
          f"planned again; {time.monotonic() - started:.1f} s")
    assert len(killed) >= 20, rounds
    assert abandoned >= 1, "no kill landed inside a batch before its commit"
    assert recovered >= 1, "no kill landed between a commit and the ledger's record of it"

    # a clean start of the service finishes the work
    final = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert final.code == 0, final
    assert "Traceback" not in final.err
    (out,) = final.json()
    assert out["status"] == "ok", out
    model.started()
    model.ended(Round("final", out["run_id"], "ok", 0))

    # -- the data, through deltalake ---------------------------------------------------------
    data = delta_table(table)
    ids = data["id"].to_pylist()
    sources = data["_silta_source"].to_pylist()
    assert (len(ids), len(set(ids))) == (total, total)
    assert Counter(sources) == {f"inbox:{n}": c for n, (c, _) in expected.items()}
    assert [(i, s) for i, s in zip(ids, sources, strict=True)
            if s != f"inbox:{i.split('-')[0]}.csv"] == []

    # -- the same, through DuckDB -------------------------------------------------------------
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [
        (total, total)]
    assert dict(duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1")) \
        == {f"inbox:{n}": c for n, (c, _) in expected.items()}
    assert duck_rows(duck, table, "SELECT count(*) FROM t WHERE _silta_source <> 'inbox:' || "
                     "split_part(id, '-', 1) || '.csv'") == [(0,)]

    # -- the Delta log, the ledger and the data agree ----------------------------------------
    dt = DeltaTable(str(table))
    batches = ledger.rows("SELECT seq, status, files, rows, table_version FROM batches "
                          "WHERE sync = 'k' ORDER BY seq")
    assert [b for b in batches if b["status"] not in ("committed", "abandoned")] == []
    done = [b for b in batches if b["status"] == "committed"]
    assert (sum(b["files"] for b in done), sum(b["rows"] for b in done)) == (FILES, total)
    assert dt.transaction_version("silta/k") == max(b["seq"] for b in done)
    history = dt.history()
    commits = {int(h["silta.seq"]): int(h["version"]) for h in history
               if h.get("silta.app_id") == "silta/k"}
    assert commits == {b["seq"]: b["table_version"] for b in done}
    # every other version is the agent's compaction, which adds and removes no row
    others = sorted(int(h["version"]) for h in history if h.get("silta.app_id") != "silta/k")
    assert [h["operation"] for h in history if h.get("silta.app_id") != "silta/k"] == [
        "OPTIMIZE"] * len(others)
    assert sorted([*commits.values(), *others]) == list(range(dt.version() + 1))
    assert Counter(data["_silta_batch"].to_pylist()) == {b["seq"]: b["rows"] for b in done}
    files = ledger.rows("SELECT path, status, seq FROM files WHERE sync = 'k'")
    assert sorted(f["path"] for f in files) == names
    assert {f["status"] for f in files} == {"committed"}
    assert {f["seq"] for f in files} == set(commits)

    # -- every killed run recorded, alerted at the next start, resolved by the next good run --
    runs = {r["id"]: r for r in ledger.rows("SELECT id, status, error FROM runs "
                                            "WHERE kind='sync' AND name='k'")}
    assert {i: (runs[i]["status"], runs[i]["error"]) for i in (r.run_id for r in killed)
            if i is not None} == {r.run_id: ("interrupted", INTERRUPTED_ERROR) for r in killed}
    assert Counter(r["status"] for r in runs.values()) == {
        "interrupted": len(killed), "ok": len(runs) - len(killed)}
    alerts = agent_alerts(ledger)
    print(f"alerts of monitor agent: {alerts}")
    assert alerts == model.expected("sync:k")
    assert sum(a[2] for a in alerts if a[0] == "interrupted") == len(killed)
    assert {a[3] for a in alerts} == {"resolved"}

    # -- the source untouched, nothing half-written, nothing outside the roots ----------------
    assert sorted(os.listdir(inbox)) == [DONE]
    assert {n: hashlib.sha256((inbox / DONE / n).read_bytes()).hexdigest()
            for n in os.listdir(inbox / DONE)} == {n: h for n, (_, h) in expected.items()}
    known, unknown, broken = leftovers(tmp_path)
    assert (unknown, broken) == ([], [])
    print(f"temporary files left by the kills (never under a final name): {known}")
    assert top_level(tmp_path) == roots_before | {"lake", "state"}
    assert sorted(os.listdir(tmp_path / "lake")) == ["_silta", "raw"]
    assert sorted(os.listdir(tmp_path / "lake" / "raw")) == ["k"]
    ledger.close()
