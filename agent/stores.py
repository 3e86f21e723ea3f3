"""Build connector instances and the lake from a loaded config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.config import LoadedConfig
from connectors.abc import FileStore, TableStore
from connectors.lake import DeltaLake
from connectors.registry import get_connector_class

Store = FileStore | TableStore


def connector_options(loaded: LoadedConfig, name: str) -> dict[str, Any]:
    """The constructor arguments of ``[connectors.NAME]``: paths resolved, secrets revealed."""
    conf = loaded.config.connectors[name]
    options: dict[str, Any] = {}
    for key, value in conf:
        if key in ("type", "description", "password_file"):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = loaded.resolve(value)
        options[key] = value
    url = options.get("url")
    if isinstance(url, str) and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        # sqlite:///relative/path is relative to the config file, like every other path.
        options["url"] = "sqlite:///" + str(loaded.resolve(url.removeprefix("sqlite:///")))
    return options


def open_store(loaded: LoadedConfig, name: str) -> Store:
    """The file or table store configured under ``[connectors.NAME]``."""
    conf = loaded.config.connectors[name]
    cls = get_connector_class(conf.type)
    store: Store = cls(**connector_options(loaded, name))
    return store


def open_lake(loaded: LoadedConfig) -> DeltaLake:
    return DeltaLake(loaded.lake_uri, loaded.config.lake.storage_options)
