"""`silta agent run --once` and `silta sync run`: exit codes, quarantine, what lands."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import duck_rows, write_config
from tests.e2e._cli import delta_table, ledger, silta, write_csv

pytestmark = pytest.mark.timeout(180)

HEADER = "id,v"


def _once(root: Path, config: Path) -> tuple[int, dict[str, Any]]:
    r = silta(root, "agent", "run", "--once", "--json", "--config", config)
    assert "Traceback" not in r.err, r
    (outcome,) = r.json()
    return r.code, outcome


def test_once_exits_1_when_a_file_is_quarantined_and_0_when_all_landed(
        tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "q", "target": "lake:raw/q"}])
    inbox = tmp_path / "inbox"
    table = tmp_path / "lake" / "raw" / "q"

    write_csv(inbox / "good1.csv", HEADER, ["a,1", "b,2"])
    code, outcome = _once(tmp_path, config)
    assert code == 0, outcome
    assert (outcome["status"], outcome["files"], outcome["rows"]) == ("ok", 1, 2)

    bad = write_csv(inbox / "bad.csv", HEADER, ["c,3", "d,4,5,6", "e,7"])
    write_csv(inbox / "good2.csv", HEADER, ["f,8"])
    code, outcome = _once(tmp_path, config)
    assert code == 1, outcome
    assert outcome["status"] == "partial"
    assert (outcome["files"], outcome["rows"], outcome["error"]) == (1, 1, None)
    assert outcome["quarantined"] == [
        {"path": "bad.csv", "reason": "CSV parse error: Expected 2 columns, got 4: d,4,5,6"}]

    quarantine = inbox / ".silta-quarantine"
    assert not (inbox / "bad.csv").exists()
    assert (quarantine / "bad.csv").read_bytes() == bad
    note = (quarantine / "bad.csv.reason.txt").read_text(encoding="utf-8")
    assert "file: bad.csv\nsync: q\n" in note
    assert f"run: {outcome['run_id']}\n" in note
    assert "reason: CSV parse error: Expected 2 columns, got 4: d,4,5,6\n" in note
    assert sorted(p.name for p in quarantine.iterdir()) == ["bad.csv", "bad.csv.reason.txt"]

    # the quarantined file is not tried again: the next run is clean
    code, outcome = _once(tmp_path, config)
    assert code == 0, outcome
    assert (outcome["status"], outcome["batches"], outcome["files"]) == ("ok", 0, 0)

    status = silta(tmp_path, "status", "--json", "--config", config).json()["syncs"][0]
    assert (status["quarantined"], status["total_files"], status["total_rows"]) == (1, 2, 3)

    # another bad file under the same name does not overwrite the first one's evidence
    bad2 = write_csv(inbox / "bad.csv", HEADER, ["g,9", "h"])
    code, outcome = _once(tmp_path, config)
    assert code == 1, outcome
    assert [q["path"] for q in outcome["quarantined"]] == ["bad.csv"]
    suffix = hashlib.sha256(bad2).hexdigest()[:12]
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "bad.csv", f"bad.csv.{suffix}", f"bad.csv.{suffix}.reason.txt", "bad.csv.reason.txt"]
    assert (quarantine / "bad.csv").read_bytes() == bad
    assert (quarantine / f"bad.csv.{suffix}").read_bytes() == bad2

    expected = [("a", 1, "inbox:good1.csv"), ("b", 2, "inbox:good1.csv"),
                ("f", 8, "inbox:good2.csv")]
    data = delta_table(table)
    assert sorted(zip(data["id"].to_pylist(), data["v"].to_pylist(),
                      data["_silta_source"].to_pylist(), strict=True)) == expected
    assert duck_rows(duck, table, "SELECT id, v, _silta_source FROM t ORDER BY id") == expected


def test_a_file_that_breaks_after_the_first_block_lands_no_rows(tmp_path: Path, duck: Any
                                                                 ) -> None:
    # The schema probe reads the first MiB only; the bad row comes after it, mid-stream,
    # in the same batch as a good file. The good file lands; not one row of the bad one.
    config = write_config(tmp_path, [{"name": "q", "target": "lake:raw/q"}])
    inbox = tmp_path / "inbox"
    table = tmp_path / "lake" / "raw" / "q"
    write_csv(inbox / "late.csv", HEADER, [f"x{i},{i}" for i in range(150_000)] + ["oops,1,2"])
    write_csv(inbox / "small.csv", HEADER, ["a,1", "b,2"])
    assert (inbox / "late.csv").stat().st_size > 1 << 20  # past the probe

    code, outcome = _once(tmp_path, config)

    assert code == 1, outcome
    assert outcome["status"] == "partial"
    assert (outcome["batches"], outcome["files"], outcome["rows"]) == (1, 1, 2)
    assert outcome["quarantined"] == [
        {"path": "late.csv", "reason": "CSV parse error: Expected 2 columns, got 3: oops,1,2"}]
    assert (inbox / ".silta-quarantine" / "late.csv").exists()
    assert sorted(delta_table(table)["id"].to_pylist()) == ["a", "b"]
    assert duck_rows(duck, table, "SELECT count(*), min(_silta_source), max(_silta_source) "
                     "FROM t") == [(2, "inbox:small.csv", "inbox:small.csv")]


def test_sync_run_without_an_agent_runs_the_sync_itself(tmp_path: Path, duck: Any) -> None:
    config = write_config(tmp_path, [{"name": "s", "target": "lake:raw/s"},
                                     {"name": "other", "target": "lake:raw/other"}])
    table = tmp_path / "lake" / "raw" / "s"
    write_csv(tmp_path / "inbox" / "a.csv", HEADER, ["a,1", "b,2", "c,3"])

    r = silta(tmp_path, "sync", "run", "s", "--json", "--config", config)

    assert r.code == 0, r
    (outcome,) = r.json()
    assert (outcome["sync"], outcome["status"], outcome["files"], outcome["rows"],
            outcome["table_version"]) == ("s", "ok", 1, 3, 0)
    assert duck_rows(duck, table, "SELECT id, v FROM t ORDER BY id") == [
        ("a", 1), ("b", 2), ("c", 3)]
    runs = ledger(tmp_path / "state", "SELECT name, trigger, status FROM runs")
    assert [(x["name"], x["trigger"].split(":")[0], x["status"]) for x in runs] == [
        ("s", "cli", "ok")]
    assert not (tmp_path / "lake" / "raw" / "other").exists()
    # the lock was let go: the agent can run next
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    assert r.code == 0, r
