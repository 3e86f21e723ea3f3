"""`silta connectors list|test`: what each connector points at, and whether it answers."""

from __future__ import annotations

import time
from typing import Any

from agent.config import LoadedConfig
from agent.stores import open_store
from connectors.errors import NotFoundError, SiltaError


def describe(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """One row per connector; never a secret (passwords are not shown, only whether set)."""
    rows = []
    for name, conf in loaded.config.connectors.items():
        where: str
        if conf.type == "folder":
            where = str(loaded.resolve(conf.path))
        elif conf.type == "sftp":
            where = f"sftp://{conf.username}@{conf.host}:{conf.port}/{conf.root.lstrip('/')}"
        else:
            where = conf.url
        auth = "-"
        if conf.type == "sftp":
            auth = "key" if conf.key_file else ("password" if conf.password else "agent")
        elif conf.type == "sql":
            auth = "password" if conf.password else "none"
        users = [s.name for s in loaded.config.syncs if s.connector == name]
        rows.append({"name": name, "type": conf.type, "where": where, "auth": auth,
                     "syncs": ", ".join(users) or "-", "description": conf.description})
    return rows


def test_connector(loaded: LoadedConfig, name: str) -> dict[str, Any]:
    """Connect, list or read a sample, and time it; errors are reported, not raised."""
    if name not in loaded.config.connectors:
        known = ", ".join(sorted(loaded.config.connectors)) or "none defined"
        raise NotFoundError("connector", name, f"defined: {known}")
    started = time.monotonic()
    store = open_store(loaded, name)
    try:
        detail = store.check()
        ok, error = True, None
    except SiltaError as e:
        ok, detail, error = False, "", f"{e.title}: {e.msg}"
    finally:
        store.close()
    return {"connector": name, "type": loaded.config.connectors[name].type, "ok": ok,
            "detail": detail, "error": error,
            "latency_ms": round((time.monotonic() - started) * 1000, 1)}
