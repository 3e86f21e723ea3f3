"""Every file store runs the same contract suite (rclone's fstests, fsspec's abstract tests).

A store joins by adding a factory to ``FILE_STORES``; stores that need a server start it
in their fixture (the factory asks for it through ``request.getfixturevalue``). Each store
gets ``tmp_path / "root"`` as its root, a local folder for the SFTP store too (its server
runs here), so a test can look at the disk behind any store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.abc import FileStore, TableStore
from connectors.folder import FolderStore


def _folder(request: pytest.FixtureRequest, root: Path) -> FileStore:
    return FolderStore(root)


def _sftp(request: pytest.FixtureRequest, root: Path) -> FileStore:
    server = request.getfixturevalue("sftp_server")
    server.start()  # an outage test may have stopped it
    store: FileStore = server.store(root)
    return store


FILE_STORES: dict[str, Callable[[pytest.FixtureRequest, Path], FileStore]] = {
    "folder": _folder,
    "sftp": _sftp,
}


@pytest.fixture(params=sorted(FILE_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    root = tmp_path / "root"
    root.mkdir()
    s = FILE_STORES[request.param](request, root)
    yield s
    s.close()


# -- table stores: the same idea for TableStore (tests/connectors/test_table_store_contract.py)


@dataclass
class TableCase:
    """A table store under test, and the tests' own engine on the same database."""

    name: str
    store: TableStore
    engine: sa.Engine
    #: the store can create a missing schema (PostgreSQL; SQLite has attached files only)
    can_create_schema: bool

    def sql(self, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run ``statement`` outside the store (set-up and checks); rows if it returns any."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []

    def count(self, table: str) -> int:
        quoted = ".".join(self.engine.dialect.identifier_preparer.quote(p)
                          for p in table.split("."))
        return int(self.sql(f"SELECT count(*) FROM {quoted}")[0][0])


def _sqlite_tables(request: pytest.FixtureRequest, tmp_path: Path) -> TableCase:
    from connectors.sql import SqlStore

    url = f"sqlite:///{tmp_path / 'stat.db'}"
    return TableCase("sqlite", SqlStore(url), sa.create_engine(url), can_create_schema=False)


def _postgres_tables(request: pytest.FixtureRequest, tmp_path: Path) -> TableCase:
    from connectors.sql import SqlStore

    server = request.getfixturevalue("postgres_server")
    server.start()  # an outage test may have stopped it
    url = server.url_for(server.new_database())
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg",
                                                   password=server.password))
    return TableCase("postgresql", SqlStore(url, password=server.password), engine,
                     can_create_schema=True)


TABLE_STORES: dict[str, Callable[[pytest.FixtureRequest, Path], TableCase]] = {
    "sqlite": _sqlite_tables,
    "postgresql": _postgres_tables,
}


@pytest.fixture(params=sorted(TABLE_STORES))
def table_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TableCase]:
    """Each table store in turn, on a fresh, empty database."""
    case = TABLE_STORES[request.param](request, tmp_path)
    yield case
    case.store.close()
    case.engine.dispose()
