"""Hostile input: names, identifiers, config values and model artifacts an attacker or a
careless exporter hands to Silta, through the real `silta` CLI and real servers.

What it breaks, and what must hold each time:

- remote file names (folder and a real sshd) holding ESC sequences, CR/LF, DEL, a C1 CSI,
  Rich markup, ``..``-lookalikes, backslashes, 244-byte names and bytes that are not UTF-8,
  and file content whose parse error quotes escape sequences: each file lands once with
  its exact name in ``_silta_source`` or is skipped with a logged reason and left in place;
  the rest lands; no raw ESC reaches stdout or stderr of any command; nothing is written
  outside the configured roots;
- the name validator with NUL, ``..`` parts and undecodable bytes, and a publish whose
  rows hold path-like values and NUL: the values are data, never a file name;
- SQL identifiers carrying injection, in config (refused at load, exit 2, key and line
  named) and in the data (column names from a source table, published again: quoted, so
  the victim table keeps its rows), on SQLite and PostgreSQL;
- config values of the wrong type: exit 2 with file, line and key, no traceback, nothing
  run; a sync that fails at run time among good ones: the others land, it is recorded
  failed and alerted, and the alert resolves once it works;
- a trained model's artifact flipped or replaced by a pickle: the prediction is refused
  (sha256), nothing is unpickled or written, the run is failed and alerted with a message
  naming the model version and a way out; with the file restored the run recovers.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest

from agent.ml.registry import ModelRegistry
from connectors.errors import UnsafeNameError
from connectors.lake import DeltaLake
from connectors.names import check_relative_path, safe_display
from tests.agent.ml_env import MlEnv
from tests.agent.test_sync_sql import SqlSide, open_side
from tests.conftest import dedent, duck_rows
from tests.e2e._cli import Result, delta_table, ledger, silta
from tests.servers.sshd import SshServer

pytestmark = pytest.mark.timeout(120)

ESC = "\x1b"


# -- helpers -------------------------------------------------------------------------------
def _tree(root: Path) -> set[bytes]:
    """Every path under ``root`` (bytes: some names are not UTF-8), relative to it."""
    base = os.fsencode(root)
    out: set[bytes] = set()
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(folder, name), base))
    return out


def _written_outside(before: set[bytes], after: set[bytes], roots: list[str]) -> list[bytes]:
    """Paths that appeared and lie under none of ``roots`` (relative, as in ``_tree``)."""
    prefixes = [os.fsencode(r) for r in roots]
    return sorted(p for p in after - before
                  if not any(p == r or p.startswith(r + b"/") for r in prefixes))


def _clean(r: Result) -> None:
    """No raw escape sequence, no traceback, in what a command printed."""
    assert ESC not in r.out, r
    assert ESC not in r.err, r
    assert "\x9b" not in r.out and "\x9b" not in r.err, r
    assert "Traceback" not in r.err, r


def _runs(state: Path) -> list[dict[str, Any]]:
    return ledger(state, "SELECT kind, name, status, files, rows, error FROM runs "
                         "ORDER BY started_at, rowid")


def _alerts(state: Path) -> list[tuple[str, str, str, str, int]]:
    return [(a["monitor"], a["check_name"], a["target"], a["state"], a["count"])
            for a in ledger(state, "SELECT * FROM alerts ORDER BY id")]


def _views(cwd: Path, config: Path, commands: list[list[str]]) -> list[Result]:
    """Read-only commands, a few at a time (each is a process start-up, mostly)."""
    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda args: silta(cwd, *args, "--config", config), commands))


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (1.7e9, 1.7e9))  # long settled


# -- 1. remote names -----------------------------------------------------------------------
#: names a POSIX file system takes that must land exactly as they are (relative, bytes);
#: the first is a folder "[bold red]x[" holding "].csv": Rich markup with a closing tag
LANDS = [b"[bold red]x[/].csv", b"[link=https:evil.example]click.csv", b"a..b.csv",
         b"x...csv", b"L" * 251 + b".csv", "ääkköset.csv".encode()]  # 255 bytes: NAME_MAX
#: a file at NAME_MAX that cannot be parsed: its reason file cannot be written next to it
LONG_BROKEN = b"Q" * 251 + b".csv"
#: names refused at listing, with the reason the log gives
REFUSED = {
    b"esc\x1b[31mred\x1b[0m.csv": "contains a control character",
    b"cr\rlf\n.csv": "contains a control character",
    b"del\x7f.csv": "contains a control character",
    "csi\x9b31m.csv".encode(): "contains a control character",  # C1: CSI to a terminal
    b"back\\slash.csv": "contains a backslash",
    b"bad\xff\xfeutf8.csv": "is not valid UTF-8",
}
#: hidden names (a leading dot, as `..x`): never read, by design, and left alone
HIDDEN = [b"..x.csv", b"...csv"]


def _place(root: Path) -> dict[bytes, int]:
    """The hostile files under ``root``; returns each name's row id."""
    ids: dict[bytes, int] = {}
    for i, name in enumerate([*LANDS, *REFUSED, *HIDDEN], 1):
        _write(os.path.join(os.fsencode(root), name), f"id,v\n{i},n{i}\n".encode())
        ids[name] = i
    return ids


def _refusal_reason(name: bytes) -> str:
    """The validator's own words for ``name`` (what the log line carries)."""
    text = os.fsdecode(name)
    with pytest.raises(UnsafeNameError) as e:
        check_relative_path(text)
    assert REFUSED[name] in e.value.msg
    return e.value.msg


def _landed(duck: Any, table: Path) -> set[tuple[str, int]]:
    """(source, id) of every row, read by deltalake and by DuckDB, which must agree."""
    data = delta_table(table)
    by_deltalake = sorted(zip(data.column("_silta_source").to_pylist(),
                              data.column("id").to_pylist(), strict=True))
    by_duckdb = sorted(duck_rows(duck, table, "SELECT _silta_source, id FROM t"))
    assert by_deltalake == by_duckdb
    assert len(by_deltalake) == len(set(by_deltalake))  # nothing twice
    return set(by_deltalake)


def test_hostile_file_names_in_a_folder_land_exactly_or_are_refused(tmp_path: Path,
                                                                    duck: Any) -> None:
    work, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.csv").write_bytes(b"id,v\n999,secret\n")
    inbox = work / "inbox"
    ids = _place(inbox)
    # content that is hostile too: a value that is an escape sequence (it lands), and a
    # row whose parse error quotes an escape sequence (it is quarantined)
    _write(os.fsencode(inbox / "values.csv"), b'id,v\n100,"\x1b]0;pwned\x07\x1b[2J"\n')
    _write(os.fsencode(inbox / "broken.csv"), b"id,v\n200,x,\x1b[31mEVIL\n")
    _write(os.path.join(os.fsencode(inbox), LONG_BROKEN), b"id,v\n300,x,y\n")
    os.symlink(outside / "canary.csv", inbox / "leak.csv")  # leads outside the root
    config = work / "silta.toml"
    config.write_text(dedent('''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.inbox]
        type = "folder"
        path = "inbox"
        [[syncs]]
        name = "s"
        source = "inbox:**/*.csv"
        target = "lake:raw/t"
        settle_seconds = 0
    '''), encoding="utf-8")
    inbox_before = {p: (inbox / os.fsdecode(p)).read_bytes() for p in _tree(inbox)
                    if (inbox / os.fsdecode(p)).is_file()}
    before = _tree(tmp_path)

    r = silta(work, "sync", "run", "s", "--config", config)

    _clean(r)
    assert r.code == 1, r  # a file was set aside: the run is partial
    reason = "CSV parse error: Expected 2 columns, got 3: 200,x,\\x1b[31mEVIL"
    assert f"s: quarantined broken.csv: {reason}\n" in r.out, r
    long_broken = os.fsdecode(LONG_BROKEN)
    assert (f"s: quarantined {long_broken}: CSV parse error: Expected 2 columns, got 3: "
            "300,x,y\n") in r.out, r
    # A name at NAME_MAX cannot get its reason file (used to fail the whole run with an
    # internal OSError from FolderStore.write_atomic): it stays where it is, refused by
    # its identity in the ledger, and the other files land.
    assert (f"WARNING silta.sync sync=s file={long_broken} could not be moved to "
            f"quarantine: writing '.silta-quarantine/{long_broken}.reason.txt': File name "
            "too long\n") in r.err, r
    for name in REFUSED:
        shown = safe_display(os.fsdecode(name))
        assert (f"WARNING silta.folder skipping {shown}: its name is unsafe "
                f"({_refusal_reason(name)}); rename the file to sync it\n") in r.err, r

    # every file that may land did, once, under its exact name; nothing else did
    expected = {(f"inbox:{os.fsdecode(n)}", ids[n]) for n in LANDS} | {("inbox:values.csv",
                                                                         100)}
    assert _landed(duck, work / "lake" / "raw" / "t") == expected
    value = duck_rows(duck, work / "lake" / "raw" / "t", "SELECT v FROM t WHERE id = 100")
    assert value == [("\x1b]0;pwned\x07\x1b[2J",)]  # the data itself is kept as it was

    # the source is untouched (the bad file moved aside, with its reason next to it)
    for rel, data in inbox_before.items():
        path = inbox / os.fsdecode(rel)
        if rel == b"broken.csv":
            assert not path.exists()
            assert (inbox / ".silta-quarantine" / "broken.csv").read_bytes() == data
        else:
            assert path.read_bytes() == data, rel
    note = (inbox / ".silta-quarantine" / "broken.csv.reason.txt").read_text()
    assert note.splitlines()[0] == "file: broken.csv"
    assert note.splitlines()[-1] == ("reason: CSV parse error: Expected 2 columns, got 3: "
                                     "200,x,\x1b[31mEVIL")  # a file: the exact text
    assert _written_outside(before, _tree(tmp_path), [
        "work/lake", "work/state", "work/inbox/.silta-quarantine"]) == []
    assert (outside / "canary.csv").read_bytes() == b"id,v\n999,secret\n"

    # recorded and alerted: a partial run with the reasons, a `quarantined` alert, and a
    # `refused_names` one for the names it would not read
    quarantined = (f"{long_broken}: CSV parse error: Expected 2 columns, got 3: 300,x,y; "
                   "broken.csv: CSV parse error: Expected 2 columns, got 3: 200,x,"
                   "\x1b[31mEVIL")
    (run,) = _runs(work / "state")
    assert {k: run[k] for k in ("kind", "name", "status", "files", "rows")} == {
        "kind": "sync", "name": "s", "status": "partial", "files": len(LANDS) + 1,
        "rows": len(LANDS) + 1}
    first, *refused = run["error"].split("; not read: ")
    assert first == quarantined
    assert sorted(refused) == sorted(
        f"{safe_display(os.fsdecode(n))}: {_refusal_reason(n)}" for n in REFUSED)
    error = run["error"]
    assert _alerts(work / "state") == [("agent", "quarantined", "sync:s", "firing", 1),
                                       ("agent", "refused_names", "sync:s", "firing", 1)]
    assert ledger(work / "state", "SELECT path FROM files WHERE status = 'quarantined' "
                  "ORDER BY path") == [{"path": long_broken}, {"path": "broken.csv"}]

    # every view that shows these names or that text escapes it, and keeps markup literal
    listed = silta(work, "runs", "list", "--json", "--config", config)
    assert listed.code == 0, listed
    views = _views(work, config, [
        ["tables", "show", "raw/t", "--limit", "50"], ["runs", "list"],
        ["runs", "show", listed.json()[0]["run_id"]], ["status"], ["alerts", "list"],
        ["alerts", "list", "--json"], ["lineage", "raw/t"], ["tables", "history", "raw/t"]])
    for out in views:
        _clean(out)
        assert out.code == 0, out
    shown, run_shown, alerts = views[0], views[2], views[5]
    assert " inbox:[bold red]x[/].csv " in shown.out
    assert " inbox:[link=https:evil.example]click.csv " in shown.out
    assert " \\x1b]0;pwned\\x07\\x1b[2J " in shown.out
    assert "200,x,\\x1b[31mEVIL" in run_shown.out, run_shown  # the reason, escaped
    summary = f"sync s set 2 file(s) aside as unreadable: {error}"
    by_check = {a["check"]: a["summary"] for a in alerts.json()}
    assert by_check["quarantined"] == summary[:299] + "…"  # 300 at most
    assert by_check["refused_names"].startswith(
        f"sync s does not read {len(REFUSED)} file(s) whose names are unsafe")
    assert ESC not in alerts.out  # JSON escapes it (\u001b)


def _sftp_config(folder: Path, server: SshServer, root: Path) -> Path:
    path = folder / "silta.toml"
    path.write_text(dedent(f'''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.inbox]
        type = "sftp"
        host = "{server.host}"
        port = {server.port}
        username = "{server.username}"
        key_file = "{server.key_file}"
        known_hosts = "{server.known_hosts}"
        root = "{root}"
        timeout_seconds = 10.0
        retries = 1
        [[syncs]]
        name = "s"
        source = "inbox:**/*.csv"
        target = "lake:raw/t"
        settle_seconds = 0
    '''), encoding="utf-8")
    return path


def test_hostile_file_names_on_an_sftp_server_land_exactly_or_are_refused(
        sftp_server: SshServer, sftp_root: Path, tmp_path: Path, duck: Any) -> None:
    ids = _place(sftp_root)
    os.symlink(tmp_path, sftp_root / "up.csv")  # a link out of the root, as a name
    config = _sftp_config(tmp_path, sftp_server, sftp_root)
    remote_before = {p: (sftp_root / os.fsdecode(p)).read_bytes() for p in _tree(sftp_root)
                     if (sftp_root / os.fsdecode(p)).is_file()}
    before = _tree(tmp_path)

    r = silta(tmp_path, "sync", "run", "s", "--json", "--config", config)

    # One name that is not UTF-8 used to fail the whole listing (UnicodeDecodeError out
    # of paramiko): no file of the folder could land.
    _clean(r)
    assert r.code == 0, r
    assert [(o["status"], o["files"], o["rows"]) for o in r.json()] == [
        ("ok", len(LANDS), len(LANDS))]
    where = f"sftp {sftp_server.username}@{sftp_server.host}:{sftp_server.port}"
    for name in REFUSED:
        if REFUSED[name] == "is not valid UTF-8":
            line = f"{where}: skipping a name in . that is not UTF-8: {name!r}\n"
        else:
            line = f"{where}: skipping unsafe name '{safe_display(os.fsdecode(name))}' in .\n"
        assert line in r.err, (line, r)
    assert _landed(duck, tmp_path / "lake" / "raw" / "t") == {
        (f"inbox:{os.fsdecode(n)}", ids[n]) for n in LANDS}
    for rel, data in remote_before.items():
        assert (sftp_root / os.fsdecode(rel)).read_bytes() == data, rel
    assert _written_outside(before, _tree(tmp_path), ["lake", "state"]) == []
    # the run is ok (the rest landed) and says what it did not read; an alert names them
    (run,) = _runs(tmp_path / "state")
    assert {k: run[k] for k in ("kind", "name", "status", "files", "rows")} == {
        "kind": "sync", "name": "s", "status": "ok", "files": len(LANDS), "rows": len(LANDS)}
    assert run["error"].startswith("not read: ")
    not_read = sorted(part.split(": ", 1)[0] for part in run["error"][len("not read: "):]
                      .split("; not read: "))
    assert not_read == sorted([*(repr(n) if REFUSED[n] == "is not valid UTF-8"
                                 else safe_display(os.fsdecode(n)) for n in REFUSED),
                               "up.csv"])
    assert "\x1b" not in run["error"] and "\r" not in run["error"]
    assert _alerts(tmp_path / "state") == [("agent", "refused_names", "sync:s", "firing", 1)]


@pytest.mark.parametrize(("bad", "why"), [
    ("a\x00b.csv", "contains a control character"),
    ("..", "has an empty or '..' part"),
    ("../x", "has an empty or '..' part"),
    ("a/../../b", "has an empty or '..' part"),
    ("../../etc/x", "has an empty or '..' part"),
    ("out/..", "has an empty or '..' part"),
    ("x\\..\\y", "contains a backslash"),
    ("/etc/x", "is absolute"),
    ("csi\x9b2J", "contains a control character"),
    (os.fsdecode(b"bad\xff.csv"), "is not valid UTF-8"),
])
def test_the_name_validator_refuses_nul_dotdot_and_undecodable_names(bad: str, why: str
                                                                     ) -> None:
    with pytest.raises(UnsafeNameError) as e:
        check_relative_path(bad)
    assert why in e.value.msg
    # the message itself is printable: it goes to logs and terminals
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or 0xd800 <= ord(c) <= 0xdfff
                   for c in e.value.msg), e.value.msg


@pytest.mark.parametrize("good", ["..x", "a..b", "x..", "...", "[bold red]x[/].csv",
                                  "[link=https:evil.example]y"])
def test_names_that_only_look_like_dotdot_pass(good: str) -> None:
    assert check_relative_path(good) == good


def test_undecodable_bytes_and_c1_controls_are_displayed_escaped() -> None:
    assert safe_display(os.fsdecode(b"bad\xff\xfe.csv")) == "bad\\xff\\xfe.csv"
    assert safe_display("csi\x9b2J\x7f") == "csi\\x9b2J\\x7f"


def test_path_like_values_in_published_rows_stay_data(tmp_path: Path, duck: Any) -> None:
    # Publish names its files from the config's template only ({version}, {date}); rows
    # whose values look like paths, or hold NUL, must end up inside the one file.
    values = ["../../etc/x", "a/../../b", "..", "/etc/passwd", "nul\x00inside", "x\\..\\y"]
    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir()
    rows = "".join(f'{i},"{v}"\n' for i, v in enumerate(values, 1)).encode()
    _write(os.fsencode(tmp_path / "inbox" / "paths.csv"), b"id,where\n" + rows)
    base = dedent('''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.inbox]
        type = "folder"
        path = "inbox"
        [connectors.outbox]
        type = "folder"
        path = "outbox"
        [[syncs]]
        name = "land"
        source = "inbox:*.csv"
        target = "lake:raw/paths"
        settle_seconds = 0
        [[syncs]]
        name = "pub"
        source = "lake:raw/paths"
        after = ["land"]
    ''')
    config = tmp_path / "silta.toml"
    # a template that climbs out of the root, or is absolute, is refused at load
    config.write_text(base + 'target = "outbox:../../etc/x_{version}.csv"\n' + dedent('''
        [[syncs]]
        name = "pub_abs"
        source = "lake:raw/paths"
        target = "outbox:/etc/x_{version}.csv"
    '''), "utf-8")
    bad = silta(tmp_path, "agent", "run", "--once", "--config", config)
    _clean(bad)
    assert bad.code == 2, bad
    assert bad.err.splitlines()[1:3] == [
        f"  {config}:21: syncs[1].target: path '../../etc/x_{{version}}.csv' has an empty "
        "or '..' part",
        f"  {config}:25: syncs[2].target: path '/etc/x_{{version}}.csv' is absolute; give "
        "it relative to the root"], bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inbox", "outbox", "silta.toml"]

    config.write_text(base + 'target = "outbox:out/paths_{version}.csv"\n', "utf-8")
    before = _tree(tmp_path)
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)

    _clean(r)
    assert r.code == 0, r
    assert [(o["sync"], o["status"], o["rows"]) for o in r.json()] == [
        ("land", "ok", 6), ("pub", "ok", 6)]
    assert _tree(tmp_path / "outbox") == {b"out", b"out/paths_0.csv"}
    assert _written_outside(before, _tree(tmp_path), ["lake", "state", "outbox/out"]) == []
    back = pacsv.read_csv(tmp_path / "outbox" / "out" / "paths_0.csv")
    assert sorted(zip(back.column("id").to_pylist(), back.column("where").to_pylist(),
                      strict=True)) == list(enumerate(values, 1))
    landed = delta_table(tmp_path / "lake" / "raw" / "paths")
    assert sorted(zip(landed.column("id").to_pylist(), landed.column("where").to_pylist(),
                      strict=True)) == list(enumerate(values, 1))
    assert sorted(duck_rows(duck, tmp_path / "lake" / "raw" / "paths",
                            "SELECT id, \"where\" FROM t")) == list(enumerate(values, 1))


# -- 2. SQL identifiers carrying injection ---------------------------------------------------
HOSTILE_COLUMN = 'v"; DROP TABLE victim; --'
HOSTILE_VALUES = ["'); DROP TABLE victim; --", "%s %(x)s", ":id", 'q"uote']


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
       ) -> Iterator[SqlSide]:
    side = open_side(request.param, tmp_path, request, monkeypatch)
    side.execute("CREATE TABLE victim (id INTEGER PRIMARY KEY, v TEXT)")
    side.insert("victim", [(1, "a"), (2, "b"), (3, "c")])
    quoted = HOSTILE_COLUMN.replace('"', '""')
    side.execute(f'CREATE TABLE src (id INTEGER PRIMARY KEY, "{quoted}" TEXT)')
    side.insert("src", list(enumerate(HOSTILE_VALUES, 1)))
    yield side
    side.close()


def _columns(side: SqlSide, table: str) -> list[str]:
    if side.kind == "sqlite":
        return [r[1] for r in side.rows(f"PRAGMA table_info({table})")]
    return [r[0] for r in side.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        f"AND table_name = '{table}' ORDER BY ordinal_position")]


def _sql_config(root: Path, side: SqlSide, syncs: str) -> Path:
    password = 'password = "${PGPASS}"\n' if side.kind == "postgresql" else ""
    path = root / "silta.toml"
    path.write_text(dedent('''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.db]
        type = "sql"
    ''') + f"url = {json.dumps(side.url)}\n{password}" + dedent(syncs), encoding="utf-8")
    return path


INJECTED_CONFIG = '''
    [[syncs]]
    name = "quoted"
    source = 'db:src"; DROP TABLE victim; --'
    target = "lake:raw/a"
    mode = "snapshot"
    [[syncs]]
    name = "stacked"
    source = "db:src; DROP TABLE victim"
    target = "lake:raw/b"
    mode = "snapshot"
    [[syncs]]
    name = "in_schema"
    source = 'db:public"; DROP TABLE victim; --.src'
    target = "lake:raw/c"
    mode = "snapshot"
    [[syncs]]
    name = "in_key"
    source = "db:src"
    target = "lake:raw/d"
    mode = "merge"
    key = ['id"; DROP TABLE victim; --']
    [[syncs]]
    name = "in_watermark"
    source = "db:src"
    target = "lake:raw/e"
    watermark = "id; DROP TABLE victim"
    [[syncs]]
    name = "out"
    source = "lake:raw/a"
    target = "db:published; DROP TABLE victim"
    columns = ['id) VALUES (1); DROP TABLE victim; --']
'''


def test_sql_injection_in_config_is_refused_and_in_data_is_quoted(db: SqlSide, tmp_path: Path,
                                                                  duck: Any) -> None:
    victim = [(1, "a"), (2, "b"), (3, "c")]
    config = _sql_config(tmp_path, db, INJECTED_CONFIG)
    text = config.read_text()

    def line(needle: str) -> int:
        return next(n for n, t in enumerate(text.splitlines(), 1) if needle in t)

    plain = "is not a SQL table name: use `table` or `schema.table` with letters, digits and `_`"
    expected = [
        (line("db:src\""), "syncs[0].source", f"""'src"; DROP TABLE victim; --' {plain}"""),
        (line("db:src;"), "syncs[1].source", f"'src; DROP TABLE victim' {plain}"),
        (line("db:public"), "syncs[2].source",
         f"""'public"; DROP TABLE victim; --.src' {plain}"""),
        (line("key = "), "syncs[3].key",
         """column 'id"; DROP TABLE victim; --' is not a plain column name"""),
        (line("watermark = "), "syncs[4].watermark",
         "column 'id; DROP TABLE victim' is not a plain column name"),
        (line("db:published"), "syncs[5].target", f"'published; DROP TABLE victim' {plain}"),
        (line("columns = "), "syncs[5].columns",
         "column 'id) VALUES (1); DROP TABLE victim; --' is not a plain column name"),
    ]
    r = silta(tmp_path, "agent", "run", "--once", "--config", config)
    _clean(r)
    assert r.code == 2, r
    problems = r.err.splitlines()
    assert problems[0] == f"silta: {config}: {len(expected)} problem(s)", r
    assert problems[1:-1] == [f"  {config}:{n}: {key}: {what}" for n, key, what in expected], r
    assert problems[-1] == "fix these and run `silta config check` again"
    assert db.rows("SELECT id, v FROM victim ORDER BY id") == victim
    assert not (tmp_path / "lake").exists()  # nothing ran

    # Names that come from the data (a source table's column) and values are quoted and
    # bound: the column lands in the lake and in the published table exactly as it is.
    config = _sql_config(tmp_path, db, '''
        [[syncs]]
        name = "land"
        source = "db:src"
        target = "lake:raw/src"
        mode = "snapshot"
        [[syncs]]
        name = "pub"
        source = "lake:raw/src"
        target = "db:published"
        mode = "append"
        after = ["land"]
    ''')
    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", config)

    _clean(r)
    assert r.code == 0, r
    assert [(o["sync"], o["status"], o["rows"]) for o in r.json()] == [
        ("land", "ok", 4), ("pub", "ok", 4)]
    assert db.rows("SELECT id, v FROM victim ORDER BY id") == victim
    quoted = HOSTILE_COLUMN.replace('"', '""')
    assert db.rows(f'SELECT id, "{quoted}" FROM published ORDER BY id') == list(
        enumerate(HOSTILE_VALUES, 1))
    assert _columns(db, "published") == ["id", HOSTILE_COLUMN]
    table = tmp_path / "lake" / "raw" / "src"
    lake_cols = [c for c in delta_table(table).column_names if not c.startswith("_silta_")]
    assert lake_cols == ["id", HOSTILE_COLUMN]
    assert sorted(duck_rows(duck, table, f'SELECT id, "{quoted}" FROM t')) == list(
        enumerate(HOSTILE_VALUES, 1))


# -- 3. config values of the wrong type --------------------------------------------------------
WRONG_TYPES = dedent('''
    [agent]
    name = "a"
    state_dir = "state"
    ml_workers = "two"

    [lake]
    uri = ["lake"]

    [connectors.inbox]
    type = "folder"
    path = "inbox"

    [[syncs]]
    name = "good"
    source = "inbox:good/*.csv"
    target = "lake:raw/good"
    settle_seconds = 0

    [[syncs]]
    name = "bad"
    source = "inbox:bad/*.csv"
    target = "lake:raw/bad"
    batch_max_files = -5
    settle_seconds = "soon"
    schedule = "61 * * * *"
    csv = { delimeter = ";" }
    key = "id"

    [models.coder]
    training_table = "raw/good"
    key = ["id"]
    label = "code"
    text_features = ["title"]
    min_confidence = 2
    split = { test_fraction = "half" }

    [[trainings]]
    name = "train_coder"
    model = "coder"
    schedule = "every monday"

    [[predictions]]
    name = "code"
    model = "coder@champion"
    input = "raw/good"
    output = "predictions/codes"
    batch_rows = -1
    top_k = "three"
''')


def test_config_values_of_the_wrong_type_are_refused_with_file_line_and_key(
        tmp_path: Path) -> None:
    path = tmp_path / "silta.toml"
    path.write_text(WRONG_TYPES, encoding="utf-8")
    _write(os.fsencode(tmp_path / "inbox" / "good" / "a.csv"), b"id,title,code\n1,x,y\n")

    def line(needle: str) -> int:
        return next(n for n, t in enumerate(WRONG_TYPES.splitlines(), 1) if t.startswith(needle))

    expected = [
        (line("ml_workers"), "agent.ml_workers", "Input should be a valid integer, unable to "
         "parse string as an integer (got 'two')"),
        (line("uri"), "lake.uri", "Input should be a valid string"),
        (line("batch_max_files"), "syncs[1].batch_max_files",
         "Input should be greater than or equal to 1 (got -5)"),
        (line('settle_seconds = "soon"'), "syncs[1].settle_seconds",
         "Input should be a valid number, unable to parse string as a number (got 'soon')"),
        (line('schedule = "61'), "syncs[1].schedule",
         "not a cron expression (Error validating expression '61': the last value (61) is "
         "higher than the maximum value (59)); use 5 fields like `*/5 * * * *`"),
        (line("csv = "), "syncs[1].csv.delimeter", "unknown key; did you mean 'delimiter'?"),
        (line('key = "id"'), "syncs[1].key", "Input should be a valid list (got 'id')"),
        (line("min_confidence"), "models.coder.min_confidence",
         "Input should be less than or equal to 1 (got 2)"),
        (line("split = "), "models.coder.split.test_fraction",
         "Input should be a valid number, unable to parse string as a number (got 'half')"),
        (line('schedule = "every'), "trainings[0].schedule",
         "not a cron expression (Wrong number of fields; got 2, expected 5); use 5 fields "
         "like `*/5 * * * *`"),
        (line("batch_rows"), "predictions[0].batch_rows",
         "Input should be greater than or equal to 1 (got -1)"),
        (line("top_k"), "predictions[0].top_k",
         "Input should be a valid integer, unable to parse string as an integer (got 'three')"),
    ]
    outputs = []
    for args in (["config", "check"], ["agent", "run", "--once"]):
        r = silta(tmp_path, *args, "--config", path)
        _clean(r)
        assert r.code == 2, r
        assert r.out == ""
        lines = r.err.splitlines()
        assert lines[0] == f"silta: {path}: {len(expected)} problem(s)", r
        assert lines[1:-1] == [f"  {path}:{n}: {key}: {what}" for n, key, what in expected], r
        assert lines[-1] == "fix these and run `silta config check` again"
        outputs.append(r.err)
    assert outputs[0] == outputs[1]
    # one bad sync stops the whole config: nothing ran, not even the good sync
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inbox", "silta.toml"]

    # file-level problems name the file and the line, and say what to do
    path.write_bytes(b'[agent]\nname = "a"\nnote = "caf\xe9"\n')
    r = silta(tmp_path, "config", "check", "--config", path)
    _clean(r)
    assert (r.code, r.err) == (2, f"silta: {path}:3: not UTF-8 (byte 0xe9); save the file as "
                                  "UTF-8\nfix these and run `silta config check` again\n"), r
    path.write_bytes(b'\xef\xbb\xbf[agent]\nname = "a"\n[lake]\nuri = "lake"\n')
    r = silta(tmp_path, "agent", "run", "--once", "--config", path)
    _clean(r)
    assert (r.code, r.err) == (2, f"silta: {path}:1: starts with a byte order mark (BOM), "
                                  "which TOML does not allow; save the file as UTF-8 without "
                                  "BOM\nfix these and run `silta config check` again\n"), r


def test_a_sync_that_fails_at_run_time_does_not_stop_the_others(tmp_path: Path,
                                                                duck: Any) -> None:
    # Valid config, but one sync's folder does not exist: the others must land, and the
    # failure must be recorded, alerted, and resolved once the folder is there.
    for name in ("one", "three"):
        _write(os.fsencode(tmp_path / name / "a.csv"), f"id\n{len(name)}\n".encode())
    path = tmp_path / "silta.toml"
    path.write_text(dedent('''
        [agent]
        name = "test-agent"
        state_dir = "state"
        [lake]
        uri = "lake"
        [connectors.one]
        type = "folder"
        path = "one"
        [connectors.two]
        type = "folder"
        path = "two"
        [connectors.three]
        type = "folder"
        path = "three"
    ''') + "".join(f'[[syncs]]\nname = "s_{n}"\nsource = "{n}:*.csv"\n'
                   f'target = "lake:raw/{n}"\nsettle_seconds = 0\n'
                   for n in ("one", "two", "three")), encoding="utf-8")

    r = silta(tmp_path, "agent", "run", "--once", "--json", "--config", path)

    _clean(r)
    assert r.code == 1, r
    missing = (f"folder {str(tmp_path / 'two')!r} does not exist; create it or fix the "
               "connector's path")
    assert [(o["sync"], o["status"], o["rows"], o["error"]) for o in r.json()] == [
        ("s_one", "ok", 1, None), ("s_two", "failed", 0, missing), ("s_three", "ok", 1, None)]
    for name, ident in (("one", 3), ("three", 5)):
        assert duck_rows(duck, tmp_path / "lake" / "raw" / name, "SELECT id FROM t") == [
            (ident,)]
        assert delta_table(tmp_path / "lake" / "raw" / name).column("id").to_pylist() == [
            ident]
    assert not (tmp_path / "lake" / "raw" / "two").exists()
    # independent syncs run side by side: their runs are compared as a set
    assert sorted((x["name"], x["status"], x["error"]) for x in _runs(tmp_path / "state")
                  ) == [("s_one", "ok", None), ("s_three", "ok", None),
                        ("s_two", "failed", missing)]
    assert _alerts(tmp_path / "state") == [("agent", "run_failed", "sync:s_two", "firing", 1)]

    _write(os.fsencode(tmp_path / "two" / "a.csv"), b"id\n2\n")
    again = silta(tmp_path, "agent", "run", "--once", "--json", "--config", path)
    assert again.code == 0, again
    assert [(o["sync"], o["status"], o["rows"]) for o in again.json()] == [
        ("s_one", "ok", 0), ("s_two", "ok", 1), ("s_three", "ok", 0)]
    assert duck_rows(duck, tmp_path / "lake" / "raw" / "two", "SELECT id FROM t") == [(2,)]
    assert delta_table(tmp_path / "lake" / "raw" / "two").column("id").to_pylist() == [2]
    assert _alerts(tmp_path / "state") == [("agent", "run_failed", "sync:s_two", "resolved",
                                            1)]


# -- 4. a tampered model artifact --------------------------------------------------------------
def _predict(env: MlEnv) -> Result:
    return silta(env.root, "jobs", "run", "code_answers", "--config", env.config_path)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_tampered_model_artifact_is_refused_recorded_and_alerted(tmp_path: Path,
                                                                   duck: Any) -> None:
    env = MlEnv(tmp_path)
    env.sync()
    assert env.train().status == "ok"
    env.close()
    lake = DeltaLake(str(tmp_path / "lake"))
    version = ModelRegistry(lake).get("coder", 1)
    artifact = Path(version.artifact.uri)
    assert artifact == tmp_path / "lake" / "_silta" / "artifacts" / "coder" / "1" / "model.skops"
    original = artifact.read_bytes()
    expected_sha = version.artifact.sha256
    state = tmp_path / "state"
    marker = tmp_path / "unpickled"

    def refusal(data: bytes) -> str:
        return (f"coder@1 (coder@champion) refused, nothing predicted: model artifact "
                f"'{artifact}' has sha256 {hashlib.sha256(data).hexdigest()}, expected "
                f"{expected_sha}; the file was changed after it was saved, so it is not "
                "loaded. Restore the artifact from a backup, or point the alias at another "
                "version (`silta models rollback coder`, `silta models promote coder "
                "VERSION`), or train a new version")

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    # a pickle that would leave a file behind if anything unpickled it
    planted = pickle.dumps(_Touch(marker))
    for attempt, data in enumerate([bytes(flipped), planted], 1):
        artifact.write_bytes(data)
        r = _predict(env)
        _clean(r)
        assert r.code == 1, r
        assert f"predict:code_answers: {refusal(data)}\n" in r.out, r
        assert not marker.exists()
        assert not (tmp_path / "lake" / "predictions" / "codes").exists()
        failed = ledger(state, "SELECT status, error FROM runs WHERE kind = 'predict'")
        assert failed == [{"status": "failed", "error": refusal(d)}
                          for d in [bytes(flipped), planted][:attempt]]
        alerts = ledger(state, "SELECT monitor, check_name, target, state, count, severity, "
                               "summary FROM alerts")
        streak = "" if attempt == 1 else " (2 runs in a row)"
        summary = f"predict code_answers failed{streak}: {refusal(data)}"
        assert alerts == [{"monitor": "agent", "check_name": "run_failed",
                           "target": "predict:code_answers", "state": "firing",
                           "count": attempt, "severity": "warning",
                           "summary": summary[:299] + "…"}]
        assert "coder@1" in alerts[0]["summary"]

    # the file restored from a backup: the next run predicts every answer, once
    artifact.write_bytes(original)
    r = _predict(env)
    _clean(r)
    assert r.code == 0, r
    answers = sorted(duck_rows(duck, tmp_path / "lake" / "raw" / "answers",
                               "SELECT response_id FROM t"))
    codes = tmp_path / "lake" / "predictions" / "codes"
    assert sorted(duck_rows(duck, codes, "SELECT response_id FROM t")) == answers
    data = delta_table(codes)
    assert sorted(data.column("response_id").to_pylist()) == [a[0] for a in answers]
    assert set(data.column("model_version").to_pylist()) == {1}
    assert ledger(state, "SELECT status FROM runs WHERE kind = 'predict' ORDER BY started_at"
                  ) == [{"status": "failed"}, {"status": "failed"}, {"status": "ok"}]
    assert ledger(state, "SELECT state FROM alerts") == [{"state": "resolved"}]
    assert not marker.exists()


class _Touch:
    """Unpickling this creates ``path``: proof that nothing unpickled the artifact."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))
