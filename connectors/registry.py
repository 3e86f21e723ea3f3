"""Connector types, registered by name and imported lazily (after fsspec's registry)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from connectors.errors import ConfigError

#: built-in connectors; third parties add theirs through the ``silta.connectors`` entry points
BUILTIN: dict[str, str] = {
    "folder": "connectors.folder:FolderStore",
    "sftp": "connectors.sftp:SftpStore",
    "sql": "connectors.sql:SqlStore",
}


def known_types() -> dict[str, str]:
    """Every registered connector type mapped to its ``module:Class``."""
    types = dict(BUILTIN)
    for ep in entry_points(group="silta.connectors"):
        types.setdefault(ep.name, ep.value)
    return types


def get_connector_class(type_name: str) -> Any:
    """Import and return the class registered for ``type_name``."""
    types = known_types()
    if type_name not in types:
        raise ConfigError(
            f"unknown connector type {type_name!r}; known types: {', '.join(sorted(types))}"
        )
    module_name, _, class_name = types[type_name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"connector type {type_name!r} needs {e.name!r}, which is not installed; "
            "install it into Silta's environment"
        ) from e
    return getattr(module, class_name)
