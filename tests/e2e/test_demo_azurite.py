"""The whole demo flow with the lake on Azure Blob (Azurite), through the real CLI.

The account key reaches Silta only through ``${AZ_KEY}``; no output may contain it. The
tables are checked with a second, fresh deltalake reader and by listing the blobs
themselves (DuckDB reads remote tables in tests/connectors/test_lake_cloud.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.conftest import ROOT
from tests.e2e._cli import cli_env, silta

pytestmark = pytest.mark.timeout(300)


def _config(tmp_path: Path, azurite: Any, container: str) -> Path:
    (tmp_path / "config").mkdir()
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    options = azurite.storage_options()
    lake = (f'uri = "az://{container}/statfi"\n'
            "storage_options = { "
            f'azure_storage_account_name = "{options["azure_storage_account_name"]}", '
            'azure_storage_account_key = "${AZ_KEY}", '
            f'azure_storage_endpoint = "{options["azure_storage_endpoint"]}", '
            'azure_allow_http = "true" }\n')
    start = text.index('uri = "../var/lake"')
    end = text.index("\n", start) + 1
    config = tmp_path / "config" / "demo.toml"
    config.write_text(text[:start] + lake + text[end:], encoding="utf-8")
    return config


def _table(azurite: Any, container: str, name: str) -> pa.Table:
    table = DeltaTable(f"az://{container}/statfi/{name}",
                       storage_options=azurite.storage_options())
    return table.to_pyarrow_dataset().to_table()


def test_demo_flow_with_the_lake_on_azurite(tmp_path: Path, azurite_server: Any) -> None:
    container = azurite_server.new_container("demo")
    config = _config(tmp_path, azurite_server, container)
    env = cli_env(AZ_KEY=azurite_server.key)
    outputs: list[str] = []

    def run(*args: str) -> Any:
        r = silta(tmp_path, *args, "--config", str(config), env=env)
        outputs.extend([r.out, r.err])
        return r

    r = run("demo", "init")
    assert r.code == 0, r
    r = run("agent", "run", "--once", "--json")
    assert r.code == 0, r
    first = {o["sync"]: (o["status"], o["batches"], o["rows"], o["verified"])
             for o in r.json() if o["kind"] == "sync"}
    coded = first["coded_sample"][2]
    assert first == {
        "survey_responses": ("ok", 1, 2400, "ok: rows read 2400 = written 2400"),
        "coded_sample": ("ok", 1, coded, f"ok: rows read {coded} = written {coded}"),
        "enterprise_register": ("ok", 1, 300, "ok: rows read 300 = written 300"),
        "publish_codes_db": ("ok", 1, coded, f"ok: rows read {coded} = written {coded}"),
        "publish_codes_file": ("ok", 1, coded, f"ok: rows read {coded} = written {coded}"),
        "publish_predictions": ("ok", 1, 2400, "ok: rows read 2400 = written 2400"),
    }
    # the registry, the artifact and the predictions live in the cloud lake too
    jobs = {f"{o['kind']}:{o['name']}": (o["status"], o["model_version"], o["rows"])
            for o in r.json() if o["kind"] != "sync"}
    assert jobs == {"train:train_occupation_coder": ("ok", 1, coded),
                    "predict:code_answers": ("ok", 1, 2400),
                    "monitor:watch_occupation_coder": ("ok", 1, 2 * 2400)}
    assert _table(azurite_server, container, "predictions/occupation_codes").num_rows == 2400
    # the monitor's figures are in the cloud lake, one window per watched table
    metrics = _table(azurite_server, container, "_silta/metrics").to_pylist()
    assert sorted((m["target"], m["value"]) for m in metrics if m["check"] == "window") == [
        ("predictions/occupation_codes", 0.0), ("raw/survey_responses", 0.0)]
    assert not [m for m in metrics if m["status"] == "breach"]
    registry = _table(azurite_server, container, "_silta/registry").to_pylist()
    assert [(r["model"], r["version"]) for r in registry] == [("occupation_coder", 1)]
    artifact = _table(azurite_server, container, "_silta/artifacts/occupation_coder/1")
    files = {r["name"]: r for r in artifact.to_pylist()}
    assert sorted(files) == ["card.json", "card.md", "model.skops"]
    import hashlib

    assert hashlib.sha256(files["model.skops"]["data"]).hexdigest() == \
        registry[0]["artifact_sha256"]
    r = run("models", "card", "occupation_coder@champion")
    assert r.code == 0, r
    assert r.out.startswith("# Model card: occupation_coder v1\n")
    r = run("lineage", "predictions/occupation_codes", "--json")
    assert r.code == 0, r
    assert r.json()["commits"][0]["model"]["sha256_matches"] is True

    # An independent reader of the blobs: a fresh DeltaTable, and the raw log objects.
    survey = _table(azurite_server, container, "raw/survey_responses")
    assert survey.num_rows == 2400
    assert len(set(survey.column("response_id").to_pylist())) == 2400
    assert _table(azurite_server, container, "raw/enterprises").num_rows == 300
    blobs = azurite_server.blob_names(container, "statfi/")
    assert "statfi/raw/survey_responses/_delta_log/00000000000000000000.json" in blobs
    assert [b for b in blobs if b.startswith("statfi/raw/survey_responses/")
            and b.endswith(".parquet")]

    # The CLI reads the remote lake: list, history, time travel.
    r = run("tables", "list", "--json")
    assert r.code == 0, r
    assert {t["table"]: (t["version"], t["rows"]) for t in r.json()} == {
        "raw/coded_sample": (0, coded), "raw/enterprises": (0, 300),
        "raw/survey_responses": (0, 2400), "predictions/occupation_codes": (0, 2400)}
    r = run("tables", "history", "raw/survey_responses", "--json")
    assert r.code == 0, r
    assert [(h["version"], h["sync"], h["rows_added"]) for h in r.json()] == [
        (0, "survey_responses", 2400)]

    # A second pass adds nothing anywhere.
    r = run("agent", "run", "--once", "--json")
    assert r.code == 0, r
    assert {o["sync"]: (o["status"], o["batches"], o["rows"]) for o in r.json()
            if o["kind"] == "sync"} == {name: ("ok", 0, 0) for name in first}
    # (the coder is not refitted on new data alone: retrain_on)
    assert {o["name"]: o["status"] for o in r.json() if o["kind"] != "sync"} == {
        "code_answers": "ok", "watch_occupation_coder": "ok"}
    r = run("status", "--json")
    assert r.code == 0, r
    assert {s["sync"]: s["table_version"] for s in r.json()["syncs"]} == {
        "survey_responses": 0, "coded_sample": 0, "enterprise_register": 0,
        "publish_codes_db": 0, "publish_codes_file": 0, "publish_predictions": 0}

    # The key never shows, in any output of any command.
    assert azurite_server.key not in "".join(outputs)
    shutil.rmtree(tmp_path / "var", ignore_errors=True)
