"""SQL -> lake ("table ingest"): watermark windows, overlap, commits, modes, recovery.

The source is a real SQLite file or a real PostgreSQL database (``postgres_server``);
most tests run against both. Source rows are written with sqlite3 / psycopg directly,
the Delta tables are read back with deltalake and DuckDB (``rows_both``), and the commit
metadata straight from the ``_delta_log`` JSON files, independently of Silta's reader.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from agent.config import load_config
from agent.outcome import SyncProgress
from agent.state import StateStore
from agent.stores import open_lake, open_store
from agent.sync import SyncEngine
from tests.agent.helpers import rows_both
from tests.conftest import duck_rows
from tests.servers.postgres import PostgresServer

TABLE = "raw/people"
ING: dict[str, Any] = {"name": "ing", "source": "db:people", "target": f"lake:{TABLE}",
                       "watermark": "updated_at", "key": ["id"]}
PEOPLE = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, updated_at TIMESTAMP)"


def ts(second: float, minute: int = 0, hour: int = 10, day: int = 1) -> dt.datetime:
    """A time on 2024-03-``day``: the watermarks of the tests."""
    whole = int(second)
    return dt.datetime(2024, 3, day, hour, minute, whole, round((second - whole) * 1e6))


# -- the SQL side ---------------------------------------------------------------------------
@dataclass
class SqlSide:
    """A real database to write source rows into and read published rows from."""

    kind: str  # "sqlite" | "postgresql"
    url: str  # as written in the config (sqlite: relative to the config folder)
    path: Path | None = None
    server: PostgresServer | None = None
    database: str | None = None
    _conn: Any = field(default=None, repr=False)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            if self.kind == "sqlite":
                assert self.path is not None
                self._conn = sqlite3.connect(self.path, isolation_level=None)
            else:
                assert self.server is not None
                self._conn = self.server.connect(self.database)
        return self._conn

    def _sql(self, sql: str) -> str:
        return sql if self.kind == "sqlite" else sql.replace("?", "%s")

    def _value(self, v: Any) -> Any:
        if self.kind == "sqlite" and isinstance(v, dt.datetime):
            if v.tzinfo is not None:  # SQLite keeps UTC without an offset (as Silta writes)
                v = v.astimezone(dt.UTC).replace(tzinfo=None)
            return v.isoformat(sep=" ")  # how applications store times in SQLite
        if self.kind == "sqlite" and isinstance(v, dt.date):
            return v.isoformat()
        if self.kind == "sqlite" and isinstance(v, Decimal):
            return str(v)
        return v

    def execute(self, sql: str, *params: Any) -> None:
        self.conn.execute(self._sql(sql), tuple(self._value(p) for p in params))

    def insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(rows[0]))
        cur = self.conn.cursor()
        cur.executemany(self._sql(f"INSERT INTO {table} VALUES ({marks})"),
                        [tuple(self._value(v) for v in r) for r in rows])
        cur.close()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_side(kind: str, root: Path, request: pytest.FixtureRequest,
              monkeypatch: pytest.MonkeyPatch) -> SqlSide:
    if kind == "sqlite":
        return SqlSide("sqlite", "sqlite:///db.sqlite", path=root / "db.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.start()
    name = server.new_database()
    monkeypatch.setenv("PGPASS", server.password)
    return SqlSide("postgresql", server.url_for(name), server=server, database=name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side(request.param, tmp_path, request, monkeypatch)
    yield side
    side.close()
    if side.server is not None:
        side.server.start()  # whatever the test did to it


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side("postgresql", tmp_path, request, monkeypatch)
    yield side
    side.close()
    assert side.server is not None
    side.server.start()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[SqlSide]:
    side = SqlSide("sqlite", "sqlite:///db.sqlite", path=tmp_path / "db.sqlite")
    yield side
    side.close()


# -- config and engine ----------------------------------------------------------------------
def sql_config(root: Path, side: SqlSide, syncs: list[dict[str, Any]]) -> Path:
    """silta.toml in ``root``: connector `db` on ``side``, lake ./lake, state ./state."""
    lines = ["[agent]", 'name = "test-agent"', 'state_dir = "state"', "[lake]", 'uri = "lake"',
             "[connectors.db]", 'type = "sql"', f"url = {json.dumps(side.url)}"]
    if side.kind == "postgresql":
        lines.append('password = "${PGPASS}"')
    for s in syncs:
        lines.append("[[syncs]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in s.items()]  # JSON values are TOML
    path = root / "silta.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Builder:
    """``builder(db, [sync, ...])`` -> an engine over ``root``; ``close()`` closes them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[SyncEngine] = []

    def __call__(self, side: SqlSide, syncs: list[dict[str, Any]]) -> SyncEngine:
        loaded = load_config(sql_config(self.root, side, syncs))
        stores = {n: open_store(loaded, n) for n in loaded.config.connectors}
        engine = SyncEngine(loaded, StateStore(loaded.state_dir), open_lake(loaded), stores,
                            "test-agent")
        self.made.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.made:
            engine.state.close()
            for store in engine.stores.values():
                store.close()


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Builder]:
    builder = Builder(tmp_path)
    yield builder
    builder.close()


def outcome(o: Any) -> tuple[Any, ...]:
    return (o.status, o.error, o.batches, o.rows, o.table_version)


# -- independent readers of the Delta table ---------------------------------------------------
def commit_infos(table: Path) -> list[dict[str, Any]]:
    """Every commit's commitInfo (with ``version``) from the _delta_log files."""
    out = []
    for f in sorted((table / "_delta_log").glob("*.json")):
        for line in f.read_text(encoding="utf-8").splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                out.append({"version": int(f.stem), **action["commitInfo"]})
    return out


def commit_rows(table: Path, version: int, columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows of the data files one commit added, read with pyarrow."""
    rows: list[tuple[Any, ...]] = []
    log = (table / "_delta_log" / f"{version:020d}.json").read_text(encoding="utf-8")
    for line in log.splitlines():
        action = json.loads(line)
        if "add" in action:
            data = pq.read_table(table / action["add"]["path"], columns=columns)
            rows += [tuple(r[c] for c in columns) for r in data.to_pylist()]
    return sorted(rows)


def watermarks(table: Path) -> list[dict[str, Any] | None]:
    """The ``silta.watermark`` of each commit, oldest first, decoded from JSON."""
    return [json.loads(c["silta.watermark"]) if "silta.watermark" in c else None
            for c in commit_infos(table)]


def ledger(engine: SyncEngine, sync: str = "ing") -> list[tuple[Any, ...]]:
    return [(b["seq"], b["status"], b["table_version"], b["rows"])
            for b in sorted(engine.state.batches(sync), key=lambda b: b["seq"])]


def lake_schema(table: Path) -> pa.Schema:
    return pa.schema(DeltaTable(str(table)).schema().to_arrow())


def lake(root: Path) -> Path:
    return root / "lake" / "raw" / "people"


# -- 1. watermark windows (append, key given) -------------------------------------------------
def test_watermark_append_lands_only_new_and_updated_rows_and_an_idle_run_commits_nothing(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 6)])
    engine = build(db, [ING])
    table = lake(tmp_path)

    first = engine.run("ing")
    assert outcome(first) == ("ok", None, 1, 5, 0)
    assert first.verified == "ok: rows read 5 = written 5"
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == [
        (i, f"p{i}", ts(i)) for i in range(1, 6)]
    assert lake_schema(table).names == ["id", "name", "updated_at", "_silta_source",
                                        "_silta_batch", "_silta_ingested_at"]
    assert rows_both(duck, table, ["_silta_source", "_silta_batch"]) == [("db:people", 1)] * 5

    db.execute("UPDATE people SET name = ?, updated_at = ? WHERE id = 2", "p2-new", ts(0, 5))
    db.insert("people", [(6, "p6", ts(30, 5))])
    second = engine.run("ing")
    assert outcome(second) == ("ok", None, 1, 2, 1)
    # append keeps history: id 2 is there in both versions of the row
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == sorted(
        [(i, f"p{i}", ts(i)) for i in range(1, 6)]
        + [(2, "p2-new", ts(0, 5)), (6, "p6", ts(30, 5))])
    assert commit_rows(table, 1, ["id", "name"]) == [(2, "p2-new"), (6, "p6")]

    idle = engine.run("ing")
    assert outcome(idle) == ("ok", None, 0, 0, 1)
    assert DeltaTable(str(table)).version() == 1
    assert len(commit_infos(table)) == 2
    assert watermarks(table) == [
        {"kind": "timestamp", "value": "2024-03-01T10:00:05"},
        {"kind": "timestamp", "value": "2024-03-01T10:05:30"}]
    assert ledger(engine) == [(1, "committed", 0, 5), (2, "committed", 1, 2)]
    runs = list(reversed(engine.state.runs(name="ing")))
    assert [(r["kind"], r["status"], r["rows"], r["batches"], r["table_version"])
            for r in runs] == [("sync", "ok", 5, 1, 0), ("sync", "ok", 2, 1, 1),
                               ("sync", "ok", 0, 0, 1)]
    assert runs[0]["verified"] == "ok: rows read 5 = written 5"


def test_the_check_of_a_run_that_re_reads_the_boundary_counts_what_it_kept(
        db: SqlSide, build: Builder, tmp_path: Path) -> None:
    """The run record says rows read = written; rows re-read at the watermark (and in the
    overlap) and dropped as already in the table must not make that a false equality."""
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 4)])
    engine = build(db, [ING])
    assert engine.run("ing").verified == "ok: rows read 3 = written 3"
    db.insert("people", [(4, "p4", ts(10))])
    second = engine.run("ing")
    assert outcome(second) == ("ok", None, 1, 1, 1)
    # The source gave 2 rows (id 3 again at the boundary, id 4); 1 was new and written:
    # "read 2 = written 1" alone would be a false equality.
    text = second.verified
    assert text == "ok: rows read 2 = written 1 + 1 already in the target"
    idle = engine.run("ing")
    assert outcome(idle) == ("ok", None, 0, 0, 1)
    assert idle.verified == "ok: rows read 1 = written 0 + 1 already in the target"
    runs = engine.state.runs(name="ing")
    assert [r["verified"] for r in runs[:2]] == [idle.verified, text]


def test_overlap_takes_a_late_row_once_and_never_doubles_the_rows_read_again(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 5)])  # 10:00:01 .. 10:00:04
    engine = build(db, [{**ING, "overlap": 120}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 4, 0)

    # Committed late by the source: 0.5 s below the last committed watermark (within the
    # overlap), and one ten minutes below it (beyond the overlap), and one new row.
    db.insert("people", [(5, "late", ts(3.5)), (6, "too-late", ts(0, 54, 9)),
                         (7, "new", ts(10))])
    second = engine.run("ing")
    assert outcome(second) == ("ok", None, 1, 2, 1)
    assert commit_rows(table, 1, ["id", "name"]) == [(5, "late"), (7, "new")]

    again = engine.run("ing")  # the overlap re-reads ids 1-5 and 7: all already there
    assert outcome(again) == ("ok", None, 0, 0, 1)
    # The contract: a row committed later than `overlap` below the watermark is never read.
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == [
        (1, "p1", ts(1)), (2, "p2", ts(2)), (3, "p3", ts(3)), (4, "p4", ts(4)),
        (5, "late", ts(3.5)), (7, "new", ts(10))]
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [(6, 6)]
    assert watermarks(table) == [{"kind": "timestamp", "value": "2024-03-01T10:00:04"},
                                 {"kind": "timestamp", "value": "2024-03-01T10:00:10"}]


def test_rows_sharing_the_boundary_watermark_are_neither_lost_nor_doubled(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(1, "a", ts(1)), (2, "b", ts(2)), (3, "c", ts(2))])
    engine = build(db, [ING])  # no overlap: the boundary value itself is read again
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 0)

    db.insert("people", [(4, "d", ts(2)), (5, "e", ts(3))])  # id 4 at the boundary value
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 1)
    db.insert("people", [(6, "f", ts(3))])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 1, 2)
    assert outcome(engine.run("ing")) == ("ok", None, 0, 0, 2)
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == [
        (1, "a", ts(1)), (2, "b", ts(2)), (3, "c", ts(2)), (4, "d", ts(2)), (5, "e", ts(3)),
        (6, "f", ts(3))]


def test_rows_without_a_watermark_value_are_never_landed_twice(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    """A NULL watermark cannot be placed in a window: whatever a run does with such rows
    (land them once, or leave them out and say so), the next run must not add them again."""
    db.execute(PEOPLE)
    db.insert("people", [(1, "a", None), (2, "b", None)])
    engine = build(db, [ING])
    table = lake(tmp_path)
    first = engine.run("ing")
    second = engine.run("ing")
    db.insert("people", [(3, "c", ts(3))])
    third = engine.run("ing")
    assert (first.error, second.error, second.batches, third.error, third.batches,
            third.rows) == (None, None, 0, None, 1, 1)
    counts = duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id")
    assert ([(i, n) for i, n in counts if n != 1], counts[-1]) == ([], (3, 1))


def test_batch_rows_cuts_commits_where_the_watermark_changes_each_with_its_watermark(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, updated_at INTEGER)")
    # watermark groups: 1 | 2 2 | 3 | 4 x5 (more than batch_rows) | 5 | 6 6 | 7
    marks = [1, 2, 2, 3, 4, 4, 4, 4, 4, 5, 6, 6, 7]
    db.insert("people", [(i, f"p{i}", m) for i, m in enumerate(marks, start=1)])
    engine = build(db, [{**ING, "batch_rows": 3}])
    table = lake(tmp_path)

    out = engine.run("ing")
    commits = commit_infos(table)
    assert outcome(out) == ("ok", None, len(commits), 13, len(commits) - 1)
    groups = [[m for _, m in commit_rows(table, c["version"], ["id", "updated_at"])]
              for c in commits]
    assert groups == [[1], [2, 2, 3], [4, 4, 4, 4, 4], [5], [6, 6], [7]]
    # each commit carries the highest watermark it holds, and they only go up
    assert watermarks(table) == [{"kind": "int", "value": g[-1]} for g in groups]
    # no group of equal watermarks is split over two commits, the one of 5 rows included
    assert [sum(value in g for g in groups) for value in sorted(set(marks))] == [1] * 7
    assert [c["silta.seq"] for c in commits] == ["1", "2", "3", "4", "5", "6"]
    assert ledger(engine) == [(i + 1, "committed", i, len(g)) for i, g in enumerate(groups)]
    assert duck_rows(duck, table, "SELECT count(*), count(DISTINCT id) FROM t") == [(13, 13)]


def test_a_group_of_equal_watermarks_larger_than_batch_rows_is_split_safely(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, updated_at INTEGER)")
    marks = [1] * 7 + [2, 2]
    db.insert("people", [(i, f"p{i}", m) for i, m in enumerate(marks, start=1)])
    engine = build(db, [{**ING, "batch_rows": 3}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 4, 9, 3)
    groups = [commit_rows(table, c["version"], ["id", "updated_at"])
              for c in commit_infos(table)]
    # a group bigger than batch_rows is cut where the buffer is full (a re-read drops
    # what the table already holds, so that is safe); the last group stays whole
    assert groups == [[(1, 1), (2, 1), (3, 1)], [(4, 1), (5, 1), (6, 1)], [(7, 1)],
                      [(8, 2), (9, 2)]]
    assert [w["value"] if w else None for w in watermarks(table)] == [1, 1, 1, 2]
    # A new row at the last value is still found, and the rows read again are not doubled.
    db.insert("people", [(10, "p10", 2), (11, "p11", 3)])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 4)
    assert duck_rows(duck, table, "SELECT id, updated_at FROM t ORDER BY id") == [
        (i, m) for i, m in enumerate([*marks, 2, 3], start=1)]


WATERMARK_TYPES: dict[str, tuple[str, list[Any], str, list[Any]]] = {
    # kind: (SQL type, four rising values, Arrow type in the lake, their JSON in the commit)
    "timestamp": ("TIMESTAMP", [ts(0), ts(30), ts(0, 1), ts(0, 2)], "timestamp[us]",
                  ["2024-03-01T10:00:30", "2024-03-01T10:02:00"]),
    "integer": ("INTEGER", [100, 200, 201, 350], "int64", [200, 350]),
    "date": ("DATE", [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 5),
                      dt.date(2024, 3, 9)], "date32[day]", ["2024-03-02", "2024-03-09"]),
    "text": ("TEXT", ["A-0001", "A-0002", "A-0010", "B-0001"], "string",
             ["A-0002", "B-0001"]),
    "timestamptz": ("TIMESTAMP WITH TIME ZONE",
                    [ts(0).replace(tzinfo=dt.UTC), ts(30).replace(tzinfo=dt.UTC),
                     ts(0, 1).replace(tzinfo=dt.UTC), ts(0, 2).replace(tzinfo=dt.UTC)],
                    "timestamp[us, tz=UTC]",
                    ["2024-03-01T10:00:30+00:00", "2024-03-01T10:02:00+00:00"]),
    "decimal": ("NUMERIC(10,2)", [Decimal("1.25"), Decimal("2.50"), Decimal("2.75"),
                                  Decimal("10.00")], "decimal128(10, 2)", ["2.50", "10.00"]),
}
JSON_KIND = {"timestamp": "timestamp", "integer": "int", "date": "date", "text": "str",
             "timestamptz": "timestamp", "decimal": "decimal"}


@pytest.mark.parametrize("kind", list(WATERMARK_TYPES))
def test_watermark_types(kind: str, db: SqlSide, build: Builder, tmp_path: Path,
                         duck: Any) -> None:
    sql_type, (w1, w2, w3, w4), arrow_type, committed = WATERMARK_TYPES[kind]
    db.execute(f"CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, "
               f"updated_at {sql_type})")
    db.insert("people", [(1, "a", w1), (2, "b", w2), (3, "c", w2)])
    # overlap 1: one second, one unit, one day; text has no "below": the boundary only
    engine = build(db, [{**ING, "overlap": 1}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 0)

    db.insert("people", [(4, "d", w2), (5, "e", w3)])
    db.execute("UPDATE people SET name = ?, updated_at = ? WHERE id = 1", "a2", w4)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 1)
    assert outcome(engine.run("ing")) == ("ok", None, 0, 0, 1)

    assert str(lake_schema(table).field("updated_at").type) == arrow_type
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == sorted([
        (1, "a", w1), (2, "b", w2), (3, "c", w2), (4, "d", w2), (5, "e", w3), (1, "a2", w4)])
    assert watermarks(table) == [{"kind": JSON_KIND[kind], "value": v} for v in committed]


def test_sqlite_iso_times_written_with_a_t_are_not_ingested_again_on_every_run(
        lite: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    """'2024-03-01T10:00:01' is a valid SQLite time string (and Python's isoformat(),
    JavaScript's toISOString()); Silta reads it as a timestamp, so its watermark must
    compare as one too, not as text against '2024-03-01 10:00:05'."""
    lite.execute(PEOPLE)
    lite.conn.executemany("INSERT INTO people VALUES (?, ?, ?)",
                          [(i, f"p{i}", ts(i).isoformat()) for i in range(1, 6)])
    engine = build(lite, [ING])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 5, 0)
    assert watermarks(table) == [{"kind": "timestamp", "value": "2024-03-01T10:00:05"}]
    again = engine.run("ing")
    assert outcome(again) == ("ok", None, 0, 0, 0)
    assert duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id") == [
        (i, 1) for i in range(1, 6)]


# -- 2. modes -----------------------------------------------------------------------------------
def test_merge_with_watermark_replaces_updated_rows_in_the_lake(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 5)])
    engine = build(db, [{**ING, "mode": "merge", "overlap": 5}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 4, 0)

    db.execute("UPDATE people SET name = 'p2-new', updated_at = ? WHERE id = 2", ts(20))
    db.execute("UPDATE people SET name = 'p4-new', updated_at = ? WHERE id = 4", ts(21))
    db.insert("people", [(5, "p5", ts(22))])
    second = engine.run("ing")
    assert outcome(second) == ("ok", None, 1, 3, 1)
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == [
        (1, "p1", ts(1)), (2, "p2-new", ts(20)), (3, "p3", ts(3)), (4, "p4-new", ts(21)),
        (5, "p5", ts(22))]
    infos = commit_infos(table)
    assert [c["operation"] for c in infos] == ["WRITE", "MERGE"]
    assert (infos[1]["operationMetrics"]["num_target_rows_updated"],
            infos[1]["operationMetrics"]["num_target_rows_inserted"]) == (2, 1)
    assert watermarks(table)[1] == {"kind": "timestamp", "value": "2024-03-01T10:00:22"}
    # the overlap re-reads ids 2, 4, 5: already there with the same watermark
    assert outcome(engine.run("ing")) == ("ok", None, 0, 0, 1)
    assert DeltaTable(str(table)).metadata().configuration == {
        "delta.enableChangeDataFeed": "true"}
    # time travel: version 0 still has the rows as they were
    assert rows_both(duck, table, ["id", "name"], version=0) == [
        (1, "p1"), (2, "p2"), (3, "p3"), (4, "p4")]


def test_snapshot_without_watermark_replaces_the_table_each_run(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(1, "a", ts(1)), (2, "b", ts(2)), (3, "c", ts(3))])
    engine = build(db, [{"name": "ing", "source": "db:people", "target": f"lake:{TABLE}",
                         "mode": "snapshot"}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 0)

    db.execute("DELETE FROM people WHERE id = 2")
    db.execute("UPDATE people SET name = 'c2' WHERE id = 3")
    db.insert("people", [(4, "d", ts(4))])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 1)
    assert rows_both(duck, table, ["id", "name"]) == [(1, "a"), (3, "c2"), (4, "d")]
    assert rows_both(duck, table, ["id", "name"], version=0) == [(1, "a"), (2, "b"), (3, "c")]
    assert [(c["operation"], c["operationParameters"]["mode"])
            for c in commit_infos(table)] == [("WRITE", "ErrorIfExists"),
                                              ("WRITE", "Overwrite")]
    assert watermarks(table) == [None, None]

    db.execute("DELETE FROM people")
    assert outcome(engine.run("ing")) == ("ok", None, 1, 0, 2)  # an empty source empties it
    assert rows_both(duck, table, ["id", "name"]) == []
    assert rows_both(duck, table, ["id", "name"], version=1) == [(1, "a"), (3, "c2"), (4, "d")]


def test_merge_without_watermark_upserts_every_row_and_keeps_rows_gone_from_the_source(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(1, "a", ts(1)), (2, "b", ts(2)), (3, "c", ts(3))])
    engine = build(db, [{"name": "ing", "source": "db:people", "target": f"lake:{TABLE}",
                         "mode": "merge", "key": ["id"]}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 0)
    db.execute("UPDATE people SET name = 'a2' WHERE id = 1")
    db.execute("DELETE FROM people WHERE id = 2")
    db.insert("people", [(4, "d", ts(4))])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 1)
    # a merge never deletes: id 2 stays in the lake
    assert rows_both(duck, table, ["id", "name", "updated_at"]) == [
        (1, "a2", ts(1)), (2, "b", ts(2)), (3, "c", ts(3)), (4, "d", ts(4))]
    metrics = commit_infos(table)[1]["operationMetrics"]
    assert (metrics["num_target_rows_updated"], metrics["num_target_rows_inserted"]) == (2, 1)


def test_a_query_source_with_a_join_a_where_and_a_watermark(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute("CREATE TABLE dept (id INTEGER PRIMARY KEY, label TEXT)")
    db.execute("CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT, dept_id INTEGER, "
               "active INTEGER, changed TIMESTAMP)")
    db.insert("dept", [(10, "Prices"), (20, "Labour")])
    db.insert("staff", [(1, "a", 10, 1, ts(1)), (2, "b", 20, 0, ts(2)), (3, "c", 20, 1, ts(3))])
    query = ("SELECT s.id, s.name, d.label AS dept, s.changed FROM staff s "
             "JOIN dept d ON d.id = s.dept_id WHERE s.active = 1;")
    engine = build(db, [{"name": "ing", "source": "db", "query": query,
                         "target": f"lake:{TABLE}", "watermark": "changed", "key": ["id"]}])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 0)

    db.insert("staff", [(4, "d", 10, 1, ts(4)), (5, "e", 10, 0, ts(5))])
    db.execute("UPDATE dept SET label = 'Prices & Wages' WHERE id = 10")  # no watermark move
    db.execute("UPDATE staff SET active = 1, changed = ? WHERE id = 2", ts(6))
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 1)
    assert outcome(engine.run("ing")) == ("ok", None, 0, 0, 1)

    # SQLite's query results carry no types: its times arrive as their ISO text
    def when(s: int) -> Any:
        return ts(s) if db.kind == "postgresql" else ts(s).isoformat(sep=" ")

    assert rows_both(duck, table, ["id", "name", "dept", "changed"]) == [
        (1, "a", "Prices", when(1)), (2, "b", "Labour", when(6)), (3, "c", "Labour", when(3)),
        (4, "d", "Prices & Wages", when(4))]
    assert [c["silta.source"] for c in commit_infos(table)] == ["db:(query)", "db:(query)"]


# -- 3. recovery ---------------------------------------------------------------------------------
def test_a_commit_the_ledger_did_not_hear_of_is_recovered_from_the_table(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 7)])
    engine = build(db, [{**ING, "batch_rows": 2}])
    table = lake(tmp_path)
    # commits cut where the watermark changes: [1] [2 3] [4 5] [6]
    assert outcome(engine.run("ing")) == ("ok", None, 4, 6, 3)
    # The last commit landed but the agent died before the ledger said so.
    with engine.state.tx() as conn:
        conn.execute("UPDATE batches SET status='pending', table_version=NULL, rows=NULL, "
                     "finished_at=NULL WHERE sync='ing' AND seq=4")
    assert [u[0] for u in engine.state.open_units("ing")] == [4]

    db.insert("people", [(7, "p7", ts(7))])
    out = engine.run("ing")
    assert outcome(out) == ("ok", None, 1, 1, 4)
    assert ledger(engine) == [(1, "committed", 0, 1), (2, "committed", 1, 2),
                              (3, "committed", 2, 2), (4, "committed", 3, 1),
                              (5, "committed", 4, 1)]
    assert duck_rows(duck, table, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(1, 8)]


def test_a_lost_state_folder_takes_the_watermark_and_the_batch_number_from_delta(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 6)])
    engine = build(db, [{**ING, "batch_rows": 2}])
    table = lake(tmp_path)
    # commits: [1] [2 3] [4] [5]
    assert outcome(engine.run("ing")) == ("ok", None, 4, 5, 3)
    engine.state.close()
    shutil.rmtree(tmp_path / "state")

    db.insert("people", [(6, "p6", ts(6)), (7, "p7", ts(7))])
    restarted = build(db, [{**ING, "batch_rows": 2}])
    out = restarted.run("ing")
    assert outcome(out) == ("ok", None, 2, 2, 5)
    # the new ledger goes on after the table's last batch number, never reusing one
    assert ledger(restarted) == [(5, "committed", 4, 1), (6, "committed", 5, 1)]
    assert DeltaTable(str(table)).transaction_version("silta/ing") == 6
    assert duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id") == [
        (i, 1) for i in range(1, 8)]
    assert outcome(restarted.run("ing")) == ("ok", None, 0, 0, 5)


def test_a_lost_ledger_in_merge_mode_neither_doubles_nor_loses(
        db: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    db.execute(PEOPLE)
    db.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 5)])
    sync = {**ING, "mode": "merge", "batch_rows": 2}
    engine = build(db, [sync])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 3, 4, 2)  # [1] [2 3] [4]
    engine.state.close()
    shutil.rmtree(tmp_path / "state")
    db.execute("UPDATE people SET name = 'p1-new', updated_at = ? WHERE id = 1", ts(9))
    restarted = build(db, [sync])
    assert outcome(restarted.run("ing")) == ("ok", None, 1, 1, 3)
    assert watermarks(table)[-1] == {"kind": "timestamp", "value": "2024-03-01T10:00:09"}
    assert rows_both(duck, table, ["id", "name"]) == [
        (1, "p1-new"), (2, "p2"), (3, "p3"), (4, "p4")]


def test_postgresql_stopped_in_the_middle_of_a_run_fails_retriably_then_lands_the_rest_once(
        pg: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    server = pg.server
    assert server is not None
    pg.execute(PEOPLE)
    pg.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 13)])
    pg.close()  # the test's own session would only be cut
    engine = build(pg, [{**ING, "batch_rows": 3}])
    table = lake(tmp_path)
    stopped: list[int] = []

    def stop_after_first_commit(p: SyncProgress) -> None:
        if p.batches == 1 and not stopped:
            stopped.append(p.rows)
            server.stop()

    try:
        failed = engine.run("ing", on_progress=stop_after_first_commit)
    finally:
        server.start()
    assert (failed.status, failed.retriable, failed.batches, failed.rows,
            failed.table_version) == ("failed", True, 1, 2, 0)
    assert stopped == [3]  # stopped once the first commit (ids 1-2) landed
    error = failed.error or ""
    # the driver's own words in between vary with the moment the connection was cut
    assert error.startswith(f"reading people (postgresql+psycopg://silta:***@127.0.0.1:"
                            f"{server.port}/{pg.database}): "), error
    assert error.endswith("; the database is unreachable or busy, the work is tried again "
                          "later"), error
    assert server.password not in error
    run = engine.state.runs(name="ing")[0]
    assert (run["status"], run["error"], run["rows"], run["batches"]) == (
        "failed", error, 2, 1)
    assert ledger(engine) == [(1, "committed", 0, 2)]
    assert duck_rows(duck, table, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]

    again = engine.run("ing")
    assert outcome(again) == ("ok", None, 4, 10, 4)
    assert duck_rows(duck, table, "SELECT id, count(*) FROM t GROUP BY id ORDER BY id") == [
        (i, 1) for i in range(1, 13)]
    assert [w["value"] if w else None for w in watermarks(table)] == [
        "2024-03-01T10:00:02", "2024-03-01T10:00:06", "2024-03-01T10:00:09",
        "2024-03-01T10:00:11", "2024-03-01T10:00:12"]


def test_a_snapshot_cut_short_by_postgresql_stopping_leaves_the_table_as_it_was(
        pg: SqlSide, build: Builder, tmp_path: Path, duck: Any) -> None:
    server = pg.server
    assert server is not None
    pg.execute(PEOPLE)
    pg.insert("people", [(i, f"p{i}", ts(i)) for i in range(1, 4)])
    sync = {"name": "ing", "source": "db:people", "target": f"lake:{TABLE}",
            "mode": "snapshot", "batch_rows": 3}
    engine = build(pg, [sync])
    table = lake(tmp_path)
    assert outcome(engine.run("ing")) == ("ok", None, 1, 3, 0)
    pg.execute("DELETE FROM people")
    pg.insert("people", [(i, f"q{i}", ts(i)) for i in range(10, 22)])
    pg.close()
    stopped: list[int] = []

    def stop_while_reading(p: SyncProgress) -> None:
        if p.rows and not stopped:
            stopped.append(p.rows)
            server.stop()

    try:
        failed = engine.run("ing", on_progress=stop_while_reading)
    finally:
        server.start()
    assert (failed.status, failed.retriable, failed.batches, failed.rows,
            failed.table_version, stopped) == ("failed", True, 0, 0, 0, [3])
    # no half snapshot: the table still holds the whole previous one
    assert DeltaTable(str(table)).version() == 0
    assert rows_both(duck, table, ["id", "name"]) == [(1, "p1"), (2, "p2"), (3, "p3")]
    assert [(seq, status) for seq, status, _, _ in ledger(engine)] == [
        (1, "committed"), (2, "failed")]

    assert outcome(engine.run("ing")) == ("ok", None, 1, 12, 1)
    assert rows_both(duck, table, ["id", "name"]) == [(i, f"q{i}") for i in range(10, 22)]

    # The run record names the source's failure, as the same outage outside a snapshot
    # does: not the Delta writer's wrapping of it with a Python traceback inside.
    error = failed.error or ""
    assert "Traceback" not in error, error
    assert error.startswith(f"reading people (postgresql+psycopg://silta:***@127.0.0.1:"
                            f"{server.port}/{pg.database}): "), error
    assert error.endswith("the work is tried again later"), error


def test_a_source_in_a_postgresql_schema(pg: SqlSide, build: Builder, tmp_path: Path,
                                         duck: Any) -> None:
    pg.execute("CREATE SCHEMA register")
    pg.execute(PEOPLE.replace("TABLE people", "TABLE register.people"))
    pg.insert("register.people", [(1, "a", ts(1)), (2, "b", ts(2))])
    engine = build(pg, [{**ING, "source": "db:register.people"}])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 2, 0)
    pg.insert("register.people", [(3, "c", ts(3))])
    assert outcome(engine.run("ing")) == ("ok", None, 1, 1, 1)
    assert rows_both(duck, lake(tmp_path), ["id", "name"]) == [(1, "a"), (2, "b"), (3, "c")]
    assert [c["silta.source"] for c in commit_infos(lake(tmp_path))] == [
        "db:register.people", "db:register.people"]
