"""Shared fixtures: configs written to tmp folders, the engine, an independent Delta reader."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from agent.config import LoadedConfig, load_config
from agent.state import StateStore
from agent.stores import open_lake, open_store
from agent.sync import SyncEngine
from tests.servers.azurite import *  # noqa: F403 - session fixtures of the real servers
from tests.servers.moto_s3 import *  # noqa: F403
from tests.servers.postgres import *  # noqa: F403
from tests.servers.sshd import *  # noqa: F403

ROOT = Path(__file__).resolve().parent.parent
_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # deltalake 1.6.6 + pyarrow 26 can abort in native thread-pool teardown at interpreter
    # exit (exit 134) after every test has finished; leave with pytest's own exit status.
    if "status" in _EXIT and os.environ.get("SILTA_TEST_NORMAL_EXIT") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return str(v)


def write_config(folder: Path, syncs: list[dict[str, Any]], *, agent: dict[str, Any] | None = None
                 ) -> Path:
    """A config in ``folder``: connector `inbox` at ./inbox, lake at ./lake, state at ./state."""
    lines = [
        "[agent]",
        'name = "test-agent"',
        'state_dir = "state"',
        *(f"{k} = {_toml_value(v)}" for k, v in (agent or {}).items()),
        "[lake]",
        'uri = "lake"',
        "[connectors.inbox]",
        'type = "folder"',
        'path = "inbox"',
    ]
    for s in syncs:
        lines.append("[[syncs]]")
        merged = {"source": "inbox:*.csv", "target": "lake:raw/t", "settle_seconds": 0, **s}
        lines += [f"{k} = {_toml_value(v)}" for k, v in merged.items()]
    (folder / "inbox").mkdir(parents=True, exist_ok=True)
    path = folder / "silta.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., tuple[SyncEngine, LoadedConfig]]]:
    """``make_engine([{"name": "s", ...}])`` -> (engine, loaded config) over tmp_path."""
    states: list[StateStore] = []

    def build(syncs: list[dict[str, Any]], **agent: Any) -> tuple[SyncEngine, LoadedConfig]:
        loaded = load_config(write_config(tmp_path, syncs, agent=agent))
        state = StateStore(loaded.state_dir)
        states.append(state)
        stores = {n: open_store(loaded, n) for n in loaded.config.connectors}
        return SyncEngine(loaded, state, open_lake(loaded), stores, "test-agent"), loaded

    yield build
    for s in states:
        s.close()


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _delta_extension() -> str:
    import duckdb_extension_delta

    base = Path(duckdb_extension_delta.__file__).parent / "extensions"
    found = sorted(base.glob("*/delta.duckdb_extension"))
    if not found:
        raise RuntimeError(f"no delta.duckdb_extension under {base}")
    return str(found[-1])


@pytest.fixture(scope="session")
def duck() -> Iterator[Any]:
    """DuckDB with its delta extension: an independent reader of the tables Silta writes."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"LOAD '{_delta_extension()}'")
    yield con
    con.close()


def duck_rows(duck: Any, table_path: Path, sql: str = "SELECT * FROM t") -> list[tuple[Any, ...]]:
    """Run ``sql`` against the Delta table at ``table_path`` (named t) through DuckDB."""
    return list(duck.execute(
        f"WITH t AS (SELECT * FROM delta_scan('{table_path}')) {sql}").fetchall())
