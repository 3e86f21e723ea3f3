"""No secret value reaches any output: every CLI command's stdout and stderr, the agent's
log file, the state store and the lake are searched for the values after a run whose
connectors fail (an error text is where a password would leak first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e._cli import cli_env, ledger, silta

pytestmark = pytest.mark.timeout(240)

DB_SECRET = "db-S3cr3t-7f2a"
SFTP_SECRET = "sftp-S3cr3t-91bc"


def _world(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "sftp-pw").write_text(SFTP_SECRET, encoding="utf-8")
    (creds / "sftp-pw").chmod(0o400)
    known = tmp_path / "known_hosts"
    known.write_text("", encoding="utf-8")
    config = tmp_path / "silta.toml"
    config.write_text(f'''
[agent]
name = "secret-agent"
state_dir = "state"
[lake]
uri = "lake"
[connectors.db]
type = "sql"
url = "postgresql://silta@127.0.0.1:1/register"
password = "${{SILTA_TEST_DB_PW}}"
connect_timeout_seconds = 2
[connectors.box]
type = "sftp"
host = "127.0.0.1"
port = 1
username = "silta"
password = "${{credential:sftp-pw}}"
known_hosts = "{known}"
timeout_seconds = 2
retries = 0
[[syncs]]
name = "register"
source = "db:enterprises"
watermark = "updated_at"
target = "lake:raw/enterprises"
[[syncs]]
name = "files"
source = "box:in/*.csv"
target = "lake:raw/files"
''', encoding="utf-8")
    env = cli_env(SILTA_TEST_DB_PW=DB_SECRET, CREDENTIALS_DIRECTORY=str(creds))
    return config, env


def test_no_output_file_or_table_holds_a_secret(tmp_path: Path) -> None:
    config, env = _world(tmp_path)
    commands = [
        ["config", "check"], ["connectors", "list"], ["connectors", "list", "--json"],
        ["connectors", "test", "db"], ["connectors", "test", "box", "--json"],
        ["sync", "run", "register"], ["agent", "run", "--once"],
        ["agent", "run", "--once", "--json"], ["status"], ["status", "--json"],
        ["runs", "list", "--all"], ["runs", "list", "--all", "--json"],
        ["agent", "health", "--json"], ["service", "unit"], ["jobs", "list"],
        ["agent", "run", "--once", "--debug", "--log-level", "debug"],
    ]
    seen = []
    for args in commands:
        r = silta(tmp_path, *args, "--config", config, env=env)
        seen.append((args, r.code))
        for secret in (DB_SECRET, SFTP_SECRET):
            assert secret not in r.out and secret not in r.err, (args, r)
    # the config is good and the failures are real and recorded (their texts were searched)
    codes = {" ".join(a): c for a, c in seen}
    assert codes["config check"] == 0
    assert codes["agent run --once"] == 1 and codes["connectors test db"] == 1
    errors = [r["error"] for r in ledger(tmp_path / "state", "SELECT error FROM runs WHERE "
                                         "status='failed'")]
    assert len(errors) >= 2 and all(errors), errors  # texts of the failures were searched
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "creds" not in p.parts]
    assert any(p.name == "silta.db" for p in files)
    assert any(p.name == "agent.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (DB_SECRET, SFTP_SECRET):
            assert secret.encode() not in data, path
    assert os.environ.get("SILTA_TEST_DB_PW") is None  # the test's own env stays clean
