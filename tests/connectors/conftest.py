"""Every file store runs the same contract suite (rclone's fstests, fsspec's abstract tests).

A store joins by adding a factory to ``FILE_STORES``; stores that need a server start it
in their fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.abc import FileStore
from connectors.folder import FolderStore


def _folder(tmp_path: Path) -> FileStore:
    root = tmp_path / "root"
    root.mkdir()
    return FolderStore(root)


FILE_STORES: dict[str, Callable[[Path], FileStore]] = {"folder": _folder}


@pytest.fixture(params=sorted(FILE_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    s = FILE_STORES[request.param](tmp_path)
    yield s
    s.close()
