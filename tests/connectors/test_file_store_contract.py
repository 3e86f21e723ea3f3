from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.abc import FileStore
from connectors.errors import NotFoundError, StoreError, UnsafeNameError
from connectors.folder import FolderStore


def put(store: FileStore, path: str, data: bytes) -> None:
    store.write_atomic(path, [data])


def test_write_then_read_back_and_stat(store: FileStore):
    written = store.write_atomic("a/b/data.csv", [b"x,y\n", b"1,2\n"])
    info = store.stat("a/b/data.csv")
    assert info == written and info.size == 8 and info.path == "a/b/data.csv"
    with store.open_read("a/b/data.csv") as f:
        assert f.read() == b"x,y\n1,2\n"
    assert store.stat("missing.csv") is None


def test_list_matches_glob_and_skips_hidden(store: FileStore):
    for name in ("r/1.csv", "r/2.csv", "r/notes.txt", "r/sub/3.csv", "r/.hidden.csv",
                 ".silta-quarantine/r/4.csv"):
        put(store, name, b"1\n")
    assert [f.path for f in store.list("r/*.csv")] == ["r/1.csv", "r/2.csv"]
    assert [f.path for f in store.list("**/*.csv")] == ["r/1.csv", "r/2.csv", "r/sub/3.csv"]
    sizes = {f.path: f.size for f in store.list("r/*")}
    assert sizes == {"r/1.csv": 2, "r/2.csv": 2, "r/notes.txt": 2}


def test_atomic_write_leaves_nothing_half_written(store: FileStore):
    put(store, "out.csv", b"old\n")

    def chunks():
        yield b"new data, first half\n"
        raise OSError(28, "No space left on device")

    with pytest.raises((StoreError, OSError)):
        store.write_atomic("out.csv", chunks())
    with store.open_read("out.csv") as f:
        assert f.read() == b"old\n"  # the final name still holds the old, whole file
    assert [f.path for f in store.list("*")] == ["out.csv"]  # no temporary left behind


def test_move_and_delete(store: FileStore):
    put(store, "in/a.csv", b"a\n")
    store.move("in/a.csv", "done/in/a.csv")
    assert store.stat("in/a.csv") is None and store.stat("done/in/a.csv") is not None
    store.delete("done/in/a.csv")
    assert store.stat("done/in/a.csv") is None
    store.delete("done/in/a.csv")  # deleting what is gone is not an error
    with pytest.raises(NotFoundError):
        store.move("nope.csv", "x.csv")
    with pytest.raises(NotFoundError):
        store.open_read("nope.csv")


@pytest.mark.parametrize("bad", ["../escape.csv", "/etc/passwd", "a/../../b", "a\\b",
                                 "nul\x00.csv", "ctl\x07.csv"])
def test_hostile_names_never_touch_the_disk(store: FileStore, bad: str, tmp_path: Path):
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeNameError):
        store.write_atomic(bad, [b"x"])
    with pytest.raises(UnsafeNameError):
        store.open_read(bad)
    with pytest.raises(UnsafeNameError):
        store.move("a.csv", bad)
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_folder_store_ignores_symlinks_that_leave_the_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n")
    os.symlink(secret, root / "link.csv")
    (root / "real.csv").write_text("ok\n")
    assert [f.path for f in FolderStore(root).list("*.csv")] == ["real.csv"]


def test_folder_store_reports_a_missing_root_as_retriable(tmp_path: Path):
    with pytest.raises(StoreError) as info:
        list(FolderStore(tmp_path / "absent").list("*.csv"))
    assert info.value.retriable and "does not exist" in info.value.msg
