from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import LoadedConfig, default_config_path, json_schema, load_config
from agent.jobs import JobGraph
from connectors.errors import ConfigError
from tests.conftest import ROOT, dedent

GOOD = dedent("""
    [agent]
    name = "onprem-01"
    state_dir = "var/state"
    [lake]
    uri = "var/lake"
    [connectors.dropzone]
    type = "folder"
    path = "var/onprem/incoming"
    [[syncs]]
    name = "survey_responses"
    source = "dropzone:responses/*.csv"
    target = "lake:raw/survey_responses"
    format = "csv"
    csv = { delimiter = ";", encoding = "utf-8", decimal = ",", header = true }
    mode = "append"
    key = ["response_id"]
    schema = "merge"
    schedule = "*/5 * * * *"
    watch = true
    settle_seconds = 5
    on_success = "keep"
""")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "silta.toml"
    p.write_text(text, encoding="utf-8")
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_the_issue_contract_shape_loads_and_paths_resolve_against_the_file(tmp_path: Path):
    loaded = load_config(write(tmp_path, GOOD))
    c = loaded.config
    assert c.agent.name == "onprem-01"
    assert loaded.state_dir == tmp_path / "var" / "state"
    assert loaded.lake_uri == str(tmp_path / "var" / "lake")
    s = c.syncs[0]
    assert (s.connector, s.pattern, s.table) == ("dropzone", "responses/*.csv",
                                                 "raw/survey_responses")
    assert s.schema_policy == "merge"
    assert s.csv.decimal == "," and s.csv.delimiter == ";"
    assert s.settle_seconds == 5.0 and s.watch is True


def test_demo_config_is_valid():
    loaded = load_config(ROOT / "config" / "demo.toml")
    assert [s.name for s in loaded.config.syncs] == [
        "survey_responses", "coded_sample", "enterprise_register", "publish_codes_db",
        "publish_codes_file", "publish_predictions"]
    assert [s.publishes for s in loaded.config.syncs] == [False, False, False, True, True,
                                                          True]
    graph = JobGraph(loaded.config)
    # ingests, then what follows them: publishes and training, then prediction, then
    # the publish of the predictions and the monitor
    assert graph.waves([j.id for j in graph.enabled()]) == [
        ["sync:survey_responses", "sync:coded_sample", "sync:enterprise_register"],
        ["sync:publish_codes_db", "sync:publish_codes_file", "train:train_occupation_coder"],
        ["predict:code_answers"],
        ["sync:publish_predictions", "monitor:watch_occupation_coder"]]
    monitor = loaded.config.monitor("watch_occupation_coder")
    assert (monitor.model, monitor.input, monitor.predictions, monitor.labels) == (
        "occupation_coder", "raw/survey_responses", "predictions/occupation_codes",
        "raw/coded_sample")
    assert coder_retrains(loaded) == ["drift", "performance", "schedule"]
    coder = loaded.config.model("occupation_coder")
    assert (coder.training_table, coder.labels_table, coder.key, coder.label) == (
        "raw/survey_responses", "raw/coded_sample", ["response_id"], "isco08")
    assert loaded.config.prediction("code_answers").model_ref == "occupation_coder@champion"
    assert loaded.state_dir == ROOT / "var" / "state"


def coder_retrains(loaded: LoadedConfig) -> list[str]:
    return list(loaded.config.model("occupation_coder").retrain_on)


def test_every_problem_is_reported_at_once_with_file_line_and_key(tmp_path: Path):
    text = GOOD.replace('name = "onprem-01"', 'name = "onprem-01"\ncolour = "blue"')
    text = text.replace('mode = "append"', 'mode = "apend"')
    text = text.replace('schedule = "*/5 * * * *"', 'schedule = "every five minutes"')
    text = text.replace('settle_seconds = 5', 'settle_secs = 5')
    text += dedent("""
        [[syncs]]
        name = "second"
        source = "nowhere:*.csv"
        target = "lake:raw/second"
        mode = "merge"
    """)
    path = write(tmp_path, text)
    found = problems(path)
    lines = text.splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if fragment in line)

    expected = {
        f"{path}:{line_of('colour')}: agent.colour: unknown key",
        f"{path}:{line_of('apend')}: syncs[0].mode: Input should be 'append', 'merge' or "
        "'snapshot' (got 'apend')",
        f"{path}:{line_of('every five')}: syncs[0].schedule: not a cron expression",
        f"{path}:{line_of('settle_secs')}: syncs[0].settle_secs: unknown key; did you mean "
        "'settle_seconds'?",
        f"{path}:{line_of('nowhere')}: syncs[1].source: connector 'nowhere' is not defined",
        "syncs[1].key: mode = \"merge\" needs",
    }
    assert len(found) == len(expected)
    for fragment in expected:
        assert any(fragment in p for p in found), (fragment, found)


def test_toml_syntax_error_names_the_file(tmp_path: Path):
    path = write(tmp_path, "[agent\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.msg and "not valid TOML" in info.value.msg
    assert "line 1" in info.value.msg


def test_missing_file_says_how_to_point_at_one(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "not found" in info.value.msg and "--config" in info.value.msg


def test_env_references_expand_and_missing_ones_are_named(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    text = GOOD.replace('uri = "var/lake"',
                        'uri = "var/lake"\nstorage_options = { account_key = "${SILTA_T_KEY}" }')
    monkeypatch.setenv("SILTA_T_KEY", "s3cr3t")
    loaded = load_config(write(tmp_path, text))
    assert loaded.config.lake.storage_options == {"account_key": "s3cr3t"}
    monkeypatch.delenv("SILTA_T_KEY")
    found = problems(write(tmp_path, text))
    assert len(found) == 1
    assert "lake.storage_options.account_key: environment variable SILTA_T_KEY is not set" \
        in found[0]


@pytest.mark.parametrize(("replace", "expect"), [
    ('target = "lake:raw/survey_responses"', "must be `lake:TABLE`"),
    ('source = "dropzone:../etc/*.csv"', "'..' part"),
    ('target = "lake:_silta/registry"', "belong to Silta"),
    ('encoding = "utf-8"', "unknown encoding"),
    ('name = "survey_responses"', "String should match pattern"),
])
def test_field_checks(tmp_path: Path, replace: str, expect: str):
    bad = {
        'target = "lake:raw/survey_responses"': 'target = "raw/survey_responses"',
        'source = "dropzone:responses/*.csv"': 'source = "dropzone:../etc/*.csv"',
        'source = "dropzone:../etc/*.csv"': 'source = "dropzone:../etc/*.csv"',
        'target = "lake:_silta/registry"': 'target = "lake:_silta/registry"',
        'encoding = "utf-8"': 'encoding = "klingon"',
        'name = "survey_responses"': 'name = "has space"',
    }
    original = {
        'source = "dropzone:../etc/*.csv"': 'source = "dropzone:responses/*.csv"',
        'target = "lake:_silta/registry"': 'target = "lake:raw/survey_responses"',
    }.get(replace, replace)
    text = GOOD.replace(original, bad[replace])
    found = problems(write(tmp_path, text))
    assert any(expect in p for p in found), found


def test_duplicate_sync_names_are_refused(tmp_path: Path):
    text = GOOD + GOOD[GOOD.index("[[syncs]]"):]
    found = problems(write(tmp_path, text))
    assert any("syncs[1].name: sync name 'survey_responses' is already used" in p
               for p in found), found


def test_config_path_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SILTA_CONFIG", raising=False)
    assert default_config_path(None) == Path("silta.toml")
    monkeypatch.setenv("SILTA_CONFIG", "/etc/silta/agent.toml")
    assert default_config_path(None) == Path("/etc/silta/agent.toml")
    assert default_config_path("x.toml") == Path("x.toml")


def test_schema_json_is_current():
    on_disk = json.loads((ROOT / "config" / "schema.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(json_schema())), \
        "config/schema.json is stale: run `make schema`"


def test_schema_documents_every_field():
    schema = json_schema()
    sync = schema["$defs"]["SyncConfig"]["properties"]
    assert set(sync) >= {"name", "source", "target", "format", "csv", "mode", "key", "schema",
                         "schedule", "watch", "settle_seconds", "on_success"}
    undocumented = [k for k, v in sync.items() if not v.get("description")]
    assert undocumented == [], undocumented


def test_secret_files_are_read_and_must_be_private(tmp_path: Path):
    secret = tmp_path / "account.key"
    secret.write_text("k3y-from-file\n")
    secret.chmod(0o600)
    text = GOOD.replace('uri = "var/lake"',
                        'uri = "var/lake"\nstorage_options = { account_key_file = "account.key",'
                        ' account_name = "dev" }')
    loaded = load_config(write(tmp_path, text))
    assert loaded.config.lake.storage_options == {"account_key": "k3y-from-file",
                                                  "account_name": "dev"}
    secret.chmod(0o644)
    found = problems(write(tmp_path, text))
    assert len(found) == 1
    assert "lake.storage_options.account_key_file: secret file" in found[0]
    assert "chmod 600" in found[0] and "k3y" not in found[0]
    secret.unlink()
    found = problems(write(tmp_path, text))
    assert "cannot read secret file" in found[0]
