"""Exactly once under `kill -9`: an agent killed at any moment never loses or repeats a row.

126 CSV files are released into the inbox three per round. Each round starts
`silta agent run --once` and kills it with SIGKILL if it is still running: after a random
(seeded) sleep of 0.05-1.5 s (22 rounds, the operator's view), a random moment after a batch
was planned (14 rounds: inside a batch), or just after a commit reached the Delta log (6
rounds: before the ledger could record it). A last, clean run finishes the work. Every row
must then be in the table exactly once, and the ledger, the Delta log's app transaction and
the data must agree.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import SILTA, cli_env, delta_table, ledger, silta, write_csv

PER_ROUND = 3
RANDOM = 22  # rounds killed after a random sleep
TARGETED = 14  # rounds killed just after a batch was planned
AT_COMMIT = 6  # rounds killed just after a commit reached the Delta log
FILES = PER_ROUND * (RANDOM + TARGETED + AT_COMMIT)  # every round has new work
SEED = 20261127
HEADER = "id,file,row,value,label"


def _row_count(f: int) -> int:
    return 2000 + (f * 397) % 2000  # 2000..3999, different per file


def _make_files(staging: Path) -> dict[str, int]:
    expected: dict[str, int] = {}
    for f in range(FILES):
        name = f"f{f:03d}.csv"
        n = _row_count(f)
        write_csv(staging / name, HEADER,
                  [f"f{f:03d}-{r},{f},{r},{r * 0.25},{'abcdefg'[r % 7]}" for r in range(n)],
                  via_tmp=False)
        expected[name] = n
    return expected


def _pending_seqs(root: Path) -> set[int]:
    if not (root / "state" / "silta.db").exists():
        return set()
    rows = ledger(root / "state", "SELECT seq FROM batches WHERE status = 'pending'")
    return {int(r["seq"]) for r in rows}


def _commit_files(table: Path) -> set[str]:
    try:
        return {n for n in os.listdir(table / "_delta_log") if n.endswith(".json")}
    except FileNotFoundError:
        return set()


def _wait_until(proc: subprocess.Popen[bytes], event: Callable[[], bool]) -> None:
    """Poll ``event`` until it happens, the run ends, or 10 s pass."""
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if event():
                return
        except sqlite3.Error:
            pass  # the store is being created
        time.sleep(0.001)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_never_loses_or_repeats_a_row(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "k", "target": "lake:raw/k",
                                      "batch_max_files": 3, "settle_seconds": 0}])
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    staging.mkdir()
    table = tmp_path / "lake" / "raw" / "k"
    expected = _make_files(staging)
    names = sorted(expected)
    total = sum(expected.values())

    rng = random.Random(SEED)
    # R: sleep a random moment, as an operator's kill would. T: a random moment after a batch
    # was planned (pending in the ledger), so kills land inside batches. C: right after a
    # commit reached the Delta log, before the ledger could record it.
    kinds = (["R", "T", "C"] * AT_COMMIT + ["R", "T"] * (TARGETED - AT_COMMIT)
             + ["R"] * (RANDOM - TARGETED))
    killed: Counter[str] = Counter()
    finished = 0
    logs: list[Path] = []
    started = time.monotonic()
    for i, kind in enumerate(kinds):
        for name in names[i * PER_ROUND:(i + 1) * PER_ROUND]:
            os.replace(staging / name, inbox / name)
        log = tmp_path / f"round{i:02d}.stderr"
        logs.append(log)
        pending_before = _pending_seqs(tmp_path)
        commits_before = _commit_files(table)
        with open(log, "wb") as err:
            proc = subprocess.Popen([*SILTA, "agent", "run", "--once", "--config", str(config)],
                                    cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                                    stderr=err)
        try:
            if kind == "R":
                time.sleep(rng.uniform(0.05, 1.5))
            elif kind == "T":
                _wait_until(proc, lambda b=pending_before: bool(_pending_seqs(tmp_path) - b))
                time.sleep(rng.uniform(0.0, 0.06))
            else:
                _wait_until(proc, lambda b=commits_before: bool(_commit_files(table) - b))
                time.sleep(rng.uniform(0.0, 0.005))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code == -signal.SIGKILL:
            killed[kind] += 1
        else:
            finished += 1
            assert code == 0, f"round {i}: a run that was not killed exited {code}\n" \
                              f"{log.read_text(encoding='utf-8', errors='replace')}"
    assert not list(staging.iterdir())
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs)
    recovered = text.count("recovered: it had committed")
    abandoned = text.count("abandoned: not in the table")
    print(f"kill -9: {killed['R']} random, {killed['T']} in-batch and {killed['C']} at-commit "
          f"kills, {finished} runs "
          f"finished on their own; {recovered} batch(es) recovered from the Delta log, "
          f"{abandoned} abandoned and planned again; {time.monotonic() - started:.1f} s")
    assert killed["R"] >= 3, "too few random kills for this test to mean anything"
    assert sum(killed.values()) >= 20, f"only {sum(killed.values())} runs were killed"
    assert abandoned >= 1, "no kill landed inside a batch before its commit"
    assert recovered >= 1, "no kill landed between a commit and the ledger's record of it"

    # a clean run finishes the work; one more finds nothing left to do
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    assert "Traceback" not in r.err
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    (last,) = r.json()
    assert (last["status"], last["batches"], last["files"], last["rows"]) == ("ok", 0, 0, 0)

    # -- the data, through deltalake ---------------------------------------------------------
    data = delta_table(table)
    ids = data["id"].to_pylist()
    sources = data["_silta_source"].to_pylist()
    assert len(ids) == total
    assert len(set(ids)) == total
    assert Counter(sources) == {f"inbox:{n}": c for n, c in expected.items()}
    assert set(sources) == {f"inbox:{n}" for n in names}
    wrong_file = [(i, s) for i, s in zip(ids, sources, strict=True)
                  if s != f"inbox:{i.split('-')[0]}.csv"]
    assert wrong_file == []

    # -- the same, through DuckDB -------------------------------------------------------------
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [
        (total, total)]
    assert dict(duck_rows(duck, table, "SELECT _silta_source, count(*) FROM t GROUP BY 1")) \
        == {f"inbox:{n}": c for n, c in expected.items()}
    assert duck_rows(duck, table, "SELECT count(*) FROM t WHERE _silta_source <> 'inbox:' || "
                     "split_part(id, '-', 1) || '.csv'") == [(0,)]
    assert duck_rows(duck, table, "SELECT count(*) FROM (SELECT id FROM t GROUP BY id "
                     "HAVING count(*) > 1)") == [(0,)]

    # -- the Delta log, the ledger and the data agree ----------------------------------------
    dt = DeltaTable(str(table))
    committed_seq = dt.transaction_version("silta/k")
    assert committed_seq is not None
    batches = ledger(tmp_path / "state", "SELECT seq, status, files, rows, table_version FROM "
                     "batches WHERE sync = 'k' ORDER BY seq")
    assert [b for b in batches if b["status"] not in ("committed", "abandoned")] == []
    done = [b for b in batches if b["status"] == "committed"]
    assert sum(b["files"] for b in done) == FILES
    assert sum(b["rows"] for b in done) == total
    assert committed_seq == max(b["seq"] for b in done)
    # every commit of the table is one batch of the ledger, at the version the ledger says
    commits = {int(h["silta.seq"]): int(h["version"]) for h in dt.history()
               if h.get("silta.app_id") == "silta/k"}
    assert len(commits) == dt.version() + 1
    assert commits == {b["seq"]: b["table_version"] for b in done}
    # and the rows of each batch carry its seq, as many as the ledger counted
    per_batch = Counter(data["_silta_batch"].to_pylist())
    assert per_batch == {b["seq"]: b["rows"] for b in done}
    files = ledger(tmp_path / "state", "SELECT path, status, seq FROM files WHERE sync = 'k'")
    assert sorted(f["path"] for f in files) == names
    assert {f["status"] for f in files} == {"committed"}
    assert {f["seq"] for f in files} == set(commits)
