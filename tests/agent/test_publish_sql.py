"""Publish: a Delta table's new rows into a SQL table (SQLite, PostgreSQL), exactly once.

Each run writes the Delta versions after the last published one in one transaction with
an idempotency row ``(sync, version, rows)`` in ``silta_applied``. The lake side is
written with deltalake directly, or by a Silta SQL -> lake merge (a table with the
change data feed); the SQL side is read back with sqlite3 / psycopg.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from agent.outcome import SyncProgress
from tests.agent.test_sync_sql import Builder, SqlSide, open_side, outcome, ts

TABLE = "out/codes"
PUB: dict[str, Any] = {"name": "pub", "source": f"lake:{TABLE}", "target": "db:codes",
                       "mode": "append"}
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("code", pa.string()),
                    pa.field("share", pa.float64()), pa.field("_silta_batch", pa.int64())])
Row = tuple[int, str | None, float]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side(request.param, tmp_path, request, monkeypatch)
    yield side
    side.close()
    if side.server is not None:
        side.server.start()


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side("postgresql", tmp_path, request, monkeypatch)
    yield side
    side.close()
    assert side.server is not None
    side.server.start()


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Builder]:
    builder = Builder(tmp_path)
    yield builder
    builder.close()


def table_path(root: Path, name: str = TABLE) -> Path:
    return root / "lake" / name


def commit(root: Path, rows: list[Row], *, batch: int = 1, overwrite: bool = False) -> int:
    """Rows (with a lineage column) as one Delta commit, no change feed; its version."""
    data = pa.table({"id": [r[0] for r in rows], "code": [r[1] for r in rows],
                     "share": [r[2] for r in rows], "_silta_batch": [batch] * len(rows)},
                    schema=SCHEMA)
    uri = str(table_path(root))
    if overwrite:
        write_deltalake(uri, data, mode="overwrite")
    else:
        write_deltalake(uri, data, mode="append")
    return int(DeltaTable(uri).version())


def rows_of(first: int, last: int) -> list[Row]:
    return [(i, f"C{i:03d}", i * 0.25) for i in range(first, last + 1)]


def applied(db: SqlSide) -> list[tuple[Any, ...]]:
    return db.rows("SELECT name, version, rows FROM silta_applied ORDER BY name, version")


def target(db: SqlSide, table: str = "codes", columns: str = "id, code, share"
           ) -> list[tuple[Any, ...]]:
    return db.rows(f"SELECT {columns} FROM {table} ORDER BY 1")


def stored(db: SqlSide, value: dt.datetime) -> Any:
    """A time as the target keeps it: SQLite as ISO text with microseconds (Silta's form)."""
    return value.isoformat(sep=" ", timespec="microseconds") if db.kind == "sqlite" else value


def ledger(engine: Any, sync: str = "pub") -> list[tuple[Any, ...]]:
    return [(b["seq"], b["status"], b["table_version"], b["rows"])
            for b in sorted(engine.state.batches(sync), key=lambda b: b["seq"])]


def columns_of(db: SqlSide, table: str) -> list[str]:
    if db.kind == "sqlite":
        return [r[1] for r in db.rows(f"PRAGMA table_info({table})")]
    return [r[0] for r in db.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        f"AND table_name = '{table}' ORDER BY ordinal_position")]


# -- 1. append, incrementally by Delta version ----------------------------------------------
def test_append_publishes_only_the_rows_added_since_the_last_publish(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    engine = build(db, [PUB])
    assert commit(tmp_path, rows_of(1, 3)) == 0

    first = engine.run("pub")
    assert outcome(first) == ("ok", None, 1, 3, 0)
    assert first.verified == "ok: rows read 3 = written 3"
    assert target(db) == [(1, "C001", 0.25), (2, "C002", 0.5), (3, "C003", 0.75)]
    assert columns_of(db, "codes") == ["id", "code", "share"]  # lineage stays in the lake
    assert applied(db) == [("pub", 0, 3)]

    assert commit(tmp_path, rows_of(4, 5), batch=2) == 1
    assert commit(tmp_path, [(6, None, -1.5)], batch=3) == 2
    second = engine.run("pub")
    assert outcome(second) == ("ok", None, 1, 3, 2)
    assert second.verified == "ok: rows read 3 = written 3"
    assert target(db) == [*[(i, f"C{i:03d}", i * 0.25) for i in range(1, 6)], (6, None, -1.5)]
    assert applied(db) == [("pub", 0, 3), ("pub", 2, 3)]

    idle = engine.run("pub")
    assert outcome(idle) == ("ok", None, 0, 0, 2)
    assert idle.verified == "ok: up to date (published to version 2)"
    assert len(target(db)) == 6
    assert applied(db) == [("pub", 0, 3), ("pub", 2, 3)]
    assert ledger(engine) == [(1, "committed", 0, 3), (2, "committed", 2, 3)]
    runs = engine.state.runs(name="pub")
    assert [(r["kind"], r["status"], r["rows"], r["table_version"], r["verified"])
            for r in reversed(runs)] == [
        ("publish", "ok", 3, 0, "ok: rows read 3 = written 3"),
        ("publish", "ok", 3, 2, "ok: rows read 3 = written 3"),
        ("publish", "ok", 0, 2, "ok: up to date (published to version 2)")]


def test_columns_select_and_order_the_published_columns(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    engine = build(db, [{**PUB, "columns": ["code", "id", "_silta_batch"]}])
    commit(tmp_path, rows_of(1, 2), batch=7)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 2, 0)
    assert columns_of(db, "codes") == ["code", "id", "_silta_batch"]
    commit(tmp_path, [(3, "C003", 0.0)], batch=8)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 1, 1)
    assert target(db, columns="id, code, _silta_batch") == [
        (1, "C001", 7), (2, "C002", 7), (3, "C003", 8)]


def test_snapshot_replaces_the_rows_with_the_table_at_its_version(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    engine = build(db, [{**PUB, "mode": "snapshot"}])
    commit(tmp_path, rows_of(1, 3))
    assert outcome(engine.run("pub")) == ("ok", None, 1, 3, 0)
    commit(tmp_path, rows_of(4, 4), batch=2)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 4, 1)
    assert target(db) == [(i, f"C{i:03d}", i * 0.25) for i in range(1, 5)]
    commit(tmp_path, [(9, "C009", 9.0), (2, "C002-new", 0.5)], batch=3, overwrite=True)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 2, 2)
    assert target(db) == [(2, "C002-new", 0.5), (9, "C009", 9.0)]
    assert outcome(engine.run("pub")) == ("ok", None, 0, 0, 2)
    assert applied(db) == [("pub", 0, 3), ("pub", 1, 4), ("pub", 2, 2)]


# -- 2. merge on key, from a lake table with the change data feed ----------------------------
def test_merge_publish_updates_the_sql_rows_a_lake_merge_changed(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, updated_at TIMESTAMP)")
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 5)])
    ingest = {"name": "ing", "source": "db:people", "target": "lake:raw/people",
              "watermark": "updated_at", "key": ["id"], "mode": "merge"}
    pub = {"name": "pub", "source": "lake:raw/people", "target": "db:people_out",
           "mode": "merge", "key": ["id"], "after": ["ing"]}
    engine = build(db, [ingest, pub])
    lake_table = table_path(tmp_path, "raw/people")

    assert outcome(engine.run("ing")) == ("ok", None, 1, 4, 0)
    # Silta creates its tables with the change data feed on
    assert DeltaTable(str(lake_table)).metadata().configuration == {
        "delta.enableChangeDataFeed": "true"}
    assert outcome(engine.run("pub")) == ("ok", None, 1, 4, 0)
    assert target(db, "people_out", "id, name, updated_at") == [
        (i, f"p{i}", stored(db, ts(i))) for i in range(1, 5)]

    db.execute("UPDATE people SET name = 'p2-new', updated_at = ? WHERE id = 2", ts(20))
    db.insert("people", [(5, "p5", ts(21))])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 1)
    published = engine.run("pub")
    # only the changed rows travel: the new image of id 2 and the new id 5
    assert outcome(published) == ("ok", None, 1, 2, 1)
    assert published.verified == "ok: rows read 2 = written 2"
    assert target(db, "people_out", "id, name, updated_at") == [
        (1, "p1", stored(db, ts(1))), (2, "p2-new", stored(db, ts(20))),
        (3, "p3", stored(db, ts(3))), (4, "p4", stored(db, ts(4))),
        (5, "p5", stored(db, ts(21)))]
    assert applied(db) == [("pub", 0, 4), ("pub", 1, 2)]


def test_a_merge_publish_of_several_updates_of_one_key_keeps_the_newest(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    """One publish range holds several versions of a row: the newest must win.

    The change feed hands its batches out in no particular version order; key k is
    updated by versions 1 .. k-1, so only the version order itself gets every key right
    (a chance ordering passes with odds of 1 in 9!)."""
    uri = str(table_path(tmp_path, "out/scores"))
    write_deltalake(uri, pa.table({"id": list(range(1, 11)), "v": ["v0"] * 10}),
                    configuration={"delta.enableChangeDataFeed": "true"})
    engine = build(db, [{"name": "pub", "source": "lake:out/scores", "target": "db:scores",
                         "mode": "merge", "key": ["id"]}])
    assert outcome(engine.run("pub")) == ("ok", None, 1, 10, 0)
    for step in range(1, 10):
        keys = list(range(step + 1, 11))
        (DeltaTable(uri).merge(pa.table({"id": keys, "v": [f"v{step}"] * len(keys)}),
                               "t.id = s.id", source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())
    published = engine.run("pub")
    assert (published.status, published.error, published.table_version) == ("ok", None, 9)
    assert db.rows("SELECT id, v FROM scores ORDER BY id") == [
        (1, "v0"), *[(k, f"v{k - 1}") for k in range(2, 11)]]
    assert applied(db) == [("pub", 0, 10), ("pub", 9, published.rows)]


# -- 3. a new schema and table on PostgreSQL ----------------------------------------------------
def test_a_missing_schema_and_table_are_created_with_types_from_arrow(
        pg: SqlSide, build: Builder, tmp_path: Path) -> None:
    data = pa.table({
        "response_id": pa.array([1, 2], pa.int64()),
        "isco08": pa.array(["2511", None], pa.string()),
        "confidence": pa.array([0.93, 0.5], pa.float64()),
        "reviewed": pa.array([True, False], pa.bool_()),
        "wave": pa.array([3, 4], pa.int32()),
        "survey_date": pa.array([dt.date(2024, 3, 1), dt.date(2024, 3, 2)], pa.date32()),
        "scored_at": pa.array([dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC)] * 2,
                              pa.timestamp("us", tz="UTC")),
        "local_time": pa.array([dt.datetime(2024, 3, 1, 10, 30)] * 2, pa.timestamp("us")),
        "weight": pa.array([Decimal("1.25"), Decimal("10.50")], pa.decimal128(10, 2)),
    })
    write_deltalake(str(table_path(tmp_path, "predictions/codes")), data)
    engine = build(pg, [{"name": "pub", "source": "lake:predictions/codes",
                         "target": "db:ml.occupation_codes", "mode": "merge",
                         "key": ["response_id"]}])
    assert outcome(engine.run("pub")) == ("ok", None, 1, 2, 0)

    assert pg.rows("SELECT column_name, data_type, is_nullable, numeric_precision, "
                   "numeric_scale FROM information_schema.columns WHERE table_schema = 'ml' "
                   "AND table_name = 'occupation_codes' ORDER BY ordinal_position") == [
        ("response_id", "bigint", "NO", 64, 0),
        ("isco08", "text", "YES", None, None),
        ("confidence", "double precision", "YES", 53, None),
        ("reviewed", "boolean", "YES", None, None),
        ("wave", "integer", "YES", 32, 0),
        ("survey_date", "date", "YES", None, None),
        ("scored_at", "timestamp with time zone", "YES", None, None),
        ("local_time", "timestamp without time zone", "YES", None, None),
        ("weight", "numeric", "YES", 10, 2)]
    assert pg.rows("SELECT tc.constraint_type, kcu.column_name FROM "
                   "information_schema.table_constraints tc JOIN "
                   "information_schema.key_column_usage kcu USING (constraint_schema, "
                   "constraint_name) WHERE tc.table_schema = 'ml' AND tc.table_name = "
                   "'occupation_codes'") == [("PRIMARY KEY", "response_id")]
    assert pg.rows("SELECT * FROM ml.occupation_codes ORDER BY response_id") == [
        (1, "2511", 0.93, True, 3, dt.date(2024, 3, 1),
         dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, 10, 30),
         Decimal("1.25")),
        (2, None, 0.5, False, 4, dt.date(2024, 3, 2),
         dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC), dt.datetime(2024, 3, 1, 10, 30),
         Decimal("10.50"))]
    # the bookkeeping table lives in the default schema
    assert pg.rows("SELECT table_schema FROM information_schema.tables WHERE table_name = "
                   "'silta_applied'") == [("public",)]


# -- 4. recovery ----------------------------------------------------------------------------------
def test_a_lost_ledger_publishes_nothing_twice(db: SqlSide, build: Builder,
                                               tmp_path: Path) -> None:
    engine = build(db, [PUB])
    commit(tmp_path, rows_of(1, 3))
    assert outcome(engine.run("pub")) == ("ok", None, 1, 3, 0)
    commit(tmp_path, rows_of(4, 5), batch=2)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 2, 1)
    engine.state.close()
    shutil.rmtree(tmp_path / "state")

    restarted = build(db, [PUB])
    idle = restarted.run("pub")
    assert outcome(idle) == ("ok", None, 0, 0, 1)
    assert idle.verified == "ok: up to date (published to version 1)"
    assert len(target(db)) == 5
    commit(tmp_path, rows_of(6, 6), batch=3)
    assert outcome(restarted.run("pub")) == ("ok", None, 1, 1, 2)
    assert target(db) == [(i, f"C{i:03d}", i * 0.25) for i in range(1, 7)]
    assert applied(db) == [("pub", 0, 3), ("pub", 1, 2), ("pub", 2, 1)]
    assert ledger(restarted) == [(1, "committed", 2, 1)]


def test_a_transaction_the_ledger_did_not_hear_of_is_taken_as_done(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    engine = build(db, [PUB])
    commit(tmp_path, rows_of(1, 3))
    assert outcome(engine.run("pub")) == ("ok", None, 1, 3, 0)
    with engine.state.tx() as conn:  # the agent died after the COMMIT, before the ledger
        conn.execute("UPDATE batches SET status='pending', table_version=NULL, "
                     "finished_at=NULL WHERE sync='pub' AND seq=1")
    commit(tmp_path, rows_of(4, 4), batch=2)
    assert outcome(engine.run("pub")) == ("ok", None, 1, 1, 1)
    assert target(db) == [(i, f"C{i:03d}", i * 0.25) for i in range(1, 5)]
    assert applied(db) == [("pub", 0, 3), ("pub", 1, 1)]
    assert ledger(engine) == [(1, "committed", 0, 3), (2, "committed", 1, 1)]


def test_postgresql_stopped_during_a_publish_commits_nothing_and_the_next_run_publishes_once(
        pg: SqlSide, build: Builder, tmp_path: Path) -> None:
    server = pg.server
    assert server is not None
    engine = build(pg, [PUB])
    commit(tmp_path, rows_of(1, 400))
    stops: list[int] = []

    def stop_in_the_transaction(p: SyncProgress) -> None:
        if p.rows and not stops:  # rows are on their way: the transaction is open
            stops.append(p.rows)
            server.stop()

    def failing_run() -> Any:
        stops.clear()
        try:
            return engine.run("pub", on_progress=stop_in_the_transaction)
        finally:
            server.start()
            pg.close()  # the test's own session was cut too: the next query opens a new one

    # the first publish: it would have created the table
    failed = failing_run()
    assert (failed.status, failed.retriable, failed.batches, failed.rows, stops) == (
        "failed", True, 0, 0, [400])
    error = failed.error or ""
    # the driver's own words in between vary with the moment the connection was cut
    assert error.startswith(f"writing codes (postgresql+psycopg://silta:***@127.0.0.1:"
                            f"{server.port}/{pg.database}): "), error
    assert error.endswith("; the database is unreachable or busy, the work is tried again "
                          "later"), error
    assert server.password not in error
    assert pg.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                   "'public' ORDER BY 1") == [("silta_applied",)]
    assert applied(pg) == []
    assert ledger(engine) == [(1, "failed", None, None)]
    run = engine.state.runs(name="pub")[0]
    assert (run["status"], run["error"], run["rows"], run["verified"]) == (
        "failed", error, 0, None)

    assert outcome(engine.run("pub")) == ("ok", None, 1, 400, 0)
    assert applied(pg) == [("pub", 0, 400)]

    commit(tmp_path, rows_of(401, 700), batch=2)
    commit(tmp_path, rows_of(701, 1000), batch=3)
    again = failing_run()
    assert (again.status, again.retriable, again.batches, again.rows, stops) == (
        "failed", True, 0, 0, [300])
    assert pg.rows("SELECT count(*), max(id) FROM codes") == [(400, 400)]
    assert applied(pg) == [("pub", 0, 400)]

    done = engine.run("pub")
    assert outcome(done) == ("ok", None, 1, 600, 2)
    assert done.verified == "ok: rows read 600 = written 600"
    assert pg.rows("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM codes") == [
        (1000, 1000, 1, 1000)]
    assert applied(pg) == [("pub", 0, 400), ("pub", 2, 600)]
    assert ledger(engine) == [(1, "failed", None, None), (2, "committed", 0, 400),
                              (3, "failed", None, None), (4, "committed", 2, 600)]
