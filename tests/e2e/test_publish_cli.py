"""Publish through the real `silta` command: agent runs, status, connectors, and kill -9.

The published files are read back with pyarrow; the ledger with plain sqlite3.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.conftest import write_config
from tests.e2e._cli import SILTA, cli_env, delta_table, ledger, silta, write_csv

pytestmark = pytest.mark.timeout(180)

INGEST: dict[str, Any] = {"name": "in", "source": "inbox:in/*.csv", "target": "lake:out/codes"}
PUB: dict[str, Any] = {"name": "pub", "source": "lake:out/codes",
                       "target": "inbox:outgoing/codes_{version}.csv", "mode": "append"}
HEADER = "id,code,share"


def _config(root: Path) -> Path:
    # one worker: the ingest runs before the publish within one `--once`
    return write_config(root, [INGEST, PUB], agent={"sync_workers": 1})


def _once(root: Path, config: Path) -> list[dict[str, Any]]:
    r = silta(root, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    assert "Traceback" not in r.err, r
    outcomes: list[dict[str, Any]] = r.json()
    return outcomes


def _outgoing(root: Path) -> list[str]:
    folder = root / "inbox" / "outgoing"
    return sorted(os.listdir(folder)) if folder.exists() else []


def _rows(path: Path) -> list[tuple[Any, ...]]:
    data = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    assert data.column_names == ["id", "code", "share"]
    return sorted(tuple(r.values()) for r in data.to_pylist())


def _status(root: Path, config: Path) -> dict[str, dict[str, Any]]:
    r = silta(root, "status", "--json", "--config", config)
    assert r.code == 0, r
    return {s["sync"]: s for s in r.json()["syncs"]}


def test_ingest_then_publish_in_one_config_through_the_agent(tmp_path: Path) -> None:
    config = _config(tmp_path)
    write_csv(tmp_path / "inbox" / "in" / "a.csv", HEADER, ["1,C001,0.25", "2,C002,0.5"])

    ingest, publish = _once(tmp_path, config)
    assert (ingest["sync"], ingest["status"], ingest["files"], ingest["rows"],
            ingest["table_version"]) == ("in", "ok", 1, 2, 0)
    assert (publish["sync"], publish["status"], publish["batches"], publish["files"],
            publish["rows"], publish["table_version"], publish["error"],
            publish["verified"]) == ("pub", "ok", 1, 1, 2, 0, None,
                                     "ok: rows read 2 = written 2")
    assert _outgoing(tmp_path) == ["codes_0.csv"]
    first = tmp_path / "inbox" / "outgoing" / "codes_0.csv"
    assert _rows(first) == [(1, "C001", 0.25), (2, "C002", 0.5)]
    assert publish["bytes"] == first.stat().st_size
    # the lake holds the lineage; the published file does not
    lake = delta_table(tmp_path / "lake" / "out" / "codes")
    assert sorted(lake.column_names) == sorted(
        ["id", "code", "share", "_silta_source", "_silta_batch", "_silta_ingested_at"])

    status = _status(tmp_path, config)
    assert [(s["sync"], s["direction"], s["outcome"], s["table"], s["table_version"])
            for s in status.values()] == [("in", "ingest", "ok", "out/codes", 0),
                                          ("pub", "publish", "ok", "out/codes", 0)]
    assert status["pub"]["verified"] == "ok: rows read 2 = written 2"
    assert str(status["in"]["verified"]).startswith("ok: ")

    write_csv(tmp_path / "inbox" / "in" / "b.csv", HEADER, ["3,C003,1.5"])
    write_csv(tmp_path / "inbox" / "in" / "c.csv", HEADER, ["4,C004,-2.0", "5,,0.0"])
    ingest, publish = _once(tmp_path, config)
    assert (ingest["rows"], ingest["table_version"]) == (3, 1)
    assert (publish["status"], publish["files"], publish["rows"], publish["table_version"],
            publish["verified"]) == ("ok", 1, 3, 1, "ok: rows read 3 = written 3")
    assert _outgoing(tmp_path) == ["codes_0.csv", "codes_1.csv"]
    assert _rows(tmp_path / "inbox" / "outgoing" / "codes_1.csv") == [
        (3, "C003", 1.5), (4, "C004", -2.0), (5, None, 0.0)]
    assert (tmp_path / "inbox" / "outgoing" / "codes_1.csv").read_text().splitlines()[0] == (
        '"id","code","share"')

    ingest, publish = _once(tmp_path, config)
    assert [(o["sync"], o["batches"], o["files"], o["rows"]) for o in (ingest, publish)] == [
        ("in", 0, 0, 0), ("pub", 0, 0, 0)]
    assert _outgoing(tmp_path) == ["codes_0.csv", "codes_1.csv"]
    units = ledger(tmp_path / "state", "SELECT seq, status, table_version, rows FROM batches "
                   "WHERE sync = 'pub' ORDER BY seq")
    assert [tuple(u.values()) for u in units] == [(1, "committed", 0, 2), (2, "committed", 1, 3)]
    runs = ledger(tmp_path / "state", "SELECT kind, status, verified FROM runs WHERE name = "
                  "'pub' ORDER BY started_at")
    assert [tuple(r.values()) for r in runs] == [
        ("publish", "ok", "ok: rows read 2 = written 2"),
        ("publish", "ok", "ok: rows read 3 = written 3"),
        ("publish", "ok", "ok: up to date (published to version 1)")]


def test_status_totals_and_checks_of_both_directions(tmp_path: Path) -> None:
    config = _config(tmp_path)
    write_csv(tmp_path / "inbox" / "in" / "a.csv", HEADER, ["1,C001,0.25", "2,C002,0.5"])
    _once(tmp_path, config)
    write_csv(tmp_path / "inbox" / "in" / "b.csv", HEADER, ["3,C003,1.5"])
    _once(tmp_path, config)
    status = _status(tmp_path, config)
    figures = {name: (s["verified"], s["files"], s["rows"], s["total_files"], s["total_rows"])
               for name, s in status.items()}
    # an ingest's check counts the rows it read and wrote, like a publish's; a publish's
    # total files are the files it published (two, one per run)
    assert figures == {"in": ("ok: rows read 1 = written 1", 1, 1, 2, 3),
                       "pub": ("ok: rows read 1 = written 1", 1, 1, 2, 3)}


def test_connectors_list_and_test(tmp_path: Path) -> None:
    config = _config(tmp_path)
    write_csv(tmp_path / "inbox" / "top.csv", HEADER, ["1,C001,0.25"])

    r = silta(tmp_path, "connectors", "list", "--json", "--config", config)
    assert r.code == 0, r
    assert r.json() == [{"name": "inbox", "type": "folder", "where": str(tmp_path / "inbox"),
                         "auth": "-", "syncs": "in, pub", "description": ""}]

    r = silta(tmp_path, "connectors", "test", "inbox", "--config", config)
    assert r.code == 0, r
    assert r.out.startswith("inbox: ok in "), r
    assert r.out.endswith(" ms: 1 file(s) at the top level\n"), r

    r = silta(tmp_path, "connectors", "test", "inbox", "--json", "--config", config)
    assert r.code == 0, r
    result = r.json()
    assert {k: v for k, v in result.items() if k != "latency_ms"} == {
        "connector": "inbox", "type": "folder", "ok": True,
        "detail": "1 file(s) at the top level", "error": None}

    r = silta(tmp_path, "connectors", "test", "nope", "--config", config)
    assert r.code == 2, r
    assert (r.out, r.err) == ("", "silta: connector 'nope' not found; defined: inbox\n"), r


# -- kill -9 ------------------------------------------------------------------------------------
SEED = 20261127
RANDOM_ROUNDS = 8  # killed after a random delay within a typical run's time
AT_TEMP_ROUNDS = 3  # killed once a temporary file shows up (inside the write)
AT_FINAL_ROUNDS = 3  # killed once the new file has its final name (before the ledger knows)
COMMITS_PER_ROUND = 2
ROWS_PER_COMMIT = 30_000
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("code", pa.string()),
                    pa.field("share", pa.float64()), pa.field("_silta_batch", pa.int64())])


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _has_new(before: set[str], temporary: bool, names: list[str]) -> bool:
    """A name that was not there when the run started, temporary or final."""
    return any(_is_temporary(n) == temporary and n not in before for n in names)


def test_kill_9_at_any_moment_publishes_every_row_exactly_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, [PUB])
    uri = str(tmp_path / "lake" / "out" / "codes")
    outgoing = tmp_path / "inbox" / "outgoing"
    rng = random.Random(SEED)
    next_id = 0

    def add_commits() -> None:
        nonlocal next_id
        for _ in range(COMMITS_PER_ROUND):
            ids = list(range(next_id, next_id + ROWS_PER_COMMIT))
            write_deltalake(uri, pa.table({
                "id": ids, "code": [f"code-{i:08d}-{'x' * (i % 17)}" for i in ids],
                "share": [i / 8 for i in ids], "_silta_batch": [next_id] * len(ids)},
                schema=SCHEMA), mode="append")
            next_id += ROWS_PER_COMMIT

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([*SILTA, "sync", "run", "pub", "--config", str(config)],
                                cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    add_commits()
    began = time.monotonic()
    clean = silta(tmp_path, "sync", "run", "pub", "--config", config)
    typical = time.monotonic() - began  # used for the kill delays only, never asserted
    assert clean.code == 0, clean

    def listing() -> list[str]:
        return sorted(os.listdir(outgoing)) if outgoing.exists() else []

    def kill_when(seen: Callable[[list[str]], bool], proc: subprocess.Popen[bytes]) -> None:
        while proc.poll() is None and not seen(listing()):
            time.sleep(0.0005)

    killed: list[str] = []
    for round_ in range(RANDOM_ROUNDS + AT_TEMP_ROUNDS + AT_FINAL_ROUNDS):
        add_commits()
        before = set(listing())
        proc = start()
        if round_ < RANDOM_ROUNDS:
            time.sleep(rng.uniform(0, typical))
        elif round_ < RANDOM_ROUNDS + AT_TEMP_ROUNDS:
            kill_when(partial(_has_new, before, True), proc)
            time.sleep(rng.uniform(0, 0.02))
        else:
            kill_when(partial(_has_new, before, False), proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            units = ledger(tmp_path / "state", "SELECT status FROM batches WHERE sync = 'pub' "
                           "AND status IN ('pending', 'staged')")
            killed.append(f"round {round_}: {listing()} open units: "
                          f"{[u['status'] for u in units]}")
        proc.wait(timeout=60)

    final = silta(tmp_path, "sync", "run", "pub", "--json", "--config", config)
    assert final.code == 0, final
    idle = silta(tmp_path, "sync", "run", "pub", "--json", "--config", config)
    assert idle.code == 0, idle
    assert (idle.json()[0]["files"], idle.json()[0]["rows"]) == (0, 0), idle

    names = sorted(os.listdir(outgoing))
    assert [n for n in names if _is_temporary(n) or n.startswith(".")] == [], (names, killed)
    seen: Counter[int] = Counter()
    for name in names:
        data = pacsv.read_csv(outgoing / name)
        assert data.column_names == ["id", "code", "share"], name
        seen.update(data.column("id").to_pylist())
    repeated = {i: n for i, n in seen.items() if n != 1}
    missing = next_id - len(seen)
    assert (repeated, missing, len(seen)) == ({}, 0, next_id), killed
    assert sorted(seen) == list(range(next_id))
    assert int(DeltaTable(uri).to_pyarrow_dataset().count_rows()) == next_id

    units = ledger(tmp_path / "state", "SELECT status, table_version, detail FROM batches "
                   "WHERE sync = 'pub' ORDER BY seq")
    assert [u for u in units if u["status"] in ("pending", "staged")] == []
    committed = [u for u in units if u["status"] == "committed"]
    assert committed[-1]["table_version"] == DeltaTable(uri).version()
    published = sorted(f"codes_{u['table_version']}.csv" for u in committed)
    assert sorted(names) == sorted(published), (names, published, killed)
