"""`silta sync list`, `status`, `tables ...` with --json: exact keys and values."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import Result, delta_table, silta, write_csv

HEADER = "id,n,label"
FIRST = ["a1,1,x", "a2,2,y", "a3,3,z"]
SECOND = ["b1,10,p", "b2,20,q", "b3,30,r", "b4,40,s"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


@dataclass
class Lake:
    root: Path
    config: Path
    table: Path
    runs: list[Result]  # the two `agent run --once --json` results
    first: bytes
    second: bytes

    def cli(self, *args: str) -> Result:
        return silta(self.root, *args, "--config", self.config)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Two syncs of one table: a.csv (3 rows) -> version 0, then b.csv (4 rows) -> 1."""
    root = tmp_path_factory.mktemp("tables")
    config = write_config(root, [
        {"name": "t", "target": "lake:raw/t", "description": "two files"},
        {"name": "off", "target": "lake:raw/off", "source": "inbox:*.jsonl", "format": "jsonl",
         "schedule": "*/5 * * * *", "watch": True, "enabled": False},
    ])
    first = write_csv(root / "inbox" / "a.csv", HEADER, FIRST)
    runs = [silta(root, "agent", "run", "--once", "--json", "--config", config)]
    assert runs[0].code == 0, runs[0]
    second = write_csv(root / "inbox" / "b.csv", HEADER, SECOND)
    runs.append(silta(root, "agent", "run", "--once", "--json", "--config", config))
    assert runs[1].code == 0, runs[1]
    return Lake(root, config, root / "lake" / "raw" / "t", runs, first, second)


def test_agent_run_once_json(lake: Lake) -> None:
    first, second = (r.json() for r in lake.runs)
    assert [o["sync"] for o in first] == ["t"]  # the disabled sync does not run
    run_id = first[0].pop("run_id")
    assert re.fullmatch(r"[0-9a-f]{16}", run_id)
    assert first[0] == {"kind": "sync", "name": "t", "sync": "t", "status": "ok",
                        "batches": 1, "files": 1, "rows": 3,
                        "bytes": len(lake.first), "skipped": 0, "waiting": 0,
                        "quarantined": [], "refused": [], "table_version": 0, "error": None,
                        "retriable": None, "verified": "ok: rows read 3 = written 3"}
    second[0].pop("run_id")
    assert second[0] == {"kind": "sync", "name": "t", "sync": "t", "status": "ok",
                         "batches": 1, "files": 1, "rows": 4,
                         "bytes": len(lake.second), "skipped": 0, "waiting": 0,
                         "quarantined": [], "refused": [], "table_version": 1, "error": None,
                         "retriable": None, "verified": "ok: rows read 4 = written 4"}


def test_sync_list_json(lake: Lake) -> None:
    r = lake.cli("sync", "list", "--json")

    assert r.code == 0, r
    assert r.json() == [
        {"name": "t", "source": "inbox:*.csv", "target": "lake:raw/t", "format": "csv",
         "mode": "append", "schedule": None, "watch": False, "enabled": True},
        {"name": "off", "source": "inbox:*.jsonl", "target": "lake:raw/off", "format": "jsonl",
         "mode": "append", "schedule": "*/5 * * * *", "watch": True, "enabled": False},
    ]


def test_status_json_before_any_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "s"}])

    r = silta(tmp_path, "status", "--json", "--config", config)

    assert r.code == 0, r
    assert r.json() == {
        "agent": {"name": "test-agent", "alive": False, "state": "never started", "pid": None,
                  "since": None, "last_beat": None},
        "syncs": [{"sync": "s", "enabled": True, "schedule": None, "watch": False,
                   "last_run": None, "outcome": None, "files": None, "rows": None,
                   "error": None, "total_files": 0, "total_rows": 0, "quarantined": 0,
                   "direction": "ingest", "verified": None,
                   "table": "raw/t", "table_version": None, "next_run": None}],
        "jobs": [],
        "alerts": {"open": 0, "by_severity": {}, "latest": []},
    }


def test_status_json_after_runs(lake: Lake) -> None:
    r = lake.cli("status", "--json")

    assert r.code == 0, r
    status = r.json()
    agent = status["agent"]
    assert set(agent) == {"name", "alive", "state", "pid", "since", "last_beat"}
    assert (agent["name"], agent["alive"], agent["state"]) == ("test-agent", False, "stopped")
    assert agent["pid"] == lake.runs[1].pid  # the last `agent run --once` process
    assert ISO.match(agent["since"]) and ISO.match(agent["last_beat"]), agent
    assert agent["last_beat"] >= agent["since"]

    t, off = status["syncs"]
    assert ISO.match(t.pop("last_run")), t
    assert t == {"sync": "t", "enabled": True, "schedule": None, "watch": False,
                 "outcome": "ok", "files": 1, "rows": 4, "error": None, "total_files": 2,
                 "total_rows": 7, "quarantined": 0, "direction": "ingest",
                 "verified": "ok: rows read 4 = written 4", "table": "raw/t",
                 "table_version": 1, "next_run": None}
    assert off == {"sync": "off", "enabled": False, "schedule": "*/5 * * * *", "watch": True,
                   "last_run": None, "outcome": None, "files": None, "rows": None,
                   "error": None, "total_files": 0, "total_rows": 0, "quarantined": 0,
                   "direction": "ingest", "verified": None,
                   "table": "raw/off", "table_version": None,
                   "next_run": None}  # disabled: it does not run


def test_tables_list_json(lake: Lake) -> None:
    r = lake.cli("tables", "list", "--json")

    assert r.code == 0, r
    (row,) = r.json()
    last_commit = row.pop("last_commit")
    assert row == {"table": "raw/t", "version": 1, "rows": 7, "columns": 6,
                   "last_operation": "WRITE", "error": None}
    when = dt.datetime.fromisoformat(last_commit)
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 600


def test_tables_list_shows_an_unreadable_table_beside_the_good_ones(lake: Lake) -> None:
    broken = lake.root / "lake" / "raw" / "broken" / "_delta_log"
    broken.mkdir(parents=True)
    (broken / "00000000000000000000.json").write_text("{not json\n")
    try:  # the lake is shared by this module's tests: take the broken table away again
        r = lake.cli("tables", "list", "--json")
    finally:
        shutil.rmtree(broken.parent)
    assert r.code == 0, r
    rows = {t["table"]: t for t in r.json()}
    assert set(rows) == {"raw/t", "raw/broken"}
    assert rows["raw/t"]["rows"] == 7 and rows["raw/t"]["error"] is None
    assert rows["raw/broken"]["rows"] is None
    assert rows["raw/broken"]["error"].startswith("unreadable: ")


def test_tables_history_json(lake: Lake) -> None:
    r = lake.cli("tables", "history", "raw/t", "--json")

    assert r.code == 0, r
    history = r.json()
    run_ids = [run.json()[0]["run_id"] for run in lake.runs]
    for entry in history:
        assert ISO.match(entry.pop("timestamp")), entry
    assert history == [
        {"version": 1, "operation": "WRITE", "rows_added": 4, "rows_updated": None,
         "source": "inbox:*.csv", "sync": "t", "batch": 2, "run_id": run_ids[1],
         "files": [{"path": "b.csv", "size": len(lake.second),
                    "sha256": hashlib.sha256(lake.second).hexdigest()}]},
        {"version": 0, "operation": "WRITE", "rows_added": 3, "rows_updated": None,
         "source": "inbox:*.csv", "sync": "t", "batch": 1, "run_id": run_ids[0],
         "files": [{"path": "a.csv", "size": len(lake.first),
                    "sha256": hashlib.sha256(lake.first).hexdigest()}]},
    ]
    r = lake.cli("tables", "history", "raw/t", "--limit", "1", "--json")
    assert r.code == 0, r
    assert [e["version"] for e in r.json()] == [1]


def _expected_rows(lines: list[str], source: str, batch: int) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        id_, n, label = line.split(",")
        out.append({"id": id_, "n": int(n), "label": label, "_silta_source": source,
                    "_silta_batch": batch})
    return out


def _without_ingested(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        ingested = row.pop("_silta_ingested_at")
        assert ISO.match(ingested), row
    return sorted(rows, key=lambda r: r["id"])


def test_tables_show_time_travel(lake: Lake, duck: Any) -> None:
    r = lake.cli("tables", "show", "raw/t", "--version", "0", "--limit", "5", "--json")

    assert r.code == 0, r
    shown = r.json()
    assert set(shown) == {"table", "version", "rows"}
    assert (shown["table"], shown["version"]) == ("raw/t", 0)
    assert _without_ingested(shown["rows"]) == _expected_rows(FIRST, "inbox:a.csv", 1)

    # latest version, limited to 5 of 7 rows
    r = lake.cli("tables", "show", "raw/t", "--limit", "5", "--json")
    assert r.code == 0, r
    latest = r.json()
    assert latest["version"] == 1
    assert len(latest["rows"]) == 5
    every = {row["id"]: row for row in
             _expected_rows(FIRST, "inbox:a.csv", 1) + _expected_rows(SECOND, "inbox:b.csv", 2)}
    for row in _without_ingested(latest["rows"]):
        assert every[row["id"]] == row

    # independent readers agree: deltalake at version 0 and now, DuckDB now
    v0 = DeltaTable(str(lake.table), version=0).to_pyarrow_dataset().to_table()
    assert sorted(v0["id"].to_pylist()) == ["a1", "a2", "a3"]
    now = delta_table(lake.table)
    assert sorted(now["id"].to_pylist()) == sorted(every)
    assert duck_rows(duck, lake.table, "SELECT id, n, label, _silta_source, _silta_batch "
                     "FROM t ORDER BY id") == [tuple(every[k].values()) for k in sorted(every)]


def test_tables_tag_and_show_by_tag(lake: Lake) -> None:
    r = lake.cli("tables", "tag", "raw/t", "0", "first", "--note", "before b.csv")
    assert r.code == 0, r
    assert r.out == "tagged raw/t@0 as 'first'\n"

    r = lake.cli("tables", "tags", "raw/t", "--json")
    assert r.code == 0, r
    (tag,) = r.json()
    created = tag.pop("created_at")
    assert ISO.match(created), created
    assert tag == {"table": "raw/t", "tag": "first", "version": 0,
                   "created_by": getpass.getuser(), "note": "before b.csv"}

    r = lake.cli("tables", "show", "raw/t", "--tag", "first", "--json")
    assert r.code == 0, r
    shown = r.json()
    assert (shown["table"], shown["version"]) == ("raw/t", 0)
    assert _without_ingested(shown["rows"]) == _expected_rows(FIRST, "inbox:a.csv", 1)

    # the same tag name twice, a version that does not exist, both --tag and --version
    r = lake.cli("tables", "tag", "raw/t", "1", "first")
    assert r.code == 2, r
    assert "silta: usage error: table 'raw/t' already has a tag 'first'" in r.err
    r = lake.cli("tables", "tag", "raw/t", "9", "later")
    assert r.code == 2, r
    assert "silta: version 'raw/t@9' not found; the table's versions are 0..1" \
        in r.err
    r = lake.cli("tables", "show", "raw/t", "--tag", "first", "--version", "0")
    assert r.code == 2, r
    assert "silta: usage error: give --version or --tag, not both" in r.err
    r = lake.cli("tables", "show", "raw/t", "--tag", "nosuch")
    assert r.code == 2, r
    assert "silta: tag 'nosuch' not found; see `silta tables tags raw/t`" in r.err

    # tags live in Silta's own table: hidden from `tables list`, shown with --all
    r = lake.cli("tables", "list", "--json")
    assert [t["table"] for t in r.json()] == ["raw/t"]
    r = lake.cli("tables", "list", "--all", "--json")
    # (and the two runs that moved data are in Silta's runs table)
    assert [(t["table"], t["rows"]) for t in r.json()] == [
        ("_silta/runs", 2), ("_silta/tags", 1), ("raw/t", 7)]


@pytest.mark.parametrize(("args", "message"), [
    (["show", "nosuch"], "silta: table 'nosuch' not found; list tables with "
                         "`silta tables list`"),
    (["show", "raw/t", "--version", "7"], "silta: version 'raw/t@7' not found; "
                                          "see `silta tables history` for the versions"),
    (["history", "nosuch"], "silta: table 'nosuch' not found"),
    (["tags", "nosuch"], "silta: table 'nosuch' not found"),
    (["show", "../escape"], "silta: unsafe name refused: table name '../escape' has an empty "
                            "or '..' part"),
], ids=["show-missing-table", "show-missing-version", "history-missing-table",
        "tags-missing-table", "show-unsafe-name"])
def test_tables_missing_things_are_usage_errors(lake: Lake, args: list[str], message: str
                                                ) -> None:
    r = lake.cli("tables", *args)

    assert r.code == 2, r
    assert message in r.err, r
    assert "Traceback" not in r.err
    assert r.out == ""
