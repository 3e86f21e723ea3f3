"""Worlds of fixed content for the TUI: the snapshot tests (every figure and time pinned)
and bench/tui_start.py (10,000 runs, 1,000 model versions, 500 tables).

Rows go straight into a real state store and real Delta tables, in the schemas the agent
writes, so the screens read them through the same facade as in production.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from agent.ml.registry import ALIASES_SCHEMA, ALIASES_TABLE, REGISTRY_SCHEMA, REGISTRY_TABLE
from agent.state import FILE_NAME, StateStore
from tests.conftest import write_config

#: "now" of every fixed world (snapshots pin the TUI's clock to it)
AT = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SYNCS = [
    {"name": "survey_responses", "target": "lake:raw/survey_responses", "schedule": "*/15 * * * *"},
    {"name": "coded_sample", "target": "lake:raw/coded_sample", "watch": True},
]
KINDS = [("sync", "survey_responses"), ("sync", "coded_sample"), ("publish", "publish_codes")]


def _iso(at: dt.datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def build_world(root: Path, *, runs: int = 12, versions: int = 3, tables: int = 4) -> Path:
    """A config in ``root`` and its state store and lake, every value fixed."""
    config = write_config(root, SYNCS)
    with config.open("a", encoding="utf-8") as f:
        f.write('[[syncs]]\nname = "publish_codes"\nsource = "lake:raw/coded_sample"\n'
                'target = "inbox:out/codes_{version}.csv"\n')
    state = StateStore(root / "state")
    state.close()
    con = sqlite3.connect(root / "state" / FILE_NAME)
    with con:
        con.execute("INSERT INTO heartbeats VALUES (?, ?, ?, ?, ?, ?)",
                    ("test-agent", 4242, "host", _iso(AT - dt.timedelta(days=2)),
                     _iso(AT - dt.timedelta(minutes=7)), "stopped"))
        con.executemany(
            "INSERT INTO runs (id, kind, name, trigger, status, agent, started_at, "
            "finished_at, files, rows, bytes, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [_run(i) for i in range(runs)])
        con.executemany(
            "INSERT INTO alerts (fingerprint, monitor, check_name, target, model, severity, "
            "state, summary, value, threshold, count, first_seen, last_seen, acked_by, "
            "acked_at, ack_comment) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [_alert(i) for i in range(5)])
        con.execute("INSERT INTO commands (kind, args, os_user, created_at, status, result) "
                    "VALUES ('alert.ack', ?, 'operator', ?, 'done', 'alert 2 acknowledged')",
                    (json.dumps({"alert": 2, "comment": "on it"}),
                     _iso(AT - dt.timedelta(minutes=30))))
    con.close()
    logs = root / "state" / "logs"
    logs.mkdir()
    (logs / "agent.log").write_text("".join(
        f"2026-12-01T11:{m:02d}:00Z {level} silta.sync sync={name} committed batch {m} "
        f"(2 files, {100 + m} rows)\n" for m, level, name in
        [(50, "INFO", "survey_responses"), (52, "WARNING", "coded_sample"),
         (55, "ERROR", "publish_codes"), (58, "INFO", "survey_responses")]), encoding="utf-8")
    lake = root / "lake"
    for i in range(tables):
        name = "raw/survey_responses" if i == 0 else f"raw/table_{i:03d}"
        write_deltalake(str(lake / name), pa.table({"id": list(range(i + 1)),
                                                    "answer": [f"a{n}" for n in range(i + 1)]}))
        _pin_commit_time(lake / name, AT - dt.timedelta(hours=1, minutes=i))
    if versions:
        _registry(lake, versions)
    return config


def _pin_commit_time(table: Path, at: dt.datetime) -> None:
    """Give version 0 of ``table`` a fixed commit time (the log is JSON lines)."""
    log = table / "_delta_log" / f"{0:020d}.json"
    lines = []
    for line in log.read_text(encoding="utf-8").splitlines():
        action = json.loads(line)
        if "commitInfo" in action:
            action["commitInfo"]["timestamp"] = int(at.timestamp() * 1000)
        lines.append(json.dumps(action))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _run(i: int) -> tuple[object, ...]:
    kind, name = KINDS[i % len(KINDS)] if i % 4 else ("predict", "code_answers")
    started = AT - dt.timedelta(minutes=5 * (i + 1))
    status = "failed" if i % 7 == 3 else "ok"
    error = "connection refused by [red]sftp[/] host" if status == "failed" else None
    return (f"run{i:05d}", kind, name, "schedule", status, "test-agent", _iso(started),
            _iso(started + dt.timedelta(seconds=30)), 2, 100 + i, 4096, error)


def _alert(i: int) -> tuple[object, ...]:
    severity = ("critical", "warning", "warning", "info", "critical")[i]
    state = ("firing", "acknowledged", "firing", "firing", "resolved")[i]
    first = AT - dt.timedelta(hours=i + 1)
    acked = ("operator", _iso(first + dt.timedelta(minutes=5)), "on it") \
        if state == "acknowledged" else (None, None, None)
    return (f"fp{i}", "watch_coder", ("drift", "performance", "oov", "volume", "schema")[i],
            f"column_{i}", "occupation_coder", severity, state, f"figure {i} is off",
            0.1 * (i + 1), 0.1, i + 1, _iso(first), _iso(AT - dt.timedelta(minutes=i)),
            *acked)


def _registry(lake: Path, versions: int) -> None:
    rows, aliases = [], []
    for n in range(versions):
        model = "occupation_coder" if n % 2 == 0 else "industry_coder"
        version = n // 2 + 1
        rows.append({
            "model": model, "version": version, "seq": n + 1,
            "artifact_uri": f"{lake}/_silta/models/{model}/{version}/model.skops",
            "artifact_sha256": f"{n:064x}", "artifact_size": 1000 + n,
            "artifact_format": "skops", "flavor": "sklearn",
            "signature": json.dumps({"inputs": [{"name": "answer", "type": "string"}]}),
            "params": json.dumps({"estimator": "tfidf_logreg"}),
            "metrics": json.dumps({"primary_metric": "macro_f1",
                                   "overall": {"macro_f1": 0.5 + (n % 40) / 100,
                                               "accuracy": 0.6 + (n % 30) / 100}}),
            "training_data": json.dumps({"table": "raw/coded_sample", "version": n}),
            "code_version": "git:0123abcd", "libraries": json.dumps({"scikit-learn": "1.9.1"}),
            "config_hash": f"{n:016x}", "created_by": "trainer@host",
            "created_at": AT - dt.timedelta(hours=versions - n)})
    for seq, model in enumerate(sorted({r["model"] for r in rows}), start=1):
        top = max(r["version"] for r in rows if r["model"] == model)
        aliases.append({"model": model, "alias": "champion", "version": top,
                        "previous_version": None, "seq": seq, "set_by": "trainer@host",
                        "set_at": AT - dt.timedelta(minutes=40), "reason": "first version"})
    write_deltalake(str(lake / REGISTRY_TABLE), pa.Table.from_pylist(rows,
                                                                     schema=REGISTRY_SCHEMA))
    write_deltalake(str(lake / ALIASES_TABLE), pa.Table.from_pylist(aliases,
                                                                    schema=ALIASES_SCHEMA))
    for table in (REGISTRY_TABLE, ALIASES_TABLE):
        _pin_commit_time(lake / table, AT - dt.timedelta(minutes=40))
