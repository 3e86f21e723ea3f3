"""SQLite and PostgreSQL as table stores, through SQLAlchemy Core.

Names of tables and columns come from config and from the lake, so they are untrusted:
tables are looked up in the catalogue, and every identifier reaches SQL through
SQLAlchemy's quoting; values always travel as bound parameters. Reads stream with a
server-side cursor (PostgreSQL) or a plain cursor (SQLite), ``batch_rows`` rows at a
time. A write is one transaction: the idempotency record, the table (and schema) it
creates, the rows. The password only ever lives in a ``sqlalchemy.URL``, which masks it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, Inspector

from connectors._sql_types import (
    ACCEPTS,
    Declared,
    arrow_column,
    arrow_type_of,
    as_json_or_text,
    ddl_type,
    infer_type,
    normalized,
    pg_result_type,
    sqlite_arrow_type,
    sqlite_value,
    type_kind,
)
from connectors.abc import Option, TableStore, WriteResult
from connectors.errors import (
    AuthError,
    NotFoundError,
    SchemaMismatchError,
    SiltaError,
    StoreError,
    UnsafeNameError,
    UsageError,
)
from connectors.names import safe_display

#: the bookkeeping table of :meth:`SqlStore.write`'s idempotency records (default schema)
APPLIED_TABLE = "silta_applied"
# Rows handed to one executemany: bounds the Python objects alive at once.
WRITE_CHUNK_ROWS = 10_000
# A query column that is NULL in the first batch is typed from up to this many batches.
LOOKAHEAD_BATCHES = 4
# PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1): refuse them instead.
MAX_IDENTIFIER_BYTES = 63

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AUTH_FAILED = re.compile(r"password authentication failed|no password supplied|"
                          r"authentication failed|pg_hba\.conf rejects|role .* does not exist",
                          re.I)
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error",
                     "unable to open database file", "database is busy")
# SQLSTATE classes worth trying again: connection (08), resources (53), operator
# intervention such as an admin shutdown (57), serialization failure and deadlock (40).
_PG_TRANSIENT_CLASSES = ("08", "53", "57", "40")
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog", "pg_toast")



# -- names -------------------------------------------------------------------------------

def _check_identifier(part: str, what: str, *, table: bool) -> str:
    if not part or not part.strip():
        raise UnsafeNameError(f"{what} name is empty")
    if _CONTROL.search(part):
        raise UnsafeNameError(f"{what} name {safe_display(part)!r} contains a control character")
    if table and '"' in part:
        raise UnsafeNameError(f"{what} name {part!r} contains a double quote; write names "
                              "without quotes (they are used exactly as written)")
    if len(part.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise UnsafeNameError(f"{what} name {part[:20]!r}... is longer than "
                              f"{MAX_IDENTIFIER_BYTES} bytes")
    return part


def split_table_name(table: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table`` as (schema or None, table), each part checked."""
    if not isinstance(table, str) or not table:
        raise UnsafeNameError("table name is empty")
    parts = table.split(".")
    if len(parts) > 2:
        raise UnsafeNameError(f"table name {safe_display(table)!r} has more than one '.'; "
                              "write table or schema.table")
    if len(parts) == 2:
        return (_check_identifier(parts[0], "schema", table=True),
                _check_identifier(parts[1], "table", table=True))
    return None, _check_identifier(parts[0], "table", table=True)


def _pick(wanted: str, names: Sequence[str]) -> str | None:
    """``wanted`` among ``names``: exact, else the one name equal ignoring case."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def _closest(wanted: str, names: Sequence[str], what: str) -> str:
    if not names:
        return f"there are no {what}s"
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)
    close += [n for n in names if n.casefold() == wanted.casefold() and n not in close]
    if close:
        return "did you mean " + ", ".join(repr(n) for n in close) + "?"
    shown = ", ".join(repr(n) for n in sorted(names)[:10])
    return f"{what}s: {shown}" + (" ..." if len(names) > 10 else "")


def _escape_colons(sql: str) -> str:
    # text() reads ":name" as a bind parameter; a query's own colons (casts, literals) are not.
    return sql.replace(":", "\\:")


def _metadata_applied() -> sa.Table:
    return sa.Table(
        APPLIED_TABLE, sa.MetaData(),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("rows", sa.BigInteger),
        sa.Column("applied_at", sa.DateTime),
    )


APPLIED = _metadata_applied()


@dataclass
class _Target:
    """An existing table a write goes into, with its columns as the catalogue has them."""

    schema: str | None
    name: str
    columns: dict[str, pa.DataType]
    created: bool


# -- the store ---------------------------------------------------------------------------

class SqlStore(TableStore):
    """Tables of a SQLite file or a PostgreSQL database."""

    type_name = "sql"
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("url", str, required=True,
               help="sqlite:///path/to.db or postgresql://user@host:port/database "
                    "(no password in the URL)"),
        Option("password", str, secret=True, help="database password (PostgreSQL)"),
        Option("connect_timeout_seconds", float, default=10.0,
               help="how long to wait for a connection (SQLite: for a lock)"),
    )

    def __init__(self, url: str, password: str | None = None,
                 connect_timeout_seconds: float = 10.0) -> None:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as e:
            raise StoreError(f"invalid database URL: {e}") from e
        backend = parsed.get_backend_name()
        if backend in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
            self.dialect: Literal["postgresql", "sqlite"] = "postgresql"
        elif backend == "sqlite":
            self.dialect = "sqlite"
        else:
            raise StoreError(f"unsupported database {backend!r}; use sqlite:/// or "
                             "postgresql://")
        if password:
            parsed = parsed.set(password=password)
        self._url = parsed
        self._password = password or parsed.password or ""
        self.connect_timeout_seconds = connect_timeout_seconds
        self._engine_obj: Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqlStore({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL without the password, for messages."""
        return self._url.render_as_string(hide_password=True)

    @property
    def _sqlite_path(self) -> Path | None:
        db = self._url.database
        if self.dialect != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
            return None
        return Path(db)

    # The engine is made on first use: the agent starts while the database is down.
    def _engine(self) -> Engine:
        with self._lock:
            if self._engine_obj is None:
                self._engine_obj = self._create_engine()
            return self._engine_obj

    def _create_engine(self) -> Engine:
        if self.dialect == "sqlite":
            engine = sa.create_engine(self._url, pool_pre_ping=True,
                                      connect_args={"timeout": self.connect_timeout_seconds})
            # pysqlite's own transaction handling skips BEGIN before DDL, so a created table
            # would survive a rollback: take over BEGIN (SQLAlchemy's documented recipe).
            sa.event.listen(engine, "connect", _sqlite_on_connect)
            sa.event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        return sa.create_engine(self._url, pool_pre_ping=True, connect_args={
            "connect_timeout": max(2, math.ceil(self.connect_timeout_seconds)),
            # UTC sessions: timestamptz values come back in UTC and naive values are UTC.
            "options": "-c timezone=UTC",
            "application_name": "silta",
            # A server that vanishes without closing the socket is noticed in about a minute.
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        })

    # -- errors ---------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _translate(self, e: sa.exc.SQLAlchemyError, action: str) -> StoreError:
        orig = getattr(e, "orig", None)
        detail = str(orig if orig is not None else e).strip()
        detail = self._scrub(" ".join(detail.split()) or type(e).__name__)
        where = f"{action} ({self.display_url})"
        if isinstance(e, sa.exc.DBAPIError):
            if self.dialect == "postgresql" and _AUTH_FAILED.search(detail):
                return AuthError(f"{where}: the server refused the credentials: {detail}; "
                                 "check the user in the url and the password", retriable=False)
            if e.connection_invalidated or self._transient(e, orig, detail):
                return StoreError(f"{where}: {detail}; the database is unreachable or busy, "
                                  "the work is tried again later", retriable=True)
            if isinstance(e, sa.exc.IntegrityError):
                return StoreError(f"{where}: a row breaks a constraint of the table: {detail}",
                                  retriable=False)
        return StoreError(f"{where}: {detail}", retriable=False)

    def _transient(self, e: sa.exc.DBAPIError, orig: Any, detail: str) -> bool:
        if self.dialect == "sqlite":
            return isinstance(e, sa.exc.OperationalError) and any(
                s in detail.lower() for s in _SQLITE_TRANSIENT)
        state = getattr(orig, "sqlstate", None)
        if state is None:
            # psycopg gives connection failures no SQLSTATE.
            return isinstance(e, sa.exc.OperationalError | sa.exc.InterfaceError)
        return str(state).startswith(_PG_TRANSIENT_CLASSES)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate SQLAlchemy's exceptions into Silta's at the boundary."""
        try:
            yield
        except SiltaError:
            raise
        except sa.exc.SQLAlchemyError as e:
            raise self._translate(e, action) from e

    def _require_database(self) -> None:
        path = self._sqlite_path
        if path is not None and not path.exists():
            raise StoreError(f"SQLite database {str(path)!r} does not exist; fix the "
                             "connector's url", retriable=True)

    # -- catalogue ------------------------------------------------------------------------
    def _schemas(self, insp: Inspector) -> list[str]:
        names = insp.get_schema_names()
        if self.dialect == "postgresql":
            return [n for n in names
                    if n not in _SYSTEM_SCHEMAS and not n.startswith(("pg_toast", "pg_temp"))]
        return [n for n in names if n != "temp"]

    def _relations(self, insp: Inspector, schema: str | None) -> list[str]:
        names = [*insp.get_table_names(schema), *insp.get_view_names(schema)]
        if self.dialect == "postgresql":
            names += insp.get_materialized_view_names(schema)
        return names

    def _default_schema(self, insp: Inspector) -> str:
        return insp.default_schema_name or ("public" if self.dialect == "postgresql"
                                            else "main")

    def _all_tables(self, insp: Inspector) -> list[str]:
        default = self._default_schema(insp)
        out = []
        for schema in self._schemas(insp):
            prefix = "" if schema == default else f"{schema}."
            out += [prefix + n for n in self._relations(insp, schema)]
        # Silta's own bookkeeping stays out of listings, like the folders' .silta-* files.
        return sorted(n for n in out if n != APPLIED_TABLE)

    def _find_schema(self, insp: Inspector, wanted: str | None) -> str | None:
        """The catalogue's spelling of schema ``wanted``; raises NotFoundError if absent."""
        if wanted is None:
            return None
        schemas = self._schemas(insp)
        found = _pick(wanted, schemas)
        if found is None:
            raise NotFoundError("schema", wanted, _closest(wanted, schemas, "schema"))
        return found

    def _resolve(self, insp: Inspector, table: str) -> tuple[str | None, str]:
        """``table`` as (schema, name) spelled as in the catalogue. Raises NotFoundError."""
        schema_part, name_part = split_table_name(table)
        try:
            schema = self._find_schema(insp, schema_part)
        except NotFoundError:
            raise NotFoundError("table", table, _closest(table, self._all_tables(insp),
                                                         "table")) from None
        found = _pick(name_part, self._relations(insp, schema))
        if found is None:
            raise NotFoundError("table", table, _closest(table, self._all_tables(insp), "table"))
        return schema, found

    def _columns(self, conn: Connection, insp: Inspector, schema: str | None, name: str
                 ) -> list[tuple[str, pa.DataType]]:
        if self.dialect == "sqlite":
            # SQLAlchemy folds SQLite's declared types into a few classes (TIMESTAMP WITH
            # TIME ZONE becomes NUMERIC); the catalogue's own text keeps them apart.
            rows = conn.execute(
                sa.text("SELECT name, type FROM pragma_table_info(:t, :s) ORDER BY cid"),
                {"t": name, "s": schema or "main"}).all()
            return [(str(r[0]), sqlite_arrow_type(str(r[1] or ""))) for r in rows]
        return [(c["name"], arrow_type_of(c["type"]))
                for c in insp.get_columns(name, schema=schema)]

    def list_tables(self) -> list[str]:
        self._require_database()
        with self._errors("listing tables"), self._engine().connect() as conn:
            return self._all_tables(sa.inspect(conn))

    def table_schema(self, table: str) -> pa.Schema:
        split_table_name(table)
        self._require_database()
        with self._errors(f"reading the columns of {safe_display(table)}"), \
                self._engine().connect() as conn:
            insp = sa.inspect(conn)
            schema, name = self._resolve(insp, table)
            return pa.schema(self._columns(conn, insp, schema, name))

    # -- read -----------------------------------------------------------------------------
    def _bind(self, value: Any) -> Any:
        if self.dialect == "sqlite":
            if isinstance(value, dt.datetime):
                if value.tzinfo is not None:
                    value = value.astimezone(dt.UTC).replace(tzinfo=None)
                # Without zero microseconds: '10:00:00' is then <= every value of that second.
                return value.isoformat(sep=" ")
            if isinstance(value, Decimal):
                return float(value)
            return sqlite_value(value)
        return value

    def read(self, *, table: str | None = None, query: str | None = None,
             watermark: str | None = None, since: Any = None, batch_rows: int = 65_536,
             cancel: threading.Event | None = None) -> pa.RecordBatchReader:
        if (table is None) == (query is None):
            raise UsageError("read needs exactly one of table or query")
        if batch_rows < 1:
            raise UsageError("batch_rows must be at least 1")
        if table is not None:
            split_table_name(table)  # a malformed name is refused before anything else
        self._require_database()
        what = safe_display(table) if table is not None else "the query"
        action = f"reading {what}"
        conn: Connection | None = None
        try:
            with self._errors(action):
                conn = self._engine().connect()
                stmt: sa.Executable
                if table is not None:
                    stmt, schema = self._table_statement(conn, table, watermark, since)
                else:
                    assert query is not None
                    stmt, schema = self._query_statement(conn, query, watermark, since)
                result = conn.execution_options(yield_per=batch_rows).execute(stmt)
                buffered = [result.fetchmany(batch_rows)]
                if any(t is None for t in schema.values()):
                    buffered = self._look_ahead(result, buffered, schema, batch_rows)
            arrow_schema = pa.schema([(n, t if t is not None else pa.string())
                                      for n, t in schema.items()])
            batches = self._batches(conn, result, buffered, arrow_schema, batch_rows, cancel,
                                    action)
            conn = None  # the generator owns it now
            return pa.RecordBatchReader.from_batches(arrow_schema, batches)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _table_statement(self, conn: Connection, table: str, watermark: str | None,
                         since: Any) -> tuple[sa.Select[Any], dict[str, pa.DataType | None]]:
        insp = sa.inspect(conn)
        schema, name = self._resolve(insp, table)
        columns = self._columns(conn, insp, schema, name)
        names = [c for c, _ in columns]
        t = sa.table(name, *[sa.column(c) for c in names], schema=schema)
        stmt = sa.select(*t.c)
        if watermark is not None:
            if watermark not in names:
                raise NotFoundError("column", watermark,
                                    f"table {table}: {_closest(watermark, names, 'column')}")
            wm: Any = t.c[watermark]
            wm_type = dict(columns).get(watermark)
            if self.dialect == "sqlite" and wm_type is not None and (
                    pa.types.is_timestamp(wm_type) or pa.types.is_date(wm_type)):
                # SQLite compares times as text: '2024-03-01T10:00' sorts after
                # '2024-03-01 10:00', so compare one spelling, or old rows look new.
                wm = sa.func.replace(wm, "T", " ")
            if since is not None:
                stmt = stmt.where(wm >= sa.bindparam("since", self._bind(since),
                                                     type_=sa.types.NullType()))
            stmt = stmt.order_by(wm)
        return stmt, dict(columns)

    def _query_statement(self, conn: Connection, query: str, watermark: str | None,
                         since: Any) -> tuple[sa.TextClause, dict[str, pa.DataType | None]]:
        # A trailing ';' would end the subquery early.
        inner = _escape_colons(query.strip().rstrip(";").strip())
        probe = conn.execute(sa.text(f"SELECT * FROM ({inner}) AS q LIMIT 0"))
        names = list(probe.keys())
        description = probe.cursor.description if probe.cursor is not None else None
        probe.close()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaMismatchError(f"the query returns column(s) {dupes} more than once; "
                                      "name each column once (AS ...)")
        schema: dict[str, pa.DataType | None] = dict.fromkeys(names)
        if self.dialect == "postgresql" and description is not None:
            schema = {n: pg_result_type(col) for n, col in zip(names, description, strict=True)}
        sql = f"SELECT * FROM ({inner}) AS q"
        params: list[sa.BindParameter[Any]] = []
        if watermark is not None:
            if watermark not in names:
                raise NotFoundError("column", watermark,
                                    f"the query returns {_closest(watermark, names, 'column')}")
            quoted = _escape_colons(conn.dialect.identifier_preparer.quote_identifier(watermark))
            if self.dialect == "sqlite" and isinstance(since, dt.date):
                sql_col = f"replace(q.{quoted}, 'T', ' ')"  # one spelling of times (above)
            else:
                sql_col = f"q.{quoted}"
            if since is not None:
                sql += f" WHERE {sql_col} >= :since"
                params.append(sa.bindparam("since", self._bind(since),
                                           type_=sa.types.NullType()))
            sql += f" ORDER BY {sql_col}"
        return sa.text(sql).bindparams(*params), schema

    def _look_ahead(self, result: sa.CursorResult[Any], buffered: list[Sequence[Any]],
                    schema: dict[str, pa.DataType | None], batch_rows: int
                    ) -> list[Sequence[Any]]:
        """Type untyped (SQLite query) columns from the first non-NULL values.

        Fetches up to LOOKAHEAD_BATCHES batches while a column is NULL throughout; what is
        still unknown after that is read as text. Memory stays bounded by the lookahead.
        """
        names = list(schema)
        while True:
            for i, n in enumerate(names):
                if schema[n] is None:
                    schema[n] = infer_type([row[i] for rows in buffered for row in rows])
            if (all(t is not None for t in schema.values())
                    or len(buffered) >= LOOKAHEAD_BATCHES or len(buffered[-1]) < batch_rows):
                return buffered
            buffered.append(result.fetchmany(batch_rows))

    def _batches(self, conn: Connection, result: sa.CursorResult[Any],
                 buffered: list[Sequence[Any]], schema: pa.Schema, batch_rows: int,
                 cancel: threading.Event | None, action: str) -> Iterator[pa.RecordBatch]:
        """The record batches of ``result``; closes the connection when done or abandoned."""
        try:
            pending = [rows for rows in buffered if rows]
            exhausted = not buffered[-1] or len(buffered[-1]) < batch_rows
            while True:
                if cancel is not None and cancel.is_set():
                    return
                if pending:
                    rows = pending.pop(0)
                elif exhausted:
                    return
                else:
                    with self._errors(action):
                        rows = result.fetchmany(batch_rows)
                    if len(rows) < batch_rows:
                        exhausted = True
                    if not rows:
                        return
                yield self._record_batch(rows, schema)
        finally:
            with contextlib.suppress(Exception):
                result.close()
            with contextlib.suppress(Exception):
                conn.close()

    @staticmethod
    def _record_batch(rows: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
        columns = list(zip(*rows, strict=True))
        arrays = [arrow_column(list(col), f.type, f.name)
                  for col, f in zip(columns, schema, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    # -- write ----------------------------------------------------------------------------
    def write(self, table: str, data: pa.RecordBatchReader, *,
              mode: Literal["append", "merge", "snapshot"], key: Sequence[str] = (),
              idempotency: tuple[str, int] | None = None) -> WriteResult:
        if mode not in ("append", "merge", "snapshot"):
            raise UsageError(f"unknown write mode {mode!r}; use append, merge or snapshot")
        schema_part, name_part = split_table_name(table)
        names = list(data.schema.names)
        for n in names:
            _check_identifier(n, "column", table=False)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaMismatchError(f"the data has column(s) {dupes} more than once")
        keys = list(key)
        missing = [k for k in keys if k not in names]
        if missing:
            raise SchemaMismatchError(f"key column(s) {missing} are not in the data; its "
                                      f"columns: {', '.join(names)}")
        if mode == "merge" and not keys:
            raise SchemaMismatchError(f"merge into {table} needs key columns")
        engine = self._engine()
        with self._errors(f"writing {safe_display(table)}"):
            if idempotency is not None:
                self._ensure_applied_table(engine)
            with engine.connect() as conn:
                # Before the first statement: SQLite then takes the write lock at BEGIN.
                conn.execution_options(silta_write=True)
                with conn.begin() as trans:
                    if idempotency is not None and not self._claim(conn, *idempotency):
                        trans.rollback()
                        return WriteResult(rows=0, already=True)
                    target = self._prepare_target(conn, table, schema_part, name_part,
                                                  data.schema, mode, keys)
                    sql_table = sa.table(target.name, *[sa.column(n) for n in names],
                                         schema=target.schema)
                    if mode == "snapshot":
                        conn.execute(sa.delete(sa.table(target.name, schema=target.schema)))
                    stmt = self._insert(sql_table, names, keys if mode == "merge" else [])
                    rows = 0
                    for batch in data:
                        rows += self._insert_batch(conn, stmt, batch, names,
                                                   keys if mode == "merge" else [])
                    if idempotency is not None:
                        conn.execute(sa.update(APPLIED)
                                     .where(APPLIED.c.name == idempotency[0],
                                            APPLIED.c.version == idempotency[1])
                                     .values(rows=rows))
        return WriteResult(rows=rows, already=False)

    def _ensure_applied_table(self, engine: Engine) -> None:
        for attempt in range(2):
            try:
                with engine.begin() as conn:
                    conn.execute(sa.schema.CreateTable(APPLIED, if_not_exists=True))
                return
            except sa.exc.IntegrityError:
                # Two first writers at once: PostgreSQL's IF NOT EXISTS can still collide.
                if attempt:
                    raise

    def _claim(self, conn: Connection, name: str, version: int) -> bool:
        """Record (name, version); False when it was there (a concurrent writer waits on it)."""
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        stmt = insert(APPLIED).values(
            name=name, version=int(version), rows=None,
            applied_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        ).on_conflict_do_nothing(index_elements=["name", "version"]).returning(APPLIED.c.version)
        return conn.execute(stmt).first() is not None

    def _prepare_target(self, conn: Connection, table: str, schema_part: str | None,
                        name_part: str, incoming: pa.Schema, mode: str, keys: list[str]
                        ) -> _Target:
        insp = sa.inspect(conn)
        schema: str | None = None
        if schema_part is not None:
            found = _pick(schema_part, self._schemas(insp))
            if found is None:
                if self.dialect == "sqlite":
                    raise NotFoundError("schema", schema_part,
                                        "SQLite schemas are its attached databases: "
                                        + ", ".join(self._schemas(insp)))
                conn.execute(sa.schema.CreateSchema(schema_part, if_not_exists=True))
                found = schema_part
            schema = found
        existing = _pick(name_part, self._relations(insp, schema))
        created = existing is None
        if existing is None:
            columns = [sa.Column(f.name, Declared(ddl_type(f.type, self.dialect)),
                                 primary_key=f.name in keys, nullable=f.name not in keys,
                                 autoincrement=False)
                       for f in incoming]
            conn.execute(sa.schema.CreateTable(
                sa.Table(name_part, sa.MetaData(), *columns, schema=schema)))
            existing = name_part
            insp = sa.inspect(conn)  # a fresh inspector: the old one cached the catalogue
        target = _Target(schema, existing,
                         dict(self._columns(conn, insp, schema, existing)), created)
        self._check_columns(table, target, incoming)
        if mode == "merge" and not created:
            self._check_unique(insp, table, target, keys)
        return target

    @staticmethod
    def _check_columns(table: str, target: _Target, incoming: pa.Schema) -> None:
        missing = [f.name for f in incoming if f.name not in target.columns]
        if missing:
            raise SchemaMismatchError(
                f"table {table} has no column(s) {missing}; add them (ALTER TABLE ... ADD "
                f"COLUMN) or leave them out of the sync's columns. Its columns: "
                f"{', '.join(target.columns)}")
        wrong = []
        for f in incoming:
            have = target.columns[f.name]
            kind = type_kind(f.type)
            if kind != "null" and kind not in ACCEPTS.get(type_kind(have), frozenset()):
                wrong.append(f"{f.name!r} ({f.type} into {have})")
        if wrong:
            raise SchemaMismatchError(
                f"table {table}: column(s) {', '.join(wrong)} have incompatible types; change "
                "the table's column types (ALTER TABLE ... ALTER COLUMN ... TYPE) or publish "
                "into a new table")

    @staticmethod
    def _check_unique(insp: Inspector, table: str, target: _Target, keys: list[str]) -> None:
        wanted = set(keys)
        pk = insp.get_pk_constraint(target.name, schema=target.schema)
        candidates = [set(pk.get("constrained_columns") or [])]
        candidates += [set(u["column_names"])
                       for u in insp.get_unique_constraints(target.name, schema=target.schema)]
        candidates += [{c for c in i["column_names"] if c is not None}
                       for i in insp.get_indexes(target.name, schema=target.schema)
                       if i.get("unique")]
        if wanted not in candidates:
            cols = ", ".join(keys)
            raise SchemaMismatchError(
                f"merge into {table} needs a primary key or unique constraint on exactly "
                f"({cols}); add one (ALTER TABLE {table} ADD PRIMARY KEY ({cols}), or CREATE "
                f"UNIQUE INDEX ... ON {table} ({cols})) or use append or snapshot mode")

    def _insert(self, table: sa.TableClause, names: list[str], keys: list[str]
                ) -> sa.Insert:
        if not keys:
            return sa.insert(table)
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        stmt = insert(table)
        update = {n: stmt.excluded[n] for n in names if n not in keys}
        if update:
            return stmt.on_conflict_do_update(index_elements=keys, set_=update)
        return stmt.on_conflict_do_nothing(index_elements=keys)

    def _insert_batch(self, conn: Connection, stmt: sa.Insert, batch: pa.RecordBatch,
                      names: list[str], keys: list[str]) -> int:
        for offset in range(0, batch.num_rows, WRITE_CHUNK_ROWS):
            chunk = batch.slice(offset, WRITE_CHUNK_ROWS)
            columns = [self._db_values(normalized(chunk.column(i))) for i in range(len(names))]
            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            if keys:
                # One upsert statement must not touch a row twice: the last one wins.
                rows = list({tuple(r[k] for k in keys): r for r in rows}.values())
            if rows:
                conn.execute(stmt, rows)
        return int(batch.num_rows)

    def _db_values(self, col: pa.Array) -> list[Any]:
        values: list[Any] = col.to_pylist()
        kind = type_kind(col.type)
        if self.dialect == "sqlite":
            if kind in ("date", "timestamp", "decimal", "other"):
                return [None if v is None else sqlite_value(v) for v in values]
            return values
        if kind == "other":
            return [None if v is None else as_json_or_text(v) for v in values]
        return values

    # -- bookkeeping, check ---------------------------------------------------------------
    def applied_version(self, name: str) -> int | None:
        path = self._sqlite_path
        if path is not None and not path.exists():
            return None  # nothing was ever written here
        with self._errors("reading the applied versions"), self._engine().connect() as conn:
            if not sa.inspect(conn).has_table(APPLIED_TABLE):
                return None
            top = conn.execute(sa.select(sa.func.max(APPLIED.c.version))
                               .where(APPLIED.c.name == name)).scalar()
            return None if top is None else int(top)

    def check(self) -> str:
        self._require_database()
        with self._errors("connecting"), self._engine().connect() as conn:
            version_sql = ("SHOW server_version" if self.dialect == "postgresql"
                           else "SELECT sqlite_version()")
            version = conn.execute(sa.text(version_sql)).scalar()
            started = time.perf_counter()
            conn.execute(sa.text("SELECT 1")).scalar()
            latency_ms = (time.perf_counter() - started) * 1000
            tables = len(self._all_tables(sa.inspect(conn)))
        product = "PostgreSQL" if self.dialect == "postgresql" else "SQLite"
        return f"{product} {version}, {tables} table(s), round trip {latency_ms:.1f} ms"

    def close(self) -> None:
        with self._lock:
            if self._engine_obj is not None:
                self._engine_obj.dispose()
                self._engine_obj = None


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" listener issues BEGIN


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred BEGIN that upgrades later can fail
    # with "database is locked" without waiting for the busy timeout.
    write = bool(conn.get_execution_options().get("silta_write"))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


__all__ = ["APPLIED_TABLE", "SqlStore", "arrow_type_of", "ddl_type", "split_table_name",
           "sqlite_arrow_type"]
