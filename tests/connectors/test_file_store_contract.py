from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.abc import FileInfo, FileStore
from connectors.errors import NotFoundError, StoreError, UnsafeNameError
from connectors.folder import FolderStore


def put(store: FileStore, path: str, data: bytes) -> None:
    store.write_atomic(path, [data])


def test_write_then_read_back_and_stat(store: FileStore) -> None:
    written = store.write_atomic("a/b/data.csv", [b"x,y\n", b"1,2\n"])
    info = store.stat("a/b/data.csv")
    assert info == written and info.size == 8 and info.path == "a/b/data.csv"
    with store.open_read("a/b/data.csv") as f:
        assert f.read() == b"x,y\n1,2\n"
    assert store.stat("missing.csv") is None


def test_list_matches_glob_and_skips_hidden(store: FileStore) -> None:
    for name in ("r/1.csv", "r/2.csv", "r/notes.txt", "r/sub/3.csv", "r/.hidden.csv",
                 ".silta-quarantine/r/4.csv"):
        put(store, name, b"1\n")
    assert [f.path for f in store.list("r/*.csv")] == ["r/1.csv", "r/2.csv"]
    assert [f.path for f in store.list("**/*.csv")] == ["r/1.csv", "r/2.csv", "r/sub/3.csv"]
    sizes = {f.path: f.size for f in store.list("r/*")}
    assert sizes == {"r/1.csv": 2, "r/2.csv": 2, "r/notes.txt": 2}


def test_atomic_write_leaves_nothing_half_written(store: FileStore) -> None:
    put(store, "out.csv", b"old\n")

    def chunks() -> Iterator[bytes]:
        yield b"new data, first half\n"
        raise OSError(28, "No space left on device")

    with pytest.raises((StoreError, OSError)):
        store.write_atomic("out.csv", chunks())
    with store.open_read("out.csv") as f:
        assert f.read() == b"old\n"  # the final name still holds the old, whole file
    assert [f.path for f in store.list("*")] == ["out.csv"]  # no temporary left behind


def test_move_and_delete(store: FileStore) -> None:
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
def test_hostile_names_never_touch_the_disk(store: FileStore, bad: str, tmp_path: Path) -> None:
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeNameError):
        store.write_atomic(bad, [b"x"])
    with pytest.raises(UnsafeNameError):
        store.open_read(bad)
    with pytest.raises(UnsafeNameError):
        store.move("a.csv", bad)
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_folder_store_ignores_symlinks_that_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n")
    os.symlink(secret, root / "link.csv")
    (root / "real.csv").write_text("ok\n")
    assert [f.path for f in FolderStore(root).list("*.csv")] == ["real.csv"]


def test_folder_store_reports_a_missing_root_as_retriable(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        list(FolderStore(tmp_path / "absent").list("*.csv"))
    assert info.value.retriable and "does not exist" in info.value.msg


def test_write_atomic_stages_under_tmp_name_then_renames(store: FileStore) -> None:
    put(store, "out/data.csv", b"old\n")
    seen: list[tuple[FileInfo, bytes, bytes]] = []

    def staged(info: FileInfo) -> None:
        # Complete under the temporary name; the final name still holds the old file.
        with store.open_read(info.path) as tmp, store.open_read("out/data.csv") as final:
            seen.append((info, tmp.read(), final.read()))
        assert store.stat(info.path) == info

    written = store.write_atomic("out/data.csv", [b"new ", b"data\n"],
                                 tmp_name="out/.data.csv.silta-3.tmp", on_staged=staged)
    assert seen == [(FileInfo("out/.data.csv.silta-3.tmp", 9, seen[0][0].mtime_ns),
                     b"new data\n", b"old\n")]
    assert written.path == "out/data.csv" and written.size == 9
    assert store.stat("out/.data.csv.silta-3.tmp") is None
    with store.open_read("out/data.csv") as f:
        assert f.read() == b"new data\n"


def test_write_atomic_replaces_a_leftover_temporary_file(store: FileStore) -> None:
    # A crashed attempt left its temporary file (publish reuses the recorded name).
    put(store, ".x.csv.silta-1.tmp", b"half of an old attem")
    store.write_atomic("x.csv", [b"whole\n"], tmp_name=".x.csv.silta-1.tmp")
    with store.open_read("x.csv") as f:
        assert f.read() == b"whole\n"
    assert store.stat(".x.csv.silta-1.tmp") is None


def test_empty_and_large_files_round_trip(store: FileStore) -> None:
    assert store.write_atomic("empty.csv", []).size == 0
    with store.open_read("empty.csv") as f:
        assert f.read() == b""
    data = os.urandom(3 * (1 << 20) + 12_345)
    cuts = [0, 1, 70_000, 333_333, 1 << 20, 2_900_000, len(data)]  # odd chunk sizes
    written = store.write_atomic("big.bin", [data[a:b] for a, b in itertools.pairwise(cuts)])
    assert written.size == len(data) and store.stat("big.bin") == written
    got = bytearray()
    with store.open_read("big.bin") as f:
        for size in (1, 4095, 65_536, 1 << 20, 7):  # reads of every size, then the rest
            got += f.read(size)
        got += f.read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_open_read_can_seek(store: FileStore) -> None:
    put(store, "s.bin", bytes(range(256)) * 1000)  # parquet readers seek to the footer
    with store.open_read("s.bin") as f:
        f.seek(-10, os.SEEK_END)
        assert f.read() == bytes(range(246, 256))
        f.seek(300)
        assert f.tell() == 300 and f.read(3) == bytes([44, 45, 46])
        f.seek(0)
        assert len(f.read()) == 256_000


def test_move_replaces_an_existing_target(store: FileStore) -> None:
    put(store, "a.csv", b"new\n")
    put(store, "done/a.csv", b"old\n")
    store.move("a.csv", "done/a.csv")
    assert store.stat("a.csv") is None
    with store.open_read("done/a.csv") as f:
        assert f.read() == b"new\n"


@pytest.mark.parametrize("bad", ["../x.tmp", "/tmp/x.tmp", "a\\x.tmp", "x\n.tmp"])
def test_hostile_temporary_names_are_refused(store: FileStore, bad: str, tmp_path: Path) -> None:
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    staged: list[FileInfo] = []
    with pytest.raises(UnsafeNameError):
        store.write_atomic("ok.csv", [b"x"], tmp_name=bad, on_staged=staged.append)
    assert staged == []
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before
