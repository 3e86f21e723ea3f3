"""The README's quick start on config/demo.toml: `demo init`, `agent run --once`, `tables
list`; then `demo drift` and `agent run --once` again: the alerts and the retrained champion."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, duck_rows
from tests.e2e._cli import delta_table, silta

pytestmark = pytest.mark.timeout(180)


def _by_sync(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["sync"]: o for o in outcomes if o["kind"] == "sync"}


def _by_job(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}:{o['name']}": o for o in outcomes if o["kind"] != "sync"}


def _tables(root: Path, config: Path) -> dict[str, dict[str, Any]]:
    r = silta(root, "tables", "list", "--json", "--config", config)
    assert r.code == 0, r
    return {t["table"]: t for t in r.json()}


def test_demo_quick_start(tmp_path: Path, duck: Any) -> None:
    (tmp_path / "config").mkdir()
    config = tmp_path / "config" / "demo.toml"
    shutil.copy(ROOT / "config" / "demo.toml", config)
    incoming = tmp_path / "var" / "onprem" / "incoming"
    lake = tmp_path / "var" / "lake"

    r = silta(tmp_path, "demo", "init", "--config", config)
    assert r.code == 0, r
    expected_files = [incoming / "responses" / f"responses_202609{d:02d}.csv"
                      for d in range(1, 7)] + [incoming / "coded" / "coded_sample_2026Q3.csv"]
    register_db = tmp_path / "var" / "onprem" / "register.db"
    assert r.out.splitlines() == [str(p) for p in [*expected_files, register_db]]
    coded_lines = (incoming / "coded" / "coded_sample_2026Q3.csv").read_text(
        encoding="utf-8").splitlines()
    coded_rows = len(coded_lines) - 1
    assert coded_lines[0] == "response_id;isco08;coder"
    assert coded_rows > 100

    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    first = _by_sync(r.json())
    assert {k: (o["status"], o["batches"], o["files"], o["rows"], o["table_version"])
            for k, o in first.items()} == {
        "survey_responses": ("ok", 1, 6, 2400, 0),
        "coded_sample": ("ok", 1, 1, coded_rows, 0),
        "enterprise_register": ("ok", 1, 0, 300, 0),
        "publish_codes_db": ("ok", 1, 0, coded_rows, 0),
        "publish_codes_file": ("ok", 1, 1, coded_rows, 0),
        "publish_predictions": ("ok", 1, 1, 2400, 0),
    }
    assert {k: o["verified"] for k, o in first.items()} == {
        "survey_responses": "ok: rows read 2400 = written 2400",
        "coded_sample": f"ok: rows read {coded_rows} = written {coded_rows}",
        "enterprise_register": "ok: rows read 300 = written 300",
        "publish_codes_db": f"ok: rows read {coded_rows} = written {coded_rows}",
        "publish_codes_file": f"ok: rows read {coded_rows} = written {coded_rows}",
        "publish_predictions": "ok: rows read 2400 = written 2400",
    }
    # the coder was trained on the coded sample, made champion, and coded every answer
    jobs = _by_job(r.json())
    assert {k: (o["status"], o["committed"], o["model"], o["model_version"], o["rows"])
            for k, o in jobs.items()} == {
        "train:train_occupation_coder": ("ok", True, "occupation_coder", 1, coded_rows),
        "predict:code_answers": ("ok", True, "occupation_coder", 1, 2400),
        # the answers and their predictions twice over: 2 x 2400 rows looked at
        "monitor:watch_occupation_coder": ("ok", True, "occupation_coder", 1, 4800),
    }
    # the answers are those the champion was trained on: no drift, nothing fired
    monitor = jobs["monitor:watch_occupation_coder"]
    assert monitor["metrics"]["breaches"] == 0, monitor
    assert "alerts" not in monitor["message"]
    assert "promoted (first version" in jobs["train:train_occupation_coder"]["message"]
    predictions = lake / "predictions" / "occupation_codes"
    assert duck_rows(duck, predictions, "SELECT count(*), count(DISTINCT response_id), "
                     "min(model_version), max(model_version) FROM t") == [(2400, 2400, 1, 1)]
    flagged = duck_rows(duck, predictions, "SELECT count(*) FROM t WHERE needs_review")[0][0]
    assert flagged == duck_rows(duck, predictions, "SELECT count(*) FROM t WHERE "
                                "confidence < 0.6")[0][0]
    assert 0 < flagged < 2400 * 0.5
    # the automated codes agree with the coders on most coded answers
    agree = duck.execute(
        f"SELECT avg(CASE WHEN p.predicted = c.isco08 THEN 1 ELSE 0 END) FROM "
        f"delta_scan('{predictions}') p JOIN delta_scan('{lake / 'raw' / 'coded_sample'}') c "
        "USING (response_id)").fetchall()[0][0]
    assert agree > 0.85
    # ... and are back on-prem, one CSV file per predictions version
    predicted_csv = (incoming / "outgoing" / "predicted_codes_v0.csv").read_text(
        encoding="utf-8").splitlines()
    assert predicted_csv[0] == ('"response_id";"predicted";"confidence";"needs_review";'
                                '"model";"model_version";"run_id"')
    assert len(predicted_csv) == 2401
    r = silta(tmp_path, "models", "list", "--json", "--config", config)
    assert r.code == 0, r
    assert [(m["model"], m["versions"], m["aliases"]) for m in r.json()] == [
        ("occupation_coder", 1, {"champion": 1})]
    r = silta(tmp_path, "models", "card", "occupation_coder@champion", "--config", config)
    assert r.code == 0, r
    assert r.out.startswith("# Model card: occupation_coder v1\n")
    assert "## Responsible ML checklist" in r.out
    # both ways: the coded sample is back on-prem, in the database and as a CSV file
    with contextlib.closing(sqlite3.connect(register_db)) as db:
        published = db.execute("SELECT response_id, isco08, coder FROM occupation_codes "
                               "ORDER BY response_id").fetchall()
        applied = db.execute("SELECT name, version, rows FROM silta_applied").fetchall()
    expected_codes = sorted(tuple(line.split(";")) for line in coded_lines[1:])
    assert published == expected_codes
    assert applied == [("publish_codes_db", 0, coded_rows)]
    out_lines = (incoming / "outgoing" / "coded_sample_v0.csv").read_text(
        encoding="utf-8").splitlines()
    assert out_lines[0] == '"response_id";"isco08";"coder"'
    assert sorted(tuple(v.strip('"') for v in line.split(";")) for line in out_lines[1:]) == (
        expected_codes)
    assert sorted(p.name for p in (incoming / "outgoing").iterdir()) == [
        "coded_sample_v0.csv", "predicted_codes_v0.csv"]

    tables = _tables(tmp_path, config)
    assert sorted(tables) == ["predictions/occupation_codes", "raw/coded_sample",
                              "raw/enterprises", "raw/survey_responses"]
    assert {k: (t["version"], t["rows"], t["columns"], t["last_operation"])
            for k, t in tables.items()} == {
        "raw/survey_responses": (0, 2400, 12, "WRITE"),
        "raw/coded_sample": (0, coded_rows, 6, "WRITE"),
        "raw/enterprises": (0, 300, 9, "WRITE"),
        "predictions/occupation_codes": (0, 2400, 10, "WRITE"),
    }

    survey, coded = lake / "raw" / "survey_responses", lake / "raw" / "coded_sample"
    assert duck_rows(duck, survey, "SELECT count(*), count(DISTINCT response_id), "
                     "count(DISTINCT _silta_source) FROM t") == [(2400, 2400, 6)]
    # `;` delimiter and decimal commas were read as numbers
    hours = set(delta_table(survey)["weekly_hours"].to_pylist())
    assert hours <= {37.5, 38.25, 40.0, 20.0, 30.0, 24.5, 36.75, None}
    assert {37.5, 38.25, 36.75} <= hours
    assert duck_rows(duck, coded, "SELECT count(*), count(DISTINCT response_id) FROM t") == [
        (coded_rows, coded_rows)]
    codes = delta_table(coded)["isco08"].to_pylist()
    assert all(isinstance(c, str) and re.fullmatch(r"\d{4}", c) for c in codes)
    # every coded answer is one of the survey's answers
    assert duck_rows(duck, coded, "SELECT count(*) FROM t WHERE response_id NOT LIKE "
                     "'R26-%'") == [(0,)]

    # the files are there: init again refuses without --force
    r = silta(tmp_path, "demo", "init", "--config", config)
    assert r.code == 2, r
    assert f"silta: usage error: {expected_files[0]} exists; pass --force to write the demo " \
           "files again" in r.err

    # the same files written again add nothing
    r = silta(tmp_path, "demo", "init", "--force", "--config", config)
    assert r.code == 0, r
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    again = _by_sync(r.json())
    assert {k: (o["status"], o["batches"], o["files"], o["rows"], o["table_version"])
            for k, o in again.items()} == {
        "survey_responses": ("ok", 0, 0, 0, 0),
        "coded_sample": ("ok", 0, 0, 0, 0),
        # the register's newest rows are read again (overlap) and recognised: no commit
        "enterprise_register": ("ok", 0, 0, 0, 0),
        "publish_codes_db": ("ok", 0, 0, 0, 0),
        "publish_codes_file": ("ok", 0, 0, 0, 0),
        "publish_predictions": ("ok", 0, 0, 0, 0),
    }
    # nothing new to predict; the coder is not refitted on new data alone (retrain_on),
    # and the monitor has no new rows to judge
    assert {k: (o["status"], o["committed"], o["model_version"])
            for k, o in _by_job(r.json()).items()} == {
        "predict:code_answers": ("ok", False, None),
        "monitor:watch_occupation_coder": ("ok", True, 1),
    }
    assert _tables(tmp_path, config) == tables

    # redelivered with a new mtime (settled: a minute old), same bytes: skipped by content
    old = time.time() - 60
    for p in expected_files:
        os.utime(p, (old, old))
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    redelivered = _by_sync(r.json())
    assert {k: (o["status"], o["batches"], o["files"], o["skipped"], o["table_version"])
            for k, o in redelivered.items()} == {
        "survey_responses": ("ok", 0, 0, 6, 0),
        "coded_sample": ("ok", 0, 0, 1, 0),
        "enterprise_register": ("ok", 0, 0, 0, 0),
        "publish_codes_db": ("ok", 0, 0, 0, 0),
        "publish_codes_file": ("ok", 0, 0, 0, 0),
        "publish_predictions": ("ok", 0, 0, 0, 0),
    }
    assert _tables(tmp_path, config) == tables
    assert duck_rows(duck, survey, "SELECT count(*) FROM t") == [(2400,)]

    # `make demo`'s second half: a later month that has drifted arrives
    r = silta(tmp_path, "demo", "drift", "--config", config)
    assert r.code == 0, r
    assert len(r.out.splitlines()) == 5  # four daily answer files and their coded sample

    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)
    assert r.code == 0, r
    syncs, jobs = _by_sync(r.json()), _by_job(r.json())
    assert (syncs["survey_responses"]["rows"], syncs["survey_responses"]["files"]) == (1600, 4)
    # the new month is coded by v1, the monitor sees it drift, and its alerts retrain
    assert jobs["predict:code_answers"]["model_version"] == 1
    monitor = jobs["monitor:watch_occupation_coder"]
    assert monitor["rows"] == 2 * 1600
    assert "alerts: " in monitor["message"]
    train = jobs["train:train_occupation_coder"]
    assert (train["status"], train["model_version"]) == ("ok", 2), train
    assert "occupation_coder@2: promoted (v2 macro_f1" in train["message"]

    r = silta(tmp_path, "alerts", "list", "--json", "--config", config)
    assert r.code == 0, r
    fired = {(a["check"], a["target"]): a for a in r.json()}
    for key in [("drift", "job_title:oov_rate"), ("drift", "job_title:tokens"),
                ("drift", "language"), ("drift", "sector"),
                ("confidence", "low_confidence_share"), ("performance", "accuracy")]:
        assert key in fired, sorted(fired)
        assert fired[key]["state"] == "firing"
    assert fired[("performance", "accuracy")]["severity"] == "critical"
    oov = fired[("drift", "job_title:oov_rate")]
    assert oov["value"] > oov["threshold"] == 0.1
    # the drift figures are in _silta/metrics, with this run's id (read by DuckDB)
    metrics = tmp_path / "var" / "lake" / "_silta" / "metrics"
    assert duck_rows(duck, metrics, "SELECT value, threshold, status FROM t WHERE run_id = "
                     f"'{monitor['run_id']}' AND \"check\" = 'drift' AND target = "
                     "'job_title:oov_rate'") == [(oov["value"], 0.1, "breach")]
    r = silta(tmp_path, "models", "list", "--json", "--config", config)
    assert [(m["model"], m["versions"], m["aliases"]) for m in r.json()] == [
        ("occupation_coder", 2, {"champion": 2})]
