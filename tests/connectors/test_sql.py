"""The SQL connector beyond the contract: credentials, outages, streaming, type catalogues.

PostgreSQL runs for real (``postgres_server``); outage tests stop it and start it again
on the same port, as an operator would see a database restart.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.errors import AuthError, StoreError
from connectors.sql import SqlStore
from tests.servers import free_port
from tests.servers.postgres import PostgresServer


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[tuple[PostgresServer, SqlStore, str]]:
    """(server, a store on a fresh database, that database's name)."""
    postgres_server.start()
    db = postgres_server.new_database()
    store = SqlStore(postgres_server.url_for(db), password=postgres_server.password,
                     connect_timeout_seconds=3)
    yield postgres_server, store, db
    store.close()
    postgres_server.start()  # whatever the test did to it


def reader(table: pa.Table, max_chunksize: int | None = None) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema,
                                             table.to_batches(max_chunksize=max_chunksize))


def pg_rows(server: PostgresServer, db: str, sql: str) -> list[tuple[Any, ...]]:
    with server.connect(db) as conn:
        return list(conn.execute(sql).fetchall())


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it is truthy; a hang becomes a failure that says what was awaited."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# -- credentials --------------------------------------------------------------------------

def test_wrong_password_is_an_auth_error_without_the_password(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, _, db = pg
    secret = "Wr0ng-" + "s3cr3t-value"
    store = SqlStore(server.url_for(db), password=secret, connect_timeout_seconds=3)
    try:
        for call in (store.list_tables, store.check, lambda: store.applied_version("x")):
            with pytest.raises(AuthError) as e:
                call()
            assert not e.value.retriable
            assert "password authentication failed" in str(e.value)
            assert secret not in str(e.value) and secret not in repr(e.value)
        assert secret not in repr(store) and secret not in repr(store._engine())
    finally:
        store.close()
    nopass = SqlStore(server.url_for(db), connect_timeout_seconds=3)
    with pytest.raises(AuthError):
        nopass.list_tables()
    nopass.close()


def test_the_right_password_never_shows(pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, _ = pg
    assert store.check().startswith("PostgreSQL 15")
    shown = [repr(store), store.display_url, repr(store._engine()), str(store._engine().url)]
    assert all(server.password not in s for s in shown)
    assert "***" in store.display_url


# -- outages ------------------------------------------------------------------------------

def test_the_engine_is_made_lazily_and_a_down_server_is_retriable() -> None:
    store = SqlStore(f"postgresql://silta@127.0.0.1:{free_port()}/stat", password="x",
                     connect_timeout_seconds=2)  # nothing listens there: constructing is fine
    with pytest.raises(StoreError) as e:
        store.list_tables()
    assert e.value.retriable and not isinstance(e.value, AuthError)
    store.close()


def test_server_stopped_is_retriable_and_started_works_again(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, _ = pg
    store.write("t", reader(pa.table({"id": [1, 2]})), mode="append", idempotency=("p", 1))
    server.stop()
    calls = {
        "list_tables": store.list_tables,
        "read": lambda: store.read(table="t"),
        "write": lambda: store.write("t", reader(pa.table({"id": [3]})), mode="append"),
        "applied_version": lambda: store.applied_version("p"),
        "check": store.check,
    }
    for name, call in calls.items():
        with pytest.raises(StoreError) as e:
            call()
        assert e.value.retriable, name
        assert server.password not in str(e.value)
    server.start()
    # The same store: its pool's dead connections are noticed (pre-ping) and replaced.
    assert store.list_tables() == ["t"]
    assert store.read(table="t").read_all().num_rows == 2
    assert store.applied_version("p") == 1


def test_outage_in_the_middle_of_a_write_commits_nothing(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, db = pg
    store.write("target", reader(pa.table({"id": [0], "v": ["old"]})), mode="append",
                key=["id"])
    batches_sent = []

    def slow_batches() -> Iterator[pa.RecordBatch]:
        for i in range(5):
            if i == 3:
                # The server goes down while the write's transaction holds 3000 new rows
                # (stopped right here, between two batches, so the test is deterministic).
                server.stop()
            ids = list(range(1 + i * 1000, 1 + (i + 1) * 1000))
            batches_sent.append(i)
            yield pa.record_batch({"id": ids, "v": [f"v{x}" for x in ids]})

    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    with pytest.raises(StoreError) as e:
        store.write("target", pa.RecordBatchReader.from_batches(schema, slow_batches()),
                    mode="append", idempotency=("pub", 7))
    assert e.value.retriable
    assert batches_sent == [0, 1, 2, 3]
    server.start()
    assert pg_rows(server, db, "SELECT count(*) FROM target") == [(1,)]
    assert store.applied_version("pub") is None
    table = pa.table({"id": list(range(1, 5001)), "v": [f"v{x}" for x in range(1, 5001)]})
    first = store.write("target", reader(table, 1000), mode="append", idempotency=("pub", 7))
    again = store.write("target", reader(table, 1000), mode="append", idempotency=("pub", 7))
    assert (first.rows, first.already, again.rows, again.already) == (5000, False, 0, True)
    assert pg_rows(server, db, "SELECT count(*) FROM target") == [(5001,)]
    assert store.applied_version("pub") == 7


def test_outage_in_the_middle_of_a_read_is_retriable(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, _ = pg
    store.write("big", reader(pa.table({"id": list(range(5000))})), mode="append")
    stream = store.read(table="big", watermark="id", batch_rows=1000)
    assert stream.read_next_batch().num_rows == 1000
    server.stop()
    with pytest.raises(StoreError) as e:
        stream.read_all()
    assert e.value.retriable


def test_concurrent_writers_of_one_version_write_once(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, db = pg
    release = threading.Event()
    results: dict[str, Any] = {}
    schema = pa.schema([("id", pa.int64())])

    def held_batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"id": [1, 2]})
        release.wait(30)  # the first writer holds its transaction (and its claim) open
        yield pa.record_batch({"id": [3]})

    def write(name: str, data: pa.RecordBatchReader) -> None:
        try:
            results[name] = store.write("shared", data, mode="append", idempotency=("job", 1))
        except Exception as e:  # reported through results, checked below
            results[name] = e

    store.write("shared", reader(pa.table({"id": pa.array([], pa.int64())})), mode="append")
    first = threading.Thread(target=write, args=(
        "first", pa.RecordBatchReader.from_batches(schema, held_batches())))
    first.start()
    wait_until(lambda: pg_rows(server, db, "SELECT 1 FROM pg_locks l JOIN pg_class c ON "
                               "c.oid = l.relation WHERE c.relname = 'shared' AND "
                               "l.mode = 'RowExclusiveLock'"), "the first writer's rows")
    second = threading.Thread(target=write, args=(
        "second", reader(pa.table({"id": [9, 9, 9]}))))
    second.start()
    # The second writer waits on the first one's uncommitted (job, 1) record.
    wait_until(lambda: pg_rows(server, db, "SELECT 1 FROM pg_stat_activity WHERE "
                               "application_name = 'silta' AND wait_event_type = 'Lock'"),
               "the second writer to wait on the first one's record")
    release.set()
    first.join(30)
    second.join(30)
    assert results["first"].rows == 3 and not results["first"].already
    assert results["second"].already and results["second"].rows == 0
    assert pg_rows(server, db, "SELECT id FROM shared ORDER BY id") == [(1,), (2,), (3,)]


# -- streaming and rates ------------------------------------------------------------------

def test_a_200k_row_read_streams_through_a_server_side_cursor(
        pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, db = pg
    n = 200_000
    with server.connect(db) as conn:
        conn.execute("CREATE TABLE big AS SELECT g AS id, timestamptz '2024-01-01' + "
                     "g * interval '1 second' AS at, 'row ' || g AS label, "
                     "(g / 100.0)::numeric(12,2) AS amount FROM generate_series(1, %s) g",
                     (n,))
    started = time.perf_counter()
    stream = store.read(table="big", watermark="at", batch_rows=16_384)
    # Only the first batch has been fetched: the session's last statement is a FETCH of
    # at most batch_rows rows from a server-side cursor, not the SELECT of every row.
    (last,) = pg_rows(server, db, "SELECT query FROM pg_stat_activity WHERE "
                      "application_name = 'silta' AND state = 'idle in transaction'")
    m = re.fullmatch(r'FETCH FORWARD (\d+) FROM "?\w+"?', last[0])
    assert m is not None and 0 < int(m.group(1)) <= 16_384, last[0]
    sizes = []
    first = last_id = None
    for batch in stream:
        sizes.append(batch.num_rows)
        ids = batch.column("id").to_pylist()
        first = ids[0] if first is None else first
        assert last_id is None or ids[0] == last_id + 1  # in watermark order
        last_id = ids[-1]
    elapsed = time.perf_counter() - started
    assert sizes == [16_384] * 12 + [n - 12 * 16_384]
    assert (first, last_id) == (1, n)
    assert stream.schema.field("amount").type == pa.decimal128(12, 2)
    print(f"\nPostgreSQL read: {n} rows in {elapsed:.2f} s = {n / elapsed:,.0f} rows/s")


def rate_table(n: int) -> pa.Table:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "at": pa.array([base + dt.timedelta(seconds=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "label": [f"row {i}" for i in range(n)],
        "value": pa.array([i * 0.5 for i in range(n)]),
        "amount": pa.array([Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
    })


def measure(store: SqlStore, label: str, data: pa.Table) -> None:
    for mode in ("append", "merge"):
        started = time.perf_counter()
        result = store.write("rates", reader(data, 65_536), mode=mode, key=["id"])
        elapsed = time.perf_counter() - started
        assert result.rows == data.num_rows
        print(f"\n{label} {mode}: {data.num_rows} rows in {elapsed:.2f} s = "
              f"{data.num_rows / elapsed:,.0f} rows/s")
    started = time.perf_counter()
    back = store.read(table="rates", batch_rows=65_536).read_all()
    elapsed = time.perf_counter() - started
    assert back.num_rows == data.num_rows
    print(f"\n{label} read: {back.num_rows} rows in {elapsed:.2f} s = "
          f"{back.num_rows / elapsed:,.0f} rows/s")


def test_write_and_read_rates_postgresql(pg: tuple[PostgresServer, SqlStore, str]) -> None:
    measure(pg[1], "PostgreSQL", rate_table(100_000))


def test_write_and_read_rates_sqlite(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'rates.db'}")
    measure(store, "SQLite", rate_table(100_000))
    store.close()


# -- catalogues ---------------------------------------------------------------------------

def test_postgresql_catalogue_types(pg: tuple[PostgresServer, SqlStore, str]) -> None:
    server, store, db = pg
    with server.connect(db) as conn:
        conn.execute("""
            CREATE SCHEMA stats;
            CREATE TABLE stats.kinds (
                i integer, s smallint, b bigint, n numeric(10,3), nn numeric,
                big numeric(50,2), r real, d double precision, v varchar(5), c char(3),
                t text, flag boolean, day date, at timestamp, atz timestamptz, raw bytea,
                doc jsonb, u uuid, tm time, iv interval, arr integer[]);
            INSERT INTO stats.kinds VALUES (1, 2, 3, 1.125, 2.5, 12.34, 0.5, 0.25, 'ab',
                'x', 'text', true, '2024-02-29', '2024-01-01 10:00:00.5',
                '2024-01-01 10:00:00+02', '\\x0102', '{"a": [1, 2]}',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '12:30', '1 day', '{1,2}');
        """)
    expected = pa.schema([
        ("i", pa.int64()), ("s", pa.int64()), ("b", pa.int64()), ("n", pa.decimal128(10, 3)),
        ("nn", pa.float64()), ("big", pa.float64()), ("r", pa.float64()),
        ("d", pa.float64()), ("v", pa.string()), ("c", pa.string()), ("t", pa.string()),
        ("flag", pa.bool_()), ("day", pa.date32()), ("at", pa.timestamp("us")),
        ("atz", pa.timestamp("us", tz="UTC")), ("raw", pa.binary()), ("doc", pa.string()),
        ("u", pa.string()), ("tm", pa.string()), ("iv", pa.string()), ("arr", pa.string()),
    ])
    assert store.table_schema("stats.kinds") == expected
    assert store.list_tables() == ["stats.kinds"]
    (row,) = store.read(table="stats.kinds").read_all().to_pylist()
    assert row["n"] == Decimal("1.125") and row["nn"] == 2.5 and row["big"] == 12.34
    assert row["atz"] == dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC)
    assert row["raw"] == b"\x01\x02" and row["doc"] == '{"a": [1, 2]}'
    assert row["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" and row["arr"] == "[1, 2]"
    # A query's types come from the result's type OIDs.
    got = store.read(query="SELECT n, n * 2 AS twice, atz, day, count(*) OVER () AS total "
                     "FROM stats.kinds").read_all()
    assert got.schema == pa.schema([("n", pa.decimal128(10, 3)), ("twice", pa.float64()),
                                    ("atz", pa.timestamp("us", tz="UTC")),
                                    ("day", pa.date32()), ("total", pa.int64())])


def test_sqlite_declared_types_and_other_writers_values(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.execute("""CREATE TABLE legacy (a INT, b VARCHAR(10), c REAL, d NUMERIC(10,2),
            e DATETIME, f BOOLEAN, g BLOB, h, i JSON, j DATE, k TIMESTAMP WITH TIME ZONE,
            l DOUBLE, m NUMERIC)""")
        conn.execute("INSERT INTO legacy VALUES (1, 'x', 2, '12345678.91', "
                     "'2024-01-01T10:00:00', 1, x'00ff', 5, '{\"a\": 1}', '2024-02-29', "
                     "'2024-01-01 10:00:00+02:00', 1.5, 7)")
    conn.close()
    store = SqlStore(f"sqlite:///{path}")
    assert store.table_schema("legacy") == pa.schema([
        ("a", pa.int64()), ("b", pa.string()), ("c", pa.float64()),
        ("d", pa.decimal128(10, 2)), ("e", pa.timestamp("us")), ("f", pa.bool_()),
        ("g", pa.binary()), ("h", pa.string()), ("i", pa.string()), ("j", pa.date32()),
        ("k", pa.timestamp("us", tz="UTC")), ("l", pa.float64()), ("m", pa.float64()),
    ])
    (row,) = store.read(table="legacy").read_all().to_pylist()
    assert row == {"a": 1, "b": "x", "c": 2.0, "d": Decimal("12345678.91"),
                   "e": dt.datetime(2024, 1, 1, 10), "f": True, "g": b"\x00\xff", "h": "5",
                   "i": '{"a": 1}', "j": dt.date(2024, 2, 29),
                   "k": dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC), "l": 1.5, "m": 7.0}
    store.close()


def test_sqlite_decimals_keep_fifteen_digits(tmp_path: Path) -> None:
    # SQLite's NUMERIC affinity keeps 15 significant digits (sqlite.org/datatype3.html).
    store = SqlStore(f"sqlite:///{tmp_path / 'd.db'}")
    values = [Decimal("123456789.123456"), Decimal("-0.000001"), Decimal("0.100000"), None]
    data = pa.table({"x": pa.array(values, pa.decimal128(38, 6))})
    store.write("dec", reader(data), mode="append")
    assert store.read(table="dec").read_all().column("x").to_pylist() == values
    store.close()


def test_sqlite_missing_file_and_busy_database(tmp_path: Path) -> None:
    path = tmp_path / "later.db"
    store = SqlStore(f"sqlite:///{path}", connect_timeout_seconds=0.2)
    with pytest.raises(StoreError, match="does not exist"):
        store.read(table="t")
    assert store.applied_version("x") is None  # nothing written yet: not an error
    assert not path.exists()
    store.write("t", reader(pa.table({"id": [1]})), mode="append", idempotency=("x", 1))
    assert store.applied_version("x") == 1
    # Another program holds the write lock past our busy timeout: retriable.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError) as e:
            store.write("t", reader(pa.table({"id": [2]})), mode="append")
        assert e.value.retriable and "locked" in str(e.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.write("t", reader(pa.table({"id": [2]})), mode="append").rows == 1
    store.close()


def test_a_bad_query_is_not_retriable(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'q.db'}")
    store.write("t", reader(pa.table({"id": [1]})), mode="append")
    for query in ("SELECT nope FROM t", "DELETE FROM t", "SELECT 1; DROP TABLE t"):
        with pytest.raises(StoreError) as e:
            store.read(query=query)
        assert not e.value.retriable
    assert store.read(table="t").read_all().num_rows == 1
    store.close()


def test_urls() -> None:
    assert SqlStore("postgres://u@db.example:5433/stat").display_url == (
        "postgresql+psycopg://u@db.example:5433/stat")
    assert SqlStore("postgresql://u@h/stat", password="pw").display_url == (
        "postgresql+psycopg://u:***@h/stat")
    for bad in ("mysql://u@h/db", "not a url"):
        with pytest.raises(StoreError):
            SqlStore(bad)
