"""No secret value on any screen of the TUI.

A world whose PostgreSQL and SFTP connectors fail (their error texts are where a password
would leak first) runs a pass of the real agent; then the TUI, loaded with the secrets in
its environment as an operator's session would have them, visits every screen, every run
of the list with its detail, every alert with its detail, and the log. The text of the
whole screen (what the terminal would show) is searched for each value at every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import load_config
from tests.e2e._cli import cli_env, ledger, silta
from tests.tui.conftest import settle
from tui.app import SiltaApp

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(240)]

DB_SECRET = "db-S3cr3t-tui-5e1d"
SFTP_SECRET = "sftp-S3cr3t-tui-2b9f"
SECRETS = (DB_SECRET, SFTP_SECRET)


def _world(root: Path) -> tuple[Path, dict[str, str]]:
    creds = root / "creds"
    creds.mkdir()
    (creds / "sftp-pw").write_text(SFTP_SECRET, encoding="utf-8")
    (creds / "sftp-pw").chmod(0o400)
    known = root / "known_hosts"
    known.write_text("", encoding="utf-8")
    (root / "inbox").mkdir()
    (root / "inbox" / "a.csv").write_text("id\n1\n", encoding="utf-8")
    config = root / "silta.toml"
    config.write_text(f'''
[agent]
name = "secret-agent"
state_dir = "state"
[lake]
uri = "lake"
[connectors.inbox]
type = "folder"
path = "inbox"
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
name = "local"
source = "inbox:*.csv"
target = "lake:raw/local"
settle_seconds = 0
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
    env = {"SILTA_TEST_DB_PW": DB_SECRET, "CREDENTIALS_DIRECTORY": str(creds)}
    return config, env


def _screen_text(app: SiltaApp) -> str:
    """Every character the terminal would show now, line by line."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def test_no_screen_shows_a_secret(tmp_path: Path, app_for: Callable[..., SiltaApp],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config, secrets_env = _world(tmp_path)
    r = silta(tmp_path, "agent", "run", "--once", "--config", config,
              env=cli_env(**secrets_env))
    assert r.code == 1, r  # two syncs fail, one lands its file
    failed = ledger(tmp_path / "state", "SELECT name, error FROM runs WHERE status='failed' "
                    "ORDER BY name")
    assert [f["name"] for f in failed] == ["files", "register"]
    assert all(f["error"] for f in failed)
    for key, value in secrets_env.items():
        monkeypatch.setenv(key, value)
    loaded = load_config(config)
    # the session holds the secrets: a leak would have them to show
    assert loaded.config.connectors["db"].password.get_secret_value() == DB_SECRET

    screens: list[str] = []
    steps = 0

    def check(app: SiltaApp, where: str) -> str:
        nonlocal steps
        text = _screen_text(app)
        for secret in SECRETS:
            assert secret not in text, f"{where}: {secret!r} on screen\n{text}"
        steps += 1
        return text

    for name in ("dashboard", "tables", "models", "runs", "alerts", "log"):
        app = app_for(loaded, screen=name)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screens.append(check(app, name))
            rows = {"runs": 6, "alerts": 4, "tables": 3}.get(name, 0)
            for i in range(rows):  # each row's detail in turn
                await pilot.press("down")
                await settle(pilot)
                check(app, f"{name} row {i + 2}")
            if name == "runs":
                await pilot.press("i")  # the idle runs as well
                await settle(pilot)
                check(app, "runs with idle ones")
            await pilot.press("question_mark")
            await settle(pilot)
            check(app, f"help on {name}")
    # the screens did show the failures whose texts were searched
    dashboard, _, _, runs, alerts, log = screens
    assert "register" in dashboard
    assert "failed" in runs
    assert "run_failed" in alerts
    assert "sync=register failed" in log
    assert steps >= 20
    assert os.environ.get("SILTA_TEST_DB_PW") == DB_SECRET  # set for this test alone
