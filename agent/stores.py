"""Build connector instances and the lake from a loaded config."""

from __future__ import annotations

from agent.config import LoadedConfig
from connectors.abc import FileStore
from connectors.lake import DeltaLake
from connectors.registry import get_connector_class


def open_store(loaded: LoadedConfig, name: str) -> FileStore:
    """The file store configured under ``[connectors.NAME]``."""
    conf = loaded.config.connectors[name]
    cls = get_connector_class(conf.type)
    options = conf.model_dump(exclude={"type", "description"})
    if "path" in options:
        options["path"] = loaded.resolve(options["path"])
    store: FileStore = cls(**options)
    return store


def open_lake(loaded: LoadedConfig) -> DeltaLake:
    return DeltaLake(loaded.lake_uri, loaded.config.lake.storage_options)
