"""Several processes writing one Delta table at once lose nothing and duplicate nothing.

Each test starts real processes (multiprocessing, spawn) that share nothing but the table:
a local folder, an Azurite container or a moto S3 bucket. Delta's log is the only
coordination point: every commit is a put-if-absent of the next log file (a hard link
locally, ``If-None-Match: *`` on the object stores), and delta-rs retries a commit that
lost the race (``COMMIT_RETRIES``). What survives those retries is a
``CommitConflictError``, which the workers retry with a fresh stream, as the sync engine
does.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

import connectors.lake as lake_mod
from connectors.errors import CommitConflictError
from connectors.lake import DeltaLake

WRITERS = 4
BATCHES = 6
ROWS = 50
SAME_APP = "silta/shared"
SAME_SEQS = 4

_CTX = mp.get_context("spawn")


def batch(app: str, seq: int, writer: str) -> pa.Table:
    return pa.table({"app": pa.array([app] * ROWS, pa.string()),
                     "seq": pa.array([seq] * ROWS, pa.int64()),
                     "writer": pa.array([writer] * ROWS, pa.string()),
                     "i": pa.array(range(ROWS), pa.int64())})


def _write(lake: DeltaLake, table: str, app: str, seq: int, writer: str
           ) -> tuple[int, bool, int]:
    """(version, already, conflicts): commit one batch, retried as the sync engine does."""
    conflicts = 0
    while True:
        try:
            result = lake.commit_batch(table, batch(app, seq, writer).to_reader(), app_id=app,
                                       seq=seq, mode="append", schema_merge=False,
                                       metadata={"silta.writer": writer})
        except CommitConflictError:
            conflicts += 1
            if conflicts > 50:
                raise
            continue
        return result.version, result.already, conflicts


def _finish(out: Any, results: list[Any]) -> None:
    out.put(results)
    out.close()
    out.join_thread()
    # deltalake's native thread pools can abort at interpreter exit (tests/conftest.py):
    # the results are out, leave without that teardown.
    os._exit(0)


def appender(uri: str, options: dict[str, str], table: str, writer: str, start: Any,
             out: Any) -> None:
    """One process: its own app id, seqs 1..BATCHES, each appended once."""
    lake = DeltaLake(uri, options)
    app = f"silta/{writer}"
    start.wait(120)
    _finish(out, [(writer, seq, *_write(lake, table, app, seq, writer))
                  for seq in range(1, BATCHES + 1)])


def same_seq_writer(uri: str, options: dict[str, str], table: str, writer: str, barrier: Any,
                    out: Any) -> None:
    """One of two processes that commit the same (app id, seq) at the same moment."""
    lake = DeltaLake(uri, options)
    results = []
    for seq in range(1, SAME_SEQS + 1):
        barrier.wait(120)
        results.append((writer, seq, *_write(lake, table, SAME_APP, seq, writer)))
    _finish(out, results)


def run_processes(target: Callable[..., None], uri: str, options: dict[str, str],
                  table: str, writers: list[str], sync: Any) -> list[tuple[Any, ...]]:
    out = _CTX.Queue()
    procs = [_CTX.Process(target=target, args=(uri, options, table, w, sync, out))
             for w in writers]
    for p in procs:
        p.start()
    results: list[tuple[Any, ...]] = []
    try:
        for _ in procs:
            results += out.get(timeout=300)
    except queue.Empty:
        pytest.fail("a writer process gave no result in 300 s (see its stderr above)")
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return results


@pytest.fixture(params=["local", "az", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(lake URI, storage options) of a fresh lake on each kind of store."""
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        return f"s3://{s3.new_bucket()}/lake", s3.storage_options()
    az = request.getfixturevalue("azurite_server")
    return f"az://{az.new_container()}/lake", az.storage_options()


def test_concurrent_appenders_lose_nothing(target: tuple[str, dict[str, str]]) -> None:
    uri, options = target
    writers = [f"w{k}" for k in range(WRITERS)]
    # A barrier: the writers start appending together.
    results = run_processes(appender, uri, options, "t", writers, _CTX.Barrier(WRITERS))

    assert sorted((w, seq) for w, seq, *_ in results) == sorted(
        (w, seq) for w in writers for seq in range(1, BATCHES + 1))
    assert not any(already for *_, already, _c in results)
    versions = [v for _w, _s, v, _a, _c in results]
    assert sorted(versions) == list(range(WRITERS * BATCHES)), results  # one version a batch

    table = DeltaTable(f"{uri}/t", storage_options=options)
    rows = table.to_pyarrow_dataset().to_table(columns=["app", "seq"]).to_pylist()
    assert len(rows) == WRITERS * BATCHES * ROWS
    per_batch = Counter((r["app"], r["seq"]) for r in rows)
    assert per_batch == {(f"silta/{w}", s): ROWS for w in writers
                         for s in range(1, BATCHES + 1)}
    for w in writers:
        assert table.transaction_version(f"silta/{w}") == BATCHES
    commits = Counter((h["silta.app_id"], int(h["silta.seq"])) for h in table.history()
                      if "silta.app_id" in h)
    assert set(commits.values()) == {1} and len(commits) == WRITERS * BATCHES


def test_the_same_app_and_seq_from_two_processes_lands_once(
        target: tuple[str, dict[str, str]]) -> None:
    uri, options = target
    results = run_processes(same_seq_writer, uri, options, "t", ["a", "b"], _CTX.Barrier(2))

    table = DeltaTable(f"{uri}/t", storage_options=options)
    rows = table.to_pyarrow_dataset().to_table(columns=["seq", "writer"]).to_pylist()
    landed = {r["seq"]: r["writer"] for r in rows}
    assert Counter(r["seq"] for r in rows) == {s: ROWS for s in range(1, SAME_SEQS + 1)}
    assert all(Counter(r["writer"] for r in rows if r["seq"] == s) == {landed[s]: ROWS}
               for s in landed)  # one writer's copy per seq, never a mix
    assert table.transaction_version(SAME_APP) == SAME_SEQS
    for seq in range(1, SAME_SEQS + 1):
        mine = {w: already for w, s, _v, already, _c in results if s == seq}
        # Exactly one writer wrote it; the other was told it was already there.
        assert sorted(mine.values()) == [False, True]
        assert [w for w, already in mine.items() if not already] == [landed[seq]]
    seqs = [int(h["silta.seq"]) for h in table.history() if h.get("silta.app_id") == SAME_APP]
    assert sorted(seqs) == list(range(1, SAME_SEQS + 1))


# -- the conflict paths, made to happen on demand (local lake) ------------------------------
def _pa_batch(seq: int) -> pa.Table:
    return batch("silta/x", seq, "me")


def test_a_conflict_that_outlasts_delta_rs_retries_is_a_retriable_conflict_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = DeltaLake(str(tmp_path / "lake"))
    lake.commit_batch("t", _pa_batch(1).to_reader(), app_id="silta/x", seq=1, mode="append",
                      schema_merge=False, metadata={})
    calls: list[int] = []

    def lose(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise CommitFailedError("Failed to commit transaction: 20")

    monkeypatch.setattr(lake_mod, "write_deltalake", lose)
    monkeypatch.setattr(lake_mod, "_pause", lambda attempt: None)
    with pytest.raises(CommitConflictError) as err:
        lake.commit_batch("t", _pa_batch(2).to_reader(), app_id="silta/x", seq=2,
                          mode="append", schema_merge=False, metadata={})
    assert err.value.retriable is True and len(calls) == 1  # a stream is not replayed
    with pytest.raises(CommitConflictError):
        lake.commit_batch("t", _pa_batch(2), app_id="silta/x", seq=2, mode="append",
                          schema_merge=False, metadata={})
    assert len(calls) == 1 + lake_mod.REPLAYS  # a table is, a few times
    assert lake.committed_seq("t", "silta/x") == 1


def test_a_write_that_raised_after_it_committed_counts_as_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """delta-rs issues 2279/2609: the commit landed, then the call raised."""
    lake = DeltaLake(str(tmp_path / "lake"))
    lake.commit_batch("t", _pa_batch(1).to_reader(), app_id="silta/x", seq=1, mode="append",
                      schema_merge=False, metadata={})
    real = write_deltalake

    def land_then_raise(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise CommitFailedError("connection reset after the commit")

    monkeypatch.setattr(lake_mod, "write_deltalake", land_then_raise)
    result = lake.commit_batch("t", _pa_batch(2).to_reader(), app_id="silta/x", seq=2,
                               mode="append", schema_merge=False, metadata={})
    assert (result.version, result.already) == (1, False)
    assert lake.count_rows("t") == 2 * ROWS


def test_a_table_created_by_another_writer_after_open_is_not_appended_to_blindly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = DeltaLake(str(tmp_path / "lake"))
    other = DeltaLake(str(tmp_path / "lake"))
    real_open = lake.open
    creator: list[tuple[str, int]] = []  # (app id, seq) the other writer creates with

    def open_late(name: str, version: int | None = None) -> Any:
        # The first look finds no table; the other writer creates it right after.
        if creator:
            app, seq = creator.pop()
            other.commit_batch(name, batch(app, seq, "other"), app_id=app, seq=seq,
                               mode="append", schema_merge=False, metadata={})
            return None
        return real_open(name, version)

    monkeypatch.setattr(lake, "open", open_late)
    monkeypatch.setattr("connectors.lake._pause", lambda attempt: None)

    # The same (app id, seq): the other writer's copy counts, ours is not written.
    creator.append((SAME_APP, 1))
    mine = lake.commit_batch("t", batch(SAME_APP, 1, "me").to_reader(), app_id=SAME_APP,
                             seq=1, mode="append", schema_merge=False, metadata={})
    assert (mine.version, mine.already) == (0, True)
    assert lake.read("t", columns=["writer"]).column("writer").to_pylist() == ["other"] * ROWS

    # Another app id, as a stream: a conflict for the caller to retry with a fresh stream.
    creator.append(("silta/other", 1))
    with pytest.raises(CommitConflictError):
        lake.commit_batch("t2", batch("silta/y", 1, "me").to_reader(), app_id="silta/y",
                          seq=1, mode="append", schema_merge=False, metadata={})
    assert lake.count_rows("t2") == ROWS

    # As a table: written again here, on the snapshot that now exists.
    creator.append(("silta/other", 1))
    done = lake.commit_batch("t3", batch("silta/y", 1, "me"), app_id="silta/y", seq=1,
                             mode="append", schema_merge=False, metadata={})
    assert (done.version, done.already) == (1, False)
    assert sorted(lake.read("t3", columns=["writer"]).column("writer").to_pylist()) == (
        ["me"] * ROWS + ["other"] * ROWS)


def test_versions_come_from_the_log_files_not_from_a_snapshot_that_moved_on(
        tmp_path: Path) -> None:
    """deltalake 1.6.6's ``history()`` on a snapshot at version 0, after another writer
    committed version 1, answers [(0, second), (-1, first)]: every number off by one.
    The lake reads the commit files by name instead."""
    lake = DeltaLake(str(tmp_path / "lake"))
    lake.commit_batch("t", _pa_batch(1), app_id="silta/x", seq=1, mode="append",
                      schema_merge=False, metadata={})
    stale = lake.require("t")
    DeltaLake(str(tmp_path / "lake")).commit_batch(
        "t", _pa_batch(2), app_id="silta/x", seq=2, mode="append", schema_merge=False,
        metadata={})
    entry = lake.find_commit("t", "silta/x", 1, table=stale)
    assert entry is not None and entry["version"] == 0
    assert lake.find_commit("t", "silta/x", 2, table=stale) is None  # after the snapshot
    assert [(h["version"], h["silta.seq"]) for h in lake.history("t")] == [(1, "2"), (0, "1")]
