"""kill -9 of SQL syncs, mid-work: a SQLite -> lake ingest and a lake -> PostgreSQL publish.

What it breaks: each round adds new work (source rows, or Delta commits), starts the real
`silta sync run NAME` and, once its run is under way (its row in the runs table), sends
SIGKILL at a seeded moment. The ingest (6 rounds) is killed just after a new commit
reached the Delta log (before the ledger could record it), at a random moment among the
commits after that, or at a random moment of the run. The publish to a real PostgreSQL
server (22 rounds) is killed just after its transaction committed (before the ledger
heard of it), just after the unit was planned (inside the transaction), or at a random
moment of the run. A clean run ends each.

What it checks: the publish had at least 20 kills that landed mid-work (the killed run's
row still 'running'); every source row is in the target exactly once (DuckDB for the
lake, SQL for PostgreSQL) with its values; the ledger, the Delta log / `silta_applied`
and the data agree; the source is untouched (the SQLite table's rows, the Delta table's
versions); every killed run is 'interrupted' with its reason, the next start raised the
`interrupted` alert of monitor "agent" and the next good run resolved it; nothing
half-written under a final name; nothing created outside the configured roots (the
folder, and no table in PostgreSQL but the target and `silta_applied`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.agent.test_sync_sql import SqlSide, open_side, sql_config
from tests.conftest import duck_rows
from tests.faults._kill9 import Rounds, delta_commits, leftovers, top_level, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

SEED = 20260311
#: ingest: just after a new commit reached the Delta log, a random moment among the
#: commits after that one, or a random moment of the run
INGEST_KILLS = ["at-commit", "in-commits", "random"] * 2
#: publish: just after the transaction committed, just after the unit was planned
#: (inside the transaction), or a random moment of the run
PUBLISH_KILLS = ["after-commit", "planned", "random"] * 7 + ["after-commit"]


def _grew(count: Callable[[], int], before: int) -> Callable[[], bool]:
    return lambda: count() > before


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
        return len(delta_commits(table))

    rounds = Rounds(tmp_path, config, "sync", "ing")
    roots_before = top_level(tmp_path)
    add_rows()
    work = rounds.clean("first")  # for the kill delays only, never asserted
    hits = 0
    for i, how in enumerate(INGEST_KILLS):
        add_rows()
        before = commits()

        def moment(proc: Any, how: str = how, before: int = before) -> None:
            if how == "random":
                time.sleep(rng.uniform(0, work))
                return
            wait_until(proc, _grew(commits, before), interval=0.001)
            if how == "in-commits":
                time.sleep(rng.uniform(0, 0.15))  # among the next commits

        r = rounds.kill(f"ingest{i:02d}-{how}", moment)
        # a batch in the Delta log that the ledger still calls pending: the kill fell
        # between the commit and its record
        done = DeltaTable(str(table)).transaction_version("silta/ing")
        hits += sum(1 for u in rounds.ledger.rows(
            "SELECT seq FROM batches WHERE run_id=? AND status='pending'", (r.run_id,))
            if done is not None and u["seq"] <= done)
    source_before = sorted(side.rows("SELECT id, name, updated_at FROM people"))
    side.close()
    rounds.clean("final")
    killed = rounds.killed
    print(f"\nkill -9 of a SQLite ingest: {len(killed)} mid-work kills of "
          f"{len(INGEST_KILLS)} rounds: {Counter(r.kind.split('-', 1)[1] for r in killed)}; "
          f"{hits} batch(es) committed but not recorded")
    # the targeted rounds kill mid-run (a run has 4+ commits to make)
    assert len(killed) >= INGEST_KILLS.count("at-commit"), rounds.done
    assert hits >= 1, rounds.done

    counts = duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id")
    assert [(i, n) for i, n in counts if n != 1] == []
    assert [i for i, _ in counts] == list(range(1, next_id))
    source = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        expected = sorted(source.execute("SELECT id, name, updated_at FROM people"))
    finally:
        source.close()
    assert expected == source_before  # the source untouched
    landed = duck_rows(duck, table, "SELECT id, name, strftime(updated_at, '%Y-%m-%d %H:%M:%S')"
                       " FROM t ORDER BY id")
    assert landed == expected
    data = DeltaTable(str(table)).to_pyarrow_dataset().to_table()  # a second reader
    assert sorted(data["id"].to_pylist()) == list(range(1, next_id))

    # ledger, Delta log and app transaction agree; every other version is a compaction
    units = rounds.ledger.rows("SELECT seq, status, table_version FROM batches "
                               "WHERE sync = 'ing' ORDER BY seq")
    assert [u for u in units if u["status"] in ("pending", "staged")] == []
    committed = [u for u in units if u["status"] == "committed"]
    dt_table = DeltaTable(str(table))
    history = dt_table.history()
    assert {int(h["silta.seq"]): int(h["version"]) for h in history
            if h.get("silta.app_id") == "silta/ing"} == {
        u["seq"]: u["table_version"] for u in committed}
    others = [h for h in history if h.get("silta.app_id") != "silta/ing"]
    assert [h["operation"] for h in others] == ["OPTIMIZE"] * len(others)
    assert len(committed) + len(others) == dt_table.version() + 1
    assert dt_table.transaction_version("silta/ing") == committed[-1]["seq"]

    rounds.check_runs_and_alerts()
    known, unknown, broken = leftovers(tmp_path)
    assert (unknown, broken) == ([], []), known
    assert top_level(tmp_path) == roots_before | {"lake", "state"}
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == ["_silta", "raw"]


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
        pg: SqlSide, tmp_path: Path, duck: Any) -> None:
    config = sql_config(tmp_path, pg, [{"name": "pub", "source": "lake:out/codes",
                                        "target": "db:ml.codes", "mode": "append"}])
    source = tmp_path / "lake" / "out" / "codes"
    rng = random.Random(SEED + 1)
    next_id = 0

    def add_commits() -> None:
        nonlocal next_id
        for _ in range(COMMITS_PER_ROUND):
            ids = list(range(next_id, next_id + ROWS_PER_COMMIT))
            write_deltalake(str(source), pa.table({"id": ids, "code": [f"c{i:08d}" for i in ids],
                                                   "share": [i / 8 for i in ids]},
                                                  schema=SCHEMA), mode="append")
            next_id += ROWS_PER_COMMIT

    rounds = Rounds(tmp_path, config, "publish", "pub")

    def units() -> int:
        return len(rounds.ledger.rows("SELECT seq FROM batches WHERE sync='pub'"))

    def published() -> int:
        return int(pg.rows("SELECT count(*) FROM silta_applied")[0][0])

    add_commits()
    roots_before = top_level(tmp_path)
    work = rounds.clean("first")  # for the kill delays only, never asserted
    started = time.monotonic()
    hits: Counter[str] = Counter()
    for i, how in enumerate(PUBLISH_KILLS):
        add_commits()
        planned, done = units(), published()

        def moment(proc: Any, how: str = how, planned: int = planned, done: int = done
                   ) -> None:
            if how == "after-commit":
                # no sleep between polls: the window before the ledger's record is ~ms
                wait_until(proc, _grew(published, done), interval=0)
            elif how == "planned":
                wait_until(proc, _grew(units, planned), interval=0.001)
                time.sleep(rng.uniform(0, 0.05))
            else:
                time.sleep(rng.uniform(0, work))

        r = rounds.kill(f"publish{i:02d}-{how}", moment)
        # the dangerous moments hit: a unit committed in PostgreSQL that the ledger still
        # calls pending, or a unit planned whose transaction never committed
        in_db = {int(v) for (v,) in pg.rows("SELECT version FROM silta_applied")}
        for u in rounds.ledger.rows("SELECT status, detail FROM batches WHERE run_id=?",
                                    (r.run_id,)):
            if u["status"] == "pending":
                landed = int(json.loads(u["detail"])["to_version"]) in in_db
                hits["committed, not recorded" if landed else "inside the transaction"] += 1
    killed = rounds.killed
    by_kind = Counter(r.kind.split("-", 1)[1] for r in killed)
    print(f"\nkill -9 of a publish to PostgreSQL: {len(killed)} mid-work kills of "
          f"{len(PUBLISH_KILLS)} rounds ({by_kind['after-commit']} just after the commit, "
          f"{by_kind['planned']} after planning, {by_kind['random']} random); units left "
          f"pending: {dict(hits)}; {time.monotonic() - started:.1f} s")
    assert len(killed) >= 20, rounds.done
    assert hits["committed, not recorded"] >= 1, (hits, rounds.done)
    assert hits["inside the transaction"] >= 1, (hits, rounds.done)
    rounds.clean("final")

    pg.close()  # a fresh session for the checks
    assert pg.rows("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM ml.codes") == [
        (next_id, next_id, 0, next_id - 1)]
    assert pg.rows("SELECT count(*) FROM ml.codes WHERE code <> 'c' || lpad(id::text, 8, '0')"
                   " OR share <> id / 8.0") == [(0,)]
    applied = pg.rows("SELECT version, rows FROM silta_applied WHERE name = 'pub' "
                      "ORDER BY version")
    versions = [v for v, _ in applied]
    assert versions == sorted(set(versions))
    assert (sum(r for _, r in applied), versions[-1]) == (next_id,
                                                          DeltaTable(str(source)).version())
    # each recorded range holds whole commits of ROWS_PER_COMMIT rows
    assert [r % ROWS_PER_COMMIT for _, r in applied] == [0] * len(applied)
    # nothing written in the database but the target and the idempotency table
    assert pg.rows("SELECT table_schema, table_name FROM information_schema.tables WHERE "
                   "table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
                   ) == [("ml", "codes"), ("public", "silta_applied")]

    units_rows = rounds.ledger.rows("SELECT status, table_version FROM batches "
                                    "WHERE sync = 'pub' ORDER BY seq")
    assert [u for u in units_rows if u["status"] in ("pending", "staged")] == []
    # the ledger's committed ranges are exactly the ones the database recorded
    assert sorted(u["table_version"] for u in units_rows if u["status"] == "committed") \
        == versions

    # the source untouched: our commits only, every row once (deltalake and DuckDB)
    src = DeltaTable(str(source))
    assert (src.version(), [h["operation"] for h in src.history()]) == (
        COMMITS_PER_ROUND * (len(PUBLISH_KILLS) + 1) - 1,
        ["WRITE"] * COMMITS_PER_ROUND * (len(PUBLISH_KILLS) + 1))
    assert src.to_pyarrow_dataset().count_rows() == next_id
    assert duck_rows(duck, source, "SELECT count(*), count(DISTINCT id) FROM t") == [
        (next_id, next_id)]

    rounds.check_runs_and_alerts()
    known, unknown, broken = leftovers(tmp_path)
    assert (unknown, broken) == ([], []), known
    assert top_level(tmp_path) == roots_before | {"state"}
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == ["_silta", "out"]
