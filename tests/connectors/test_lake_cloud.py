"""The Delta lake on object stores: one suite for a local folder, Azurite and moto S3.

Azurite is reached as ``az://container/lake`` and as ``abfss://container@account.dfs...``
(both through the blob endpoint: deltalake takes the endpoint from the storage options,
and Azurite has no ADLS Gen2 endpoint). Each test gets its own container or bucket.

Every table is checked by three readers besides Silta's own:

- a fresh ``deltalake.DeltaTable`` (no state shared with the writer);
- DuckDB's delta extension (delta-kernel-rs, not delta-rs), which reaches the stores
  through its httpfs and azure extensions (PyPI packages ``duckdb-extension-httpfs`` and
  ``duckdb-extension-azure``, the 1.5.5 builds that match DuckDB 1.5.5). Its Azure
  reader only knows the emulator's default port 10000 unless ``AZURITE_BLOB_STORAGE_URL``
  says otherwise, so the fixture sets it (it applies only to clients in emulator mode,
  which Silta's options never ask for); DuckDB reads Azure tables by their ``az://``
  name, since it maps ``abfss://`` to the dfs host Azurite does not serve;
- the raw objects, listed with boto3 / azure-storage-blob (or the filesystem): the
  ``_delta_log`` commit files must be numbered without gaps, every data file the log
  adds (minus what it removes) must exist, and the rows of those parquet files must be
  the table's rows. Nothing half-written can hide from this one.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from connectors.errors import AuthError, NotFoundError, SiltaError, StoreError
from connectors.lake import DeltaLake, history_summary
from tests.servers.azurite import AzuriteServer
from tests.servers.moto_s3 import MotoS3Server

KINDS = ["local", "az", "abfss", "s3"]
REMOTE = ["az", "abfss", "s3"]
DUCK_EXTENSIONS = ("delta", "httpfs", "azure")
DUCK_HINT = ("DuckDB needs its delta, httpfs and azure extensions to read the remote stores: "
             "pip install duckdb-extension-httpfs==1.5.5 duckdb-extension-azure==1.5.5 "
             "(the dev extra in pyproject.toml lists them; make install)")
APP = "silta/test"


@dataclass
class Env:
    """One lake under test and the ways to look at it from outside Silta."""

    kind: str
    uri: str
    options: dict[str, str]
    objects: Callable[[str], list[str]]  # object names below the lake root, by prefix
    read_object: Callable[[str], bytes]
    duck_uri: Callable[[str], str]  # how DuckDB names a table of this lake
    server: AzuriteServer | MotoS3Server | None = None

    def lake(self, **options: str) -> DeltaLake:
        return DeltaLake(self.uri, {**self.options, **options})


def _local_env(root: Path) -> Env:
    def objects(prefix: str) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).as_posix().startswith(prefix))

    return Env("local", str(root), {}, objects, lambda n: (root / n).read_bytes(),
               lambda t: str(root / t))


def _azure_env(server: AzuriteServer, kind: str) -> Env:
    container = server.new_container()
    uri = (f"az://{container}/lake" if kind == "az"
           else f"abfss://{container}@{server.account}.dfs.core.windows.net/lake")
    return Env(kind, uri, server.storage_options(),
               lambda prefix: [n.removeprefix("lake/")
                               for n in server.blob_names(container, "lake/" + prefix)],
               lambda n: server.read_blob(container, "lake/" + n),
               lambda t: f"az://{container}/lake/{t}", server)


def _s3_env(server: MotoS3Server) -> Env:
    bucket = server.new_bucket()
    return Env("s3", f"s3://{bucket}/lake", server.storage_options(),
               lambda prefix: [n.removeprefix("lake/")
                               for n in server.object_names(bucket, "lake/" + prefix)],
               lambda n: server.read_object(bucket, "lake/" + n),
               lambda t: f"s3://{bucket}/lake/{t}", server)


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Env:
    kind: str = request.param
    if kind == "local":
        return _local_env(tmp_path / "lake")
    if kind == "s3":
        return _s3_env(request.getfixturevalue("s3_server"))
    return _azure_env(request.getfixturevalue("azurite_server"), kind)


@pytest.fixture(params=REMOTE)
def remote(request: pytest.FixtureRequest) -> Env:
    if request.param == "s3":
        return _s3_env(request.getfixturevalue("s3_server"))
    return _azure_env(request.getfixturevalue("azurite_server"), request.param)


@pytest.fixture(scope="module")
def duck3() -> Iterator[Any]:
    """DuckDB with the delta, httpfs and azure extensions loaded from their PyPI packages."""
    import importlib

    import duckdb

    paths = []
    for ext in DUCK_EXTENSIONS:
        try:
            mod = importlib.import_module(f"duckdb_extension_{ext}")
        except ImportError:
            pytest.fail(DUCK_HINT, pytrace=False)
        base = Path(mod.__file__ or "").parent / "extensions"
        found = sorted(base.glob(f"*/{ext}.duckdb_extension"))
        if not found:
            pytest.fail(f"no {ext}.duckdb_extension under {base}; {DUCK_HINT}", pytrace=False)
        paths.append(found[-1])
    con = duckdb.connect()
    for p in paths:
        con.execute(f"LOAD '{p}'")
    with pytest.MonkeyPatch.context() as mp:
        yield _Duck(con, mp)
    con.close()


@dataclass
class _Duck:
    con: Any
    mp: pytest.MonkeyPatch

    def rows(self, env: Env, table: str, cols: str) -> list[tuple[Any, ...]]:
        if isinstance(env.server, MotoS3Server):
            s = env.server
            self.con.execute(
                f"CREATE OR REPLACE SECRET s3_test (TYPE s3, KEY_ID '{s.access_key}', "
                f"SECRET '{s.secret_key}', REGION '{s.region}', ENDPOINT '127.0.0.1:{s.port}', "
                "URL_STYLE 'path', USE_SSL false)")
        elif isinstance(env.server, AzuriteServer):
            a = env.server
            # delta-kernel's emulator mode reads its endpoint from this variable.
            self.mp.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{a.port}")
            self.con.execute(f"CREATE OR REPLACE SECRET az_test (TYPE azure, "
                             f"CONNECTION_STRING '{a.connection_string()}')")
        sql = f"SELECT {cols} FROM delta_scan('{env.duck_uri(table)}') ORDER BY 1"
        return [tuple(r) for r in self.con.execute(sql).fetchall()]


# -- independent readers ----------------------------------------------------------------
_COMMIT = re.compile(r"_delta_log/(\d{20})\.json")


def raw_table(env: Env, table: str) -> tuple[int, pa.Table]:
    """(latest version, rows) computed from the raw objects alone (see the docstring)."""
    names = env.objects(f"{table}/")
    versions = sorted(int(m.group(1)) for n in names
                      if (m := _COMMIT.fullmatch(n.removeprefix(f"{table}/"))))
    assert versions == list(range(len(versions))), f"log of {table} has gaps: {versions}"
    active: set[str] = set()
    for v in versions:
        for line in env.read_object(f"{table}/_delta_log/{v:020d}.json").splitlines():
            action = json.loads(line)
            if "add" in action:
                active.add(urllib.parse.unquote(action["add"]["path"]))
            elif "remove" in action:
                active.discard(urllib.parse.unquote(action["remove"]["path"]))
    missing = sorted(p for p in active if f"{table}/{p}" not in names)
    assert not missing, f"the log of {table} names data files that do not exist: {missing}"
    parts = [pq.read_table(io.BytesIO(env.read_object(f"{table}/{p}"))) for p in sorted(active)]
    rows = pa.concat_tables(parts, promote_options="default") if parts else pa.table({})
    return versions[-1], rows


def _sorted(rows: list[dict[str, Any]], cols: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[c] for c in cols) for r in rows)


def read_everywhere(env: Env, duck3: _Duck, table: str, cols: list[str]
                    ) -> list[tuple[Any, ...]]:
    """The table's rows, checked equal across Silta, deltalake, DuckDB and the raw objects."""
    silta = _sorted(env.lake().read(table, columns=cols).to_pylist(), cols)
    fresh_table = DeltaTable(f"{env.uri}/{table}", storage_options=env.options)
    fresh = _sorted(fresh_table.to_pyarrow_dataset().to_table(columns=cols).to_pylist(), cols)
    version, raw = raw_table(env, table)
    assert version == fresh_table.version()
    assert _sorted(raw.select(cols).to_pylist(), cols) == silta
    assert fresh == silta
    assert sorted(duck3.rows(env, table, ", ".join(f'"{c}"' for c in cols))) == silta
    return silta


def batch(ids: range, tag: str) -> pa.Table:
    return pa.table({"id": pa.array(list(ids), pa.int64()),
                     "tag": pa.array([tag] * len(ids), pa.string()),
                     "amount": pa.array([i * 0.5 for i in ids], pa.float64())})


def commit(lake: DeltaLake, table: str, data: pa.Table, seq: int, *, app: str = APP,
           meta: dict[str, str] | None = None) -> Any:
    return lake.commit_batch(table, data.to_reader(), app_id=app, seq=seq, mode="append",
                             schema_merge=False, metadata=meta or {})


def commits_of(lake: DeltaLake, table: str, app: str = APP) -> list[int]:
    return sorted(int(h["silta.seq"]) for h in lake.history(table)
                  if h.get("silta.app_id") == app)


# -- the lake's methods on every store ----------------------------------------------------
def test_commit_batch_lands_exactly_once(env: Env, duck3: _Duck) -> None:
    lake = env.lake()
    assert lake.open("raw/t") is None
    first = commit(lake, "raw/t", batch(range(0, 100), "a"), 1)
    assert (first.version, first.already) == (0, False)
    again = commit(lake, "raw/t", batch(range(500, 600), "other"), 1)
    assert (again.version, again.already) == (0, True)
    second = commit(lake, "raw/t", batch(range(100, 150), "b"), 2)
    assert (second.version, second.already) == (1, False)
    third = lake.commit_batch("raw/t", batch(range(150, 160), "c"), app_id=APP, seq=3,
                              mode="append", schema_merge=False, metadata={})  # a pa.Table
    assert (third.version, third.already) == (2, False)

    assert commits_of(lake, "raw/t") == [1, 2, 3]
    assert lake.committed_seq("raw/t", APP) == 3
    rows = read_everywhere(env, duck3, "raw/t", ["id", "tag"])
    assert [r[0] for r in rows] == list(range(160))
    assert lake.count_rows("raw/t") == 160


def test_merge_batch_upserts_once(env: Env, duck3: _Duck) -> None:
    lake = env.lake()
    lake.merge_batch("dim", batch(range(0, 5), "v1"), keys=["id"], app_id=APP, seq=1,
                     schema_merge=False, metadata={})
    upsert = pa.concat_tables([batch(range(3, 8), "v2"), batch(range(7, 8), "v3")])
    done = lake.merge_batch("dim", upsert, keys=["id"], app_id=APP, seq=2,
                            schema_merge=False, metadata={})
    assert (done.version, done.already, done.rows) == (1, False, 5)
    replay = lake.merge_batch("dim", batch(range(0, 8), "never"), keys=["id"], app_id=APP,
                              seq=2, schema_merge=False, metadata={})
    assert (replay.version, replay.already) == (1, True)
    rows = read_everywhere(env, duck3, "dim", ["id", "tag"])
    assert rows == [(0, "v1"), (1, "v1"), (2, "v1"), (3, "v2"), (4, "v2"), (5, "v2"),
                    (6, "v2"), (7, "v3")]


def test_history_time_travel_and_tags(env: Env, duck3: _Duck) -> None:
    lake = env.lake()
    commit(lake, "t", batch(range(0, 10), "a"), 1,
           meta={"silta.source": "inbox:a.csv", "silta.run_id": "run-1"})
    # A commitInfo longer than the first read of a commit file (64 KiB) is read whole.
    commit(lake, "t", batch(range(10, 15), "b"), 2,
           meta={"silta.source": "inbox:b.csv", "silta.note": "n" * 70_000})

    latest, older = lake.history("t")
    assert (latest["version"], latest["silta.seq"], latest["silta.source"]) == (
        1, "2", "inbox:b.csv")
    assert latest["silta.note"] == "n" * 70_000
    found = lake.find_commit("t", APP, 2)
    assert found is not None and found["version"] == 1
    summary = history_summary(older)
    assert (summary["version"], summary["batch"], summary["rows_added"], summary["run_id"]) == (
        0, 1, 10, "run-1")
    assert sorted(lake.read("t", version=0)["id"].to_pylist()) == list(range(10))
    assert lake.count_rows("t", version=0) == 10
    assert lake.schema("t", version=0) == lake.schema("t")
    with pytest.raises(NotFoundError):
        lake.require("t", version=7)

    lake.add_tag("t", "first", 0, by="tester", note="before b")
    tags = lake.list_tags("t")
    assert [(t["tag"], t["version"], t["created_by"]) for t in tags] == [("first", 0, "tester")]
    assert len(read_everywhere(env, duck3, "t", ["id"])) == 15
    assert read_everywhere(env, duck3, "_silta/tags", ["tag", "version"]) == [("first", 0)]


def test_list_tables_finds_nested_tables_and_hides_internal_ones(env: Env) -> None:
    lake = env.lake()
    assert lake.list_tables() == []  # nothing below the root yet
    for i, name in enumerate(["a", "x/b", "x/y/c", "x/y/c2"]):
        commit(lake, name, batch(range(i, i + 1), name), 1)
    lake.add_tag("a", "v0", 0, by="tester")
    assert lake.list_tables() == ["a", "x/b", "x/y/c", "x/y/c2"]
    assert lake.list_tables(include_internal=True) == ["_silta/tags", "a", "x/b", "x/y/c",
                                                       "x/y/c2"]


# -- clear errors -----------------------------------------------------------------------
def _missing_root(env: Env) -> tuple[str, str]:
    """A lake URI in a container or bucket that does not exist, and that name."""
    name = "gone-" + os.urandom(6).hex()
    if env.kind == "s3":
        return f"s3://{name}/lake", name
    if env.kind == "az":
        return f"az://{name}/lake", name
    return f"abfss://{name}@devstoreaccount1.dfs.core.windows.net/lake", name


def test_a_missing_container_or_bucket_says_to_create_it(remote: Env) -> None:
    uri, name = _missing_root(remote)
    lake = DeltaLake(uri, remote.options)
    calls: list[Callable[[], Any]] = [
        lambda: lake.open("t"),
        lambda: commit(lake, "t", batch(range(3), "a"), 1),
        lambda: lake.list_tables(),
    ]
    for call in calls:
        with pytest.raises(StoreError) as err:
            call()
        e = err.value
        assert not isinstance(e, AuthError) and e.retriable is False
        assert uri in str(e) and "does not exist" in str(e)
        command = f"aws s3 mb s3://{name}" if remote.kind == "s3" else (
            f"az storage container create --name {name}")
        assert command in str(e)


def _wrong(options: dict[str, str], kind: str) -> tuple[dict[str, str], str]:
    if kind == "s3":
        wrong = "WrongSecret/+=" + "x" * 26
        return {**options, "aws_secret_access_key": wrong}, wrong
    # a well-formed key (base64, with + and /), just not the account's
    wrong = ("d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudHMtb3duLWtleS0wMTIzNDU2Nzg5LWFiY2RlZmdo"
             "aWprbG37777//g==")
    return {**options, "azure_storage_account_key": wrong}, wrong


def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(remote: Env) -> None:
    commit(remote.lake(), "exists", batch(range(3), "a"), 1)
    options, wrong = _wrong(remote.options, remote.kind)
    lake = DeltaLake(remote.uri, options)
    calls: list[Callable[[], Any]] = [
        lambda: lake.open("exists"),
        lambda: lake.open("not/there"),  # not "table not found": the store refused us
        lambda: commit(lake, "exists", batch(range(3), "b"), 2),
        lambda: commit(lake, "new", batch(range(3), "b"), 1),
        lambda: lake.list_tables(),
        lambda: lake.read("exists"),
    ]
    for call in calls:
        with pytest.raises(AuthError) as err:
            call()
        text = str(err.value)
        assert err.value.retriable is False and remote.uri in text
        assert "storage_options" in text
        for form in (wrong, urllib.parse.quote(wrong, safe=""), urllib.parse.quote_plus(wrong)):
            assert form not in text
    assert remote.lake().committed_seq("exists", APP) == 1  # the refused commit wrote nothing


def test_a_refusal_hidden_behind_is_deltatable_false_is_still_an_auth_error(
        remote: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some deltalake versions answer False instead of raising when the key is wrong.

    deltalake 1.6.6 raises; the lake's probe must catch the other behaviour too, so that
    a wrong key is never reported as "no such table".
    """
    commit(remote.lake(), "exists", batch(range(3), "a"), 1)
    monkeypatch.setattr(DeltaTable, "is_deltatable", staticmethod(lambda *a, **k: False))
    assert remote.lake().open("exists") is None  # the right key: the probe says absent
    options, wrong = _wrong(remote.options, remote.kind)
    with pytest.raises(AuthError) as err:
        DeltaLake(remote.uri, options).open("exists")
    assert wrong not in str(err.value)


def test_secrets_in_a_store_message_are_blanked(tmp_path: Path) -> None:
    token = "sv=2024-08-04&sig=Zm9v%2Bbar%2F=="
    lake = DeltaLake("az://c/lake", {"azure_storage_sas_token": token,
                                     "azure_storage_account_name": "acct"})
    raw = OSError(f"Error performing GET https://acct.blob.core.windows.net/c/lake?{token} "
                  f"(sas {urllib.parse.unquote(token)}) - 403 Forbidden "
                  "<Code>AuthenticationFailed</Code>")
    error = lake._translate(raw, "t")
    assert isinstance(error, AuthError)
    text = str(error)
    assert token not in text and urllib.parse.unquote(token) not in text
    assert "403 Forbidden, AuthenticationFailed" in text and "az://c/lake" in text
    # An error the lake cannot classify is shown whole, less the secret.
    odd = lake._translate(OSError(f"Generic error: odd reply to ?{token} and "
                                  f"{urllib.parse.unquote(token)}"), "t")
    assert type(odd) is StoreError and "odd reply" in str(odd) and "***" in str(odd)
    assert token not in str(odd) and urllib.parse.unquote(token) not in str(odd)
    assert "acct" not in DeltaLake("az://c/lake", {"azure_storage_account_name": "acct"}
                                   )._secrets  # names are not secrets


def test_a_malformed_azure_key_is_an_auth_error_too(azurite_server: AzuriteServer) -> None:
    env = _azure_env(azurite_server, "az")
    bad = "not base64 at all!"
    lake = DeltaLake(env.uri, {**env.options, "azure_storage_account_key": bad})
    with pytest.raises(AuthError) as err:
        lake.open("t")
    assert bad not in str(err.value) and env.uri in str(err.value)


def test_a_stopped_server_is_retriable_and_the_same_lake_works_again(remote: Env) -> None:
    assert remote.server is not None
    # Two retries instead of object_store's ten: the same errors, sooner.
    lake = remote.lake(max_retries="2", retry_timeout="20s")
    commit(lake, "t", batch(range(5), "a"), 1)
    remote.server.stop()
    try:
        calls: list[Callable[[], Any]] = [
            lambda: lake.open("t"),
            lambda: lake.open("never/made"),
            lambda: commit(lake, "t", batch(range(5, 10), "b"), 2),
            lambda: lake.list_tables(),
        ]
        for call in calls:
            with pytest.raises(StoreError) as err:
                call()
            assert err.value.retriable is True and not isinstance(err.value, AuthError)
            assert remote.uri in str(err.value) and "cannot reach" in str(err.value)
    finally:
        remote.server.start()
    assert commit(lake, "t", batch(range(5, 10), "b"), 2).already is False
    assert lake.count_rows("t") == 10 and commits_of(lake, "t") == [1, 2]


def test_a_server_stopped_during_a_commit_leaves_the_batch_whole_or_absent(
        remote: Env, duck3: _Duck) -> None:
    """The server goes away (from another thread) while a slow reader feeds commit_batch.

    Afterwards, with the server back, the batch is either in the table once or not at
    all; the table reads cleanly; a retry with the same seq yields exactly one copy.
    """
    assert remote.server is not None
    server = remote.server
    lake = remote.lake(max_retries="2", retry_timeout="20s")
    commit(lake, "t", batch(range(0, 1000), "old"), 1)
    data = batch(range(1000, 21000), "new")
    halfway, stopped = threading.Event(), threading.Event()

    def stopper() -> None:
        halfway.wait(60)
        server.stop()
        stopped.set()

    def slow() -> Iterator[pa.RecordBatch]:
        for i, b in enumerate(data.to_batches(max_chunksize=1000)):
            if i == 5:
                halfway.set()
                stopped.wait(60)  # the rest is read while the server is gone
            time.sleep(0.01)
            yield b

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        reader = pa.RecordBatchReader.from_batches(data.schema, slow())
        with pytest.raises(SiltaError) as err:
            lake.commit_batch("t", reader, app_id=APP, seq=2, mode="append",
                              schema_merge=False, metadata={})
        assert err.value.retriable is True
    finally:
        thread.join(60)
        server.start()
    count = lake.count_rows("t")
    assert count in (1000, 21000)
    assert commits_of(lake, "t") == ([1] if count == 1000 else [1, 2])
    retry = commit(lake, "t", data, 2)
    assert retry.already is (count == 21000)
    ids = [r[0] for r in read_everywhere(remote, duck3, "t", ["id"])]
    assert ids == list(range(21000))
    assert commits_of(lake, "t") == [1, 2]
