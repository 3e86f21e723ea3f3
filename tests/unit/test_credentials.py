"""Secrets from systemd credentials: `${credential:NAME}` reads $CREDENTIALS_DIRECTORY/NAME,
refused when the file is readable by group or others, named in every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from connectors.errors import ConfigError


def _config(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "silta.toml"
    path.write_text(f'[lake]\nuri = "lake"\nstorage_options = {{ key = "{value}" }}\n',
                    encoding="utf-8")
    return path


def test_a_credential_is_read_from_the_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "lake-key").write_text("s3cr3t-value\n", encoding="utf-8")
    (creds / "lake-key").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    loaded = load_config(_config(tmp_path, "pre-${credential:lake-key}-post"))
    assert loaded.config.lake.storage_options == {"key": "pre-s3cr3t-value-post"}


def test_a_credential_without_systemd_says_how_to_give_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "${credential:lake-key}"))
    (problem,) = e.value.problems
    assert "silta.toml:3: lake.storage_options.key:" in problem
    assert "CREDENTIALS_DIRECTORY" in problem and "LoadCredential=lake-key:" in problem


def test_a_credential_readable_by_others_is_refused_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "lake-key").write_text("s3cr3t-value", encoding="utf-8")
    (creds / "lake-key").chmod(0o644)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "${credential:lake-key}"))
    text = "\n".join(e.value.problems)
    assert "readable by group or others" in text and "chmod 600" in text
    assert "s3cr3t-value" not in text


def test_a_missing_credential_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "${credential:nope}"))
    assert "cannot read secret file" in e.value.problems[0]
    assert str(tmp_path / "nope") in e.value.problems[0]
