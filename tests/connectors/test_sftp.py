"""SftpStore against a real OpenSSH server: host keys, credentials, outages, hostile names.

The contract suite (test_file_store_contract.py) covers the ordinary file operations; this
module covers what only a network store can get wrong. Faults are real: sshd is stopped
and started, and a TCP proxy between the store and sshd cuts or stalls the connection.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.errors import AuthError, NotFoundError, StoreError, UnsafeNameError
from connectors.sftp import SftpStore
from tests.servers.sshd import SshServer
from tests.tcp_proxy import TcpProxy

PASSWORD = "Sekr1t-pa55word-never-shown"
MIB = 1 << 20


@pytest.fixture
def proxy(sftp_server: SshServer, sftp_root: Path) -> Iterator[TcpProxy]:
    with TcpProxy(sftp_server.port) as p:
        yield p


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
                   check=True)
    return path


def random_file(folder: Path, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (folder / name).write_bytes(data)
    return data


def no_secret_anywhere(text: str) -> None:
    assert PASSWORD not in text


# -- host keys ----------------------------------------------------------------------------
def test_unknown_host_key_is_refused_with_what_to_do(sftp_server: SshServer, sftp_root: Path,
                                                      tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    store = sftp_server.store(sftp_root, known_hosts=empty, retries=3)
    with pytest.raises(AuthError) as info:
        store.stat("a.csv")
    e = info.value
    assert not e.retriable
    assert "not in known_hosts" in e.msg and str(empty) in e.msg
    assert f"ssh-keyscan -p {sftp_server.port} 127.0.0.1 >> {empty}" in e.msg
    assert "ssh-ed25519 SHA256:" in e.msg  # the offered key's fingerprint, to compare
    assert empty.read_text() == ""  # nothing was added
    store.close()


def test_changed_host_key_is_refused(sftp_server: SshServer, sftp_root: Path,
                                     tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    key_type, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sftp_server.port} {key_type} {key}\n")
    store = sftp_server.store(sftp_root, known_hosts=known, retries=3)
    with pytest.raises(AuthError) as info:
        store.list("*.csv").__next__()
    e = info.value
    assert not e.retriable
    assert "CHANGED" in e.msg and "verify the new key with the server's admin" in e.msg
    assert e.msg.count("SHA256:") == 2  # the known key and the offered one
    assert known.read_text() == f"[127.0.0.1]:{sftp_server.port} {key_type} {key}\n"
    store.close()


def test_missing_known_hosts_file_is_named(sftp_server: SshServer, sftp_root: Path,
                                           tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "known_hosts"
    store = sftp_server.store(sftp_root, known_hosts=missing)
    with pytest.raises(AuthError) as info:
        store.check()
    assert str(missing) in info.value.msg and "does not exist" in info.value.msg
    assert "ssh-keyscan" in info.value.msg
    assert not missing.exists()


# -- credentials --------------------------------------------------------------------------
def test_wrong_key_is_refused_and_not_retried(sftp_server: SshServer, sftp_root: Path,
                                              tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    stranger = keygen(tmp_path / "stranger")
    store = sftp_server.store(sftp_root, key_file=stranger, retries=3)
    with caplog.at_level(logging.WARNING, logger="silta.sftp"), \
            pytest.raises(AuthError) as info:
        store.stat("a.csv")
    assert not info.value.retriable and "refused the login" in info.value.msg
    assert str(stranger) in info.value.msg
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_missing_key_file_is_named(sftp_server: SshServer, sftp_root: Path,
                                   tmp_path: Path) -> None:
    store = sftp_server.store(sftp_root, key_file=tmp_path / "no_such_key")
    with pytest.raises(AuthError, match="does not exist"):
        store.stat("a.csv")


@pytest.mark.parametrize("how", ["password", "wrong passphrase", "passphrase not needed"])
def test_password_never_appears_in_errors_or_logs(sftp_server: SshServer, sftp_root: Path,
                                                  tmp_path: Path, how: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    if how == "password":  # this server takes keys only
        store = sftp_server.store(sftp_root, key_file=None, password=PASSWORD)
    elif how == "wrong passphrase":
        locked = keygen(tmp_path / "locked", passphrase="the-right-one")
        store = sftp_server.store(sftp_root, key_file=locked, password=PASSWORD)
    else:  # an unencrypted key that is not authorized, with a password set anyway
        store = sftp_server.store(sftp_root, key_file=keygen(tmp_path / "plain"),
                                  password=PASSWORD)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        store.check()
    assert not info.value.retriable
    no_secret_anywhere(str(info.value))
    no_secret_anywhere(repr(info.value.__cause__))
    no_secret_anywhere(repr(store))
    no_secret_anywhere(caplog.text)
    store.close()


def test_encrypted_key_with_its_passphrase_logs_in(sftp_server: SshServer, sftp_root: Path,
                                                   tmp_path: Path) -> None:
    locked = keygen(tmp_path / "locked", passphrase=PASSWORD)
    authorized = sftp_server.folder / "authorized_keys"
    before = authorized.read_text()
    authorized.write_text(before + locked.with_suffix(".pub").read_text())
    try:
        store = sftp_server.store(sftp_root, key_file=locked, password=PASSWORD)
        (sftp_root / "a.csv").write_text("x\n")
        assert [f.path for f in store.list("*.csv")] == ["a.csv"]
        store.close()
        no_key = sftp_server.store(sftp_root, key_file=locked)
        with pytest.raises(AuthError, match="encrypted; set the connector's password"):
            no_key.stat("a.csv")
    finally:
        authorized.write_text(before)


# -- outages ------------------------------------------------------------------------------
def test_store_starts_while_the_server_is_down_and_reconnects(sftp_server: SshServer,
                                                              sftp_root: Path) -> None:
    (sftp_root / "a.csv").write_bytes(b"id\n1\n")
    sftp_server.stop()
    try:
        store = sftp_server.store(sftp_root)  # lazy: constructing never connects
        with pytest.raises(StoreError) as info:
            store.stat("a.csv")
        assert info.value.retriable and "connection refused" in info.value.msg
    finally:
        sftp_server.start()
    assert store.stat("a.csv") is not None

    # Connected, then the server goes away: the same object recovers once it is back.
    sftp_server.stop()
    try:
        with pytest.raises(StoreError) as info:
            list(store.list("*.csv"))
        assert info.value.retriable
        with pytest.raises(StoreError):
            store.open_read("a.csv")
    finally:
        sftp_server.start()
    with store.open_read("a.csv") as f:
        assert f.read() == b"id\n1\n"
    assert "OpenSSH" in store.check()
    store.close()


def test_retries_with_backoff_ride_out_a_short_outage(sftp_server: SshServer,
                                                      sftp_root: Path) -> None:
    (sftp_root / "a.csv").write_bytes(b"id\n1\n")
    store = sftp_server.store(sftp_root, retries=8)
    store.backoff_seconds = 0.2  # the retry window: 0 + 0.2 + 0.4 + ... = 25 s
    assert store.stat("a.csv") is not None
    sftp_server.stop()
    restart = threading.Timer(0.5, sftp_server.start)
    restart.start()
    try:
        info = store.stat("a.csv")  # fails until the server is back, then succeeds
    finally:
        restart.join()
    assert info is not None and info.size == 5
    store.close()


def test_connection_cut_mid_read_fails_retriably_then_reads_whole(
        sftp_server: SshServer, sftp_root: Path, proxy: TcpProxy) -> None:
    data = random_file(sftp_root, "big.bin", 24 * MIB)
    store = sftp_server.store(sftp_root, port=proxy.port, retries=0)
    got = bytearray()
    with store.open_read("big.bin") as f:
        got += f.read(MIB)
        proxy.cut_after(4 * MIB)
        with pytest.raises(StoreError) as info:
            while chunk := f.read(MIB):
                got += chunk
    assert info.value.retriable and "connection lost" in info.value.msg
    assert MIB <= len(got) < len(data) and bytes(got) == data[:len(got)]  # never garbage
    with store.open_read("big.bin") as f:  # a new connection through the same proxy
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    store.close()


@pytest.mark.timeout(60)  # a hang would be the bug
def test_stalled_connection_times_out(sftp_server: SshServer, sftp_root: Path,
                                      proxy: TcpProxy) -> None:
    random_file(sftp_root, "big.bin", 24 * MIB)
    store = sftp_server.store(sftp_root, port=proxy.port, timeout_seconds=1.0, retries=0)
    with store.open_read("big.bin") as f:
        f.read(MIB)
        proxy.stall()
        with pytest.raises(StoreError) as info:
            while f.read(MIB):
                pass
    assert info.value.retriable and "no answer within 1 s" in info.value.msg
    with pytest.raises(StoreError) as info:  # still stalled: connecting times out too
        store.stat("big.bin")
    assert info.value.retriable
    proxy.resume()
    assert store.stat("big.bin") is not None
    store.close()


@pytest.mark.parametrize("on_staged", [False, True])
def test_write_through_a_cut_connection_leaves_no_file(sftp_server: SshServer,
                                                       sftp_root: Path, proxy: TcpProxy,
                                                       on_staged: bool) -> None:
    (sftp_root / "out.bin").write_bytes(b"old, whole\n")
    store = sftp_server.store(sftp_root, port=proxy.port, retries=2)
    store.stat("out.bin")  # connected: the cut hits the upload itself
    staged: list[Any] = []
    proxy.cut_after(2 * MIB, direction="up")
    with pytest.raises(StoreError) as info:
        store.write_atomic("out.bin", (os.urandom(MIB) for _ in range(8)),
                           on_staged=staged.append if on_staged else None)
    assert info.value.retriable
    assert staged == []
    assert (sftp_root / "out.bin").read_bytes() == b"old, whole\n"
    assert sorted(p.name for p in sftp_root.iterdir()) == ["out.bin"]  # temp removed
    store.close()


def test_cut_between_staging_and_rename_is_retried(sftp_server: SshServer, sftp_root: Path,
                                                   proxy: TcpProxy) -> None:
    store = sftp_server.store(sftp_root, port=proxy.port, retries=2)
    seen: list[Any] = []

    def staged(info: Any) -> None:
        seen.append(info)
        assert (sftp_root / info.path).read_bytes() == b"new\n"
        assert not (sftp_root / "out.csv").exists()
        proxy.cut()  # the rename needs a new connection

    out = store.write_atomic("out.csv", [b"new\n"], tmp_name=".out.csv.t1.tmp",
                             on_staged=staged)
    assert [i.path for i in seen] == [".out.csv.t1.tmp"] and out.path == "out.csv"
    assert (sftp_root / "out.csv").read_bytes() == b"new\n"
    assert not (sftp_root / ".out.csv.t1.tmp").exists()
    assert proxy.accepted == 2
    store.close()


def test_a_rename_whose_reply_was_lost_is_not_done_twice(sftp_server: SshServer,
                                                         sftp_root: Path,
                                                         proxy: TcpProxy) -> None:
    store = sftp_server.store(sftp_root, port=proxy.port, timeout_seconds=1.0, retries=6)
    resume = threading.Timer(1.5, proxy.resume)

    def staged(info: Any) -> None:
        # The rename request reaches the server, its reply does not: the store times out
        # and retries on a new connection, where the source is gone and the target there.
        proxy.stall("down")
        resume.start()

    try:
        out = store.write_atomic("out.csv", [b"new\n"], on_staged=staged)
    finally:
        resume.join()
    assert out.path == "out.csv" and (sftp_root / "out.csv").read_bytes() == b"new\n"
    assert sorted(p.name for p in sftp_root.iterdir()) == ["out.csv"]
    assert proxy.accepted >= 2
    store.close()


# -- untrusted names ----------------------------------------------------------------------
def test_hostile_names_on_the_server_are_skipped(sftp_server: SshServer, sftp_root: Path,
                                                 tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("password\n")
    (outside / "in_dir.csv").write_text("x\n")
    (sftp_root / "ok.csv").write_text("1\n")
    for name in ("new\nline.csv", "ctl\x01.csv", "back\\slash.csv", "esc\x1b[31m.csv"):
        (sftp_root / name).write_text("1\n")
    (sftp_root / "sub").mkdir()
    (sftp_root / "sub" / "tab\t.csv").write_text("1\n")
    (sftp_root / "sub" / "fine.csv").write_text("1\n")
    os.symlink(outside / "secret.csv", sftp_root / "leak.csv")
    os.symlink(outside, sftp_root / "linkdir")
    os.symlink("../ok.csv", sftp_root / "sub" / "alias.csv")  # inside the root: a file
    os.symlink(sftp_root / "gone.csv", sftp_root / "dangling.csv")
    store = sftp_server.store(sftp_root)
    with caplog.at_level(logging.WARNING, logger="silta.sftp"):
        listed = list(store.list("*.csv"))
        assert [f.path for f in listed if f.refused is None] == ["ok.csv"]
        # the refused ones are reported (shown escaped, never opened), not dropped
        assert sorted((f.path, f.size, f.refused) for f in listed if f.refused) == [
            ("back\\slash.csv", 0, "name 'back\\\\slash.csv' contains a backslash"),
            ("ctl\\x01.csv", 0, "name 'ctl\\x01.csv' contains a control character"),
            ("esc\\x1b[31m.csv", 0, "name 'esc\\x1b[31m.csv' contains a control character"),
            ("leak.csv", 0, "'leak.csv' is a symlink that leads outside the SFTP root; "
                            "refused"),
            ("new\\x0aline.csv", 0, "name 'new\\nline.csv' contains a control character")]
        assert [f.path for f in store.list("**/*.csv") if f.refused is None] == [
            "ok.csv", "sub/alias.csv", "sub/fine.csv"]
        assert [f.path for f in store.list("linkdir/*.csv")] == []
    warned = caplog.text
    assert "new\\x0aline.csv" in warned and "ctl\\x01.csv" in warned
    assert "'back\\slash.csv'" in warned and "'tab\\x09.csv' in sub" in warned
    assert "\x1b" not in warned and "\n line" not in warned
    assert "leak.csv" in warned and "outside" in warned
    assert store.stat("leak.csv") is None
    with pytest.raises(UnsafeNameError):
        store.open_read("leak.csv")
    with pytest.raises(UnsafeNameError):
        store.open_read("linkdir/secret.csv")
    assert store.stat("sub/alias.csv") is not None
    with pytest.raises(NotFoundError):
        store.open_read("dangling.csv")
    store.close()


def test_nothing_is_written_outside_the_root(sftp_server: SshServer, sftp_root: Path,
                                             tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("untouched\n")
    os.symlink(outside, sftp_root / "linkdir")
    # A temporary name planted in advance as a link to a file outside (publish's temporary
    # names are predictable): the write must replace the link, never write through it.
    os.symlink(victim, sftp_root / ".out.csv.silta-7.tmp")
    (sftp_root / "ok.csv").write_text("1\n")
    store = sftp_server.store(sftp_root)
    before = sorted(p.name for p in outside.iterdir())
    with pytest.raises(UnsafeNameError):
        store.write_atomic("../x.csv", [b"x"])
    with pytest.raises(UnsafeNameError):
        store.write_atomic("linkdir/x.csv", [b"x"])
    with pytest.raises(UnsafeNameError):
        store.write_atomic("linkdir/deeper/x.csv", [b"x"])
    with pytest.raises(UnsafeNameError):
        store.move("ok.csv", "linkdir/ok.csv")
    with pytest.raises(UnsafeNameError):
        store.write_atomic("ok2.csv", [b"x"], tmp_name="linkdir/.ok2.tmp")
    store.write_atomic("out.csv", [b"published\n"], tmp_name=".out.csv.silta-7.tmp")
    assert (sftp_root / "out.csv").read_text() == "published\n"
    assert victim.read_text() == "untouched\n"
    assert sorted(p.name for p in outside.iterdir()) == before
    assert (sftp_root / "ok.csv").exists()
    store.close()


# -- concurrency --------------------------------------------------------------------------
def test_threads_share_one_store(sftp_server: SshServer, sftp_root: Path) -> None:
    files = {f"f{i}.bin": random_file(sftp_root, f"f{i}.bin", 300_000 + i) for i in range(6)}
    store = sftp_server.store(sftp_root)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(10):
                name = f"f{(k + i) % 6}.bin"
                with store.open_read(name) as f:
                    assert f.read() == files[name]
                info = store.stat(name)
                assert info is not None and info.size == len(files[name])
                assert len(list(store.list("*.bin"))) == 6
        except BaseException as e:  # collected: an assert in a thread is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.close()


def test_an_early_close_leaves_the_channel_pool_usable(sftp_server: SshServer,
                                                       sftp_root: Path) -> None:
    data = random_file(sftp_root, "big.bin", 16 * MIB)
    store = sftp_server.store(sftp_root)
    for _ in range(5):  # the probe reads the first MiB only, then closes
        with store.open_read("big.bin") as f:
            assert f.read(1000) == data[:1000]
    with store.open_read("big.bin") as f:
        assert f.read() == data
    assert isinstance(store, SftpStore) and "OpenSSH" in store.check()
    store.close()


def test_reads_adapt_when_the_server_caps_the_request_size(sftp_server: SshServer,
                                                           sftp_root: Path) -> None:
    data = random_file(sftp_root, "big.bin", 5 * MIB + 12_345)
    store = sftp_server.store(sftp_root)
    store.check()
    # Pretend the server announced 4 MiB reads: OpenSSH answers each with 255 KiB (short
    # replies), and the stream must fill every gap in order.
    # (White-box: the limits live on the connection, the pooled channels carry them.)
    store.REQUEST_SIZE = 4 * MIB
    assert store._conn is not None
    store._conn.limits = (4 * MIB, 32 * 1024)
    for channel in store._idle:
        channel.close()
    store._idle.clear()
    with store.open_read("big.bin") as f:
        assert f.raw._s.max_read == 4 * MIB
        assert f.read() == data
        assert f.raw._request < 4 * MIB  # it adapted
    store.close()


def test_a_file_growing_while_read_is_read_to_its_end(sftp_server: SshServer,
                                                      sftp_root: Path) -> None:
    data = random_file(sftp_root, "grow.bin", 3 * MIB)
    more = os.urandom(MIB + 7)
    store = sftp_server.store(sftp_root)
    with store.open_read("grow.bin") as f:
        head = f.read(100)
        with open(sftp_root / "grow.bin", "ab") as local:
            local.write(more)
        rest = f.read()
    assert head + rest == data + more  # no gap where the size seen at open ended
    store.close()
