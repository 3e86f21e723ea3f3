"""Exactly once under `kill -9` for SQL: a SQLite -> lake ingest and a lake -> PostgreSQL publish.

Each round adds new work (source rows, or Delta commits), starts `silta sync run NAME` and
kills it with SIGKILL if it still runs (seeded): for the ingest just after a new commit
reached the Delta log (before the ledger could record it), at a random moment among the
commits after that, or at a random moment from the start; for the publish just after its
transaction committed (before the ledger heard of it), just after the unit was planned
(inside the transaction), or at a random moment. A last, clean run finishes the work.
Every source row must then be in the target exactly once, and the ledger, the Delta log /
`silta_applied` and the data agree. `silta sync run` leaves a killed run 'running'; the
next agent start (`silta agent run --once`) marks it interrupted.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.agent.test_sync_sql import SqlSide, open_side, sql_config
from tests.conftest import duck_rows
from tests.e2e._cli import SILTA, cli_env, ledger, silta

pytestmark = pytest.mark.timeout(180)

SEED = 20260311
ROUNDS = 10
#: how each ingest round is killed: just after a new commit reached the Delta log (before the
#: ledger records it), a random moment among the commits after that one, or a random moment
#: from the start (starting, recovering, reading the source)
INGEST_KILLS = ["at-commit"] * 3 + ["in-commits"] * 4 + ["random"] * 3
#: how each publish round is killed: just after the transaction committed (before the
#: ledger records it), just after the unit was planned (inside the transaction), or at a
#: random moment from the start
PUBLISH_KILLS = ["after-commit", "planned", "random"] * 3 + ["random"]


def _start(root: Path, config: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SILTA, "sync", "run", name, "--config", str(config)], cwd=root,
                            env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_until(proc: subprocess.Popen[bytes], event: Callable[[], bool]) -> None:
    """Poll ``event`` until it happens or the run ends (a finished run is not killed)."""
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if event():
                return
        except sqlite3.Error:
            pass  # the state store is being created
        time.sleep(0.001)


def _grew(count: Callable[[], int], before: int) -> bool:
    return count() > before


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL when still running; True when it was killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        return True
    proc.wait(timeout=60)
    return False


def _runs(root: Path, name: str) -> dict[str, int]:
    rows = ledger(root / "state", "SELECT status, count(*) AS n FROM runs WHERE name = ? "
                  "GROUP BY status", (name,))
    return {r["status"]: r["n"] for r in rows}


def _finish_and_mark_interrupted(root: Path, config: Path, name: str, killed: int
                                 ) -> dict[str, int]:
    """A clean run, then an agent start; returns the run counts by status before it."""
    final = silta(root, "sync", "run", name, "--json", "--config", config)
    assert final.code == 0, final
    assert final.json()[0]["status"] == "ok", final
    before = _runs(root, name)
    # a killed `silta sync run` leaves its run 'running' (only runs that got that far)
    assert before.get("running", 0) <= killed, before
    agent = silta(root, "agent", "run", "--once", "--json", "--config", config)
    assert agent.code == 0, agent
    after = _runs(root, name)
    assert after.get("running", 0) == 0, after
    assert after.get("interrupted", 0) == before.get("running", 0), (before, after)
    return before


# -- (a) SQLite -> lake, small batches, new rows between rounds ---------------------------------
def test_kill_9_of_a_sqlite_ingest_lands_every_row_exactly_once(tmp_path: Path,
                                                                duck: Any) -> None:
    side = SqlSide("sqlite", "sqlite:///db.sqlite", path=tmp_path / "db.sqlite")
    side.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, "
                 "updated_at TIMESTAMP)")
    config = sql_config(tmp_path, side, [{
        "name": "ing", "source": "db:people", "target": "lake:raw/people",
        "watermark": "updated_at", "key": ["id"], "overlap": 30, "batch_rows": 50}])
    table = tmp_path / "lake" / "raw" / "people"
    log = table / "_delta_log"
    rng = random.Random(SEED)
    base = dt.datetime(2024, 3, 1, 8, 0, 0)
    next_id, clock = 1, 0  # clock: seconds after base, the newest watermark so far

    def add_rows(n: int = 200) -> None:
        nonlocal next_id, clock
        rows = []
        for _ in range(n):
            clock += rng.choice((0, 0, 1))  # runs of equal watermarks
            rows.append((next_id, f"p{next_id}", base + dt.timedelta(seconds=clock)))
            next_id += 1
        # committed late by the source: below the newest watermark, within the overlap
        for _ in range(3):
            late = base + dt.timedelta(seconds=max(0, clock - rng.randint(1, 20)))
            rows.append((next_id, f"late{next_id}", late))
            next_id += 1
        side.insert("people", rows)

    def commits() -> int:
        return len([n for n in os.listdir(log) if n.endswith(".json")]) if log.exists() else 0

    add_rows()
    first = silta(tmp_path, "sync", "run", "ing", "--config", config)
    assert first.code == 0, first
    began = time.monotonic()
    idle = silta(tmp_path, "sync", "run", "ing", "--config", config)
    startup = time.monotonic() - began  # a run with nothing to do; for the kill delays only
    assert idle.code == 0, idle

    killed: list[str] = []
    for round_ in range(ROUNDS):
        add_rows()
        before = commits()
        proc = _start(tmp_path, config, "ing")
        how = INGEST_KILLS[round_]
        if how == "random":
            time.sleep(rng.uniform(0.2, startup * 1.5))  # starting, recovering, reading
        else:
            _wait_until(proc, partial(_grew, commits, before))
            if how == "in-commits":
                time.sleep(rng.uniform(0, 0.15))  # among the next commits
        if _kill(proc):
            killed.append(f"round {round_} ({how}): {commits() - before} new commits")
    side.close()

    running = _finish_and_mark_interrupted(tmp_path, config, "ing", len(killed))
    # the targeted rounds did kill mid-run (a run has 4+ commits to make)
    assert len(killed) >= INGEST_KILLS.count("at-commit"), killed

    counts = duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id")
    repeated = [(i, n) for i, n in counts if n != 1]
    assert (repeated, len(counts)) == ([], next_id - 1), (killed, running)
    assert [i for i, _ in counts] == list(range(1, next_id))
    source = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        expected = sorted(source.execute("SELECT id, name, updated_at FROM people"))
    finally:
        source.close()
    landed = duck_rows(duck, table, "SELECT id, name, strftime(updated_at, '%Y-%m-%d %H:%M:%S')"
                       " FROM t ORDER BY id")
    assert landed == expected

    # ledger, Delta log and app transaction agree
    units = ledger(tmp_path / "state", "SELECT seq, status, table_version FROM batches "
                   "WHERE sync = 'ing' ORDER BY seq")
    assert [u for u in units if u["status"] in ("pending", "staged")] == []
    committed = [u for u in units if u["status"] == "committed"]
    dt_table = DeltaTable(str(table))
    assert sorted(u["table_version"] for u in committed) == list(range(dt_table.version() + 1))
    assert dt_table.transaction_version("silta/ing") == committed[-1]["seq"]


# -- (b) lake -> PostgreSQL, new Delta commits between rounds -----------------------------------
@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side("postgresql", tmp_path, request, monkeypatch)
    yield side
    side.close()


SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("code", pa.string()),
                    pa.field("share", pa.float64())])
COMMITS_PER_ROUND = 2
ROWS_PER_COMMIT = 2_000


def test_kill_9_of_a_publish_to_postgresql_publishes_every_row_exactly_once(
        pg: SqlSide, tmp_path: Path) -> None:
    config = sql_config(tmp_path, pg, [{"name": "pub", "source": "lake:out/codes",
                                        "target": "db:ml.codes", "mode": "append"}])
    uri = str(tmp_path / "lake" / "out" / "codes")
    rng = random.Random(SEED + 1)
    next_id = 0

    def add_commits() -> None:
        nonlocal next_id
        for _ in range(COMMITS_PER_ROUND):
            ids = list(range(next_id, next_id + ROWS_PER_COMMIT))
            write_deltalake(uri, pa.table({"id": ids, "code": [f"c{i:08d}" for i in ids],
                                           "share": [i / 8 for i in ids]}, schema=SCHEMA),
                            mode="append")
            next_id += ROWS_PER_COMMIT

    def units() -> int:
        return int(ledger(tmp_path / "state", "SELECT count(*) AS n FROM batches")[0]["n"])

    def published() -> int:
        return int(pg.rows("SELECT count(*) FROM silta_applied")[0][0])

    add_commits()
    began = time.monotonic()
    first = silta(tmp_path, "sync", "run", "pub", "--config", config)
    typical = time.monotonic() - began  # for the kill delays only, never asserted
    assert first.code == 0, first

    killed: list[str] = []
    for round_ in range(ROUNDS):
        add_commits()
        planned, done = units(), published()
        proc = _start(tmp_path, config, "pub")
        how = PUBLISH_KILLS[round_]
        if how == "after-commit":
            _wait_until(proc, partial(_grew, published, done))
        elif how == "planned":
            _wait_until(proc, partial(_grew, units, planned))
            time.sleep(rng.uniform(0, 0.05))
        else:
            time.sleep(rng.uniform(0.2, typical * 1.5))
        if _kill(proc):
            killed.append(f"round {round_} ({how}): {published() - done} new ranges")

    _finish_and_mark_interrupted(tmp_path, config, "pub", len(killed))
    assert len(killed) >= PUBLISH_KILLS.count("after-commit"), killed

    pg.close()  # a fresh session for the checks
    assert pg.rows("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM ml.codes") == [
        (next_id, next_id, 0, next_id - 1)], killed
    assert pg.rows("SELECT count(*) FROM ml.codes WHERE code <> 'c' || lpad(id::text, 8, '0')"
                   ) == [(0,)]
    applied = pg.rows("SELECT version, rows FROM silta_applied WHERE name = 'pub' "
                      "ORDER BY version")
    versions = [v for v, _ in applied]
    assert versions == sorted(set(versions))
    assert (sum(r for _, r in applied), versions[-1]) == (next_id, DeltaTable(uri).version())
    # each recorded range holds whole commits of ROWS_PER_COMMIT rows
    assert [r % ROWS_PER_COMMIT for _, r in applied] == [0] * len(applied)

    rows = ledger(tmp_path / "state", "SELECT status, table_version FROM batches "
                  "WHERE sync = 'pub' ORDER BY seq")
    assert [u for u in rows if u["status"] in ("pending", "staged")] == []
    # the ledger's committed ranges are exactly the ones the database recorded
    assert sorted(u["table_version"] for u in rows if u["status"] == "committed") == versions
