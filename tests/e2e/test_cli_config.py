"""`silta config check`, config discovery and bad arguments, through the real command."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import dedent, write_config
from tests.e2e._cli import cli_env, silta

BAD_CONFIG = dedent('''
    [agent]
    name = "a"
    colour = "blue"

    [lake]
    uri = "lake"

    [connectors.inbox]
    type = "folder"
    path = "inbox"

    [[syncs]]
    name = "s1"
    source = "inbox:*.csv"
    target = "lake:raw/s1"
    mode = "upsert"

    [[syncs]]
    name = "s2"
    source = "nowhere:*.csv"
    target = "lake:raw/s2"
    schedule = "every tuesday"

    [[syncs]]
    name = "s3"
    source = "inbox:*.csv"
    target = "lake:raw/s3"
    mode = "merge"
    csv = { encoding = "klingon" }
''')


def _line(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the ``occurrence``-th line of ``text`` that starts with ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    return hits[occurrence - 1]


def test_config_check_reports_every_problem_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG, encoding="utf-8")

    r = silta(tmp_path, "config", "check", "--config", path)

    assert r.code == 2, r
    assert r.out == ""
    assert "Traceback" not in r.err
    assert r.err.startswith(f"silta: {path}: 6 problem(s)\n"), r
    expected = [
        (_line(BAD_CONFIG, "colour"), "agent.colour", "unknown key"),
        (_line(BAD_CONFIG, 'mode = "upsert"'), "syncs[0].mode",
         "Input should be 'append', 'merge' or 'snapshot' (got 'upsert')"),
        (_line(BAD_CONFIG, 'source = "nowhere'), "syncs[1].source",
         "connector 'nowhere' is not defined under [connectors] (defined: inbox)"),
        (_line(BAD_CONFIG, "schedule"), "syncs[1].schedule", "not a cron expression"),
        # the key is missing: the line of its [[syncs]] entry
        (_line(BAD_CONFIG, "[[syncs]]", 3), "syncs[2].key",
         'mode = "merge" needs `key = ["column", ...]`'),
        (_line(BAD_CONFIG, "csv = "), "syncs[2].csv.encoding", "unknown encoding 'klingon'"),
    ]
    problem_lines = [ln.strip() for ln in r.err.splitlines()[1:-1]]
    assert len(problem_lines) == 6, r
    for (line, key, what), got in zip(expected, problem_lines, strict=True):
        assert got.startswith(f"{path}:{line}: {key}: "), (got, line, key)
        assert what in got, (got, what)
    assert r.err.splitlines()[-1] == "fix these and run `silta config check` again"


def test_config_check_names_the_connector_when_it_is_called_folder(tmp_path: Path) -> None:
    # A connector may be called anything, "folder" included; its errors must still name it.
    path = tmp_path / "silta.toml"
    path.write_text(dedent('''
        [lake]
        uri = "lake"

        [connectors.folder]
        type = "folder"
        path = "inbox"
        colour = "x"
    '''), encoding="utf-8")

    r = silta(tmp_path, "config", "check", "--config", path)

    assert r.code == 2, r
    assert "Traceback" not in r.err
    assert f"{path}:7: connectors.folder.colour: unknown key" in r.err, r


def test_config_check_good_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"name": "a"}, {"name": "b", "target": "lake:raw/b"}])

    r = silta(tmp_path, "config", "check", "--config", path)

    assert r.code == 0, r
    assert r.out == f"{path}: ok (1 connector(s), 2 sync(s))\n"
    assert "Traceback" not in r.err


def test_config_check_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[agent\nname = "x"\n', encoding="utf-8")

    r = silta(tmp_path, "config", "check", "--config", path)

    assert r.code == 2, r
    assert r.err.startswith(f"silta: {path}: not valid TOML: "), r
    assert "line 1" in r.err
    assert "Traceback" not in r.err


def test_config_check_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    r = silta(tmp_path, "config", "check", "--config", path)

    assert r.code == 2, r
    assert f"silta: {path}: config file not found; pass --config FILE or set $SILTA_CONFIG" \
        in r.err
    assert "Traceback" not in r.err


def test_config_falls_back_to_env_then_cwd(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_config = write_config(elsewhere, [{"name": "from-env"}])
    workdir = tmp_path / "work"
    workdir.mkdir()

    # no --config, no $SILTA_CONFIG, no ./silta.toml
    r = silta(workdir, "config", "check")
    assert r.code == 2, r
    assert "silta: silta.toml: config file not found" in r.err

    # $SILTA_CONFIG
    r = silta(workdir, "sync", "list", "--json", env=cli_env(SILTA_CONFIG=str(env_config)))
    assert r.code == 0, r
    assert [s["name"] for s in r.json()] == ["from-env"]

    # ./silta.toml in the working folder
    cwd_config = write_config(workdir, [{"name": "from-cwd"}])
    r = silta(workdir, "sync", "list", "--json")
    assert r.code == 0, r
    assert [s["name"] for s in r.json()] == ["from-cwd"]
    r = silta(workdir, "config", "check")
    assert r.code == 0, r
    assert r.out == f"{cwd_config}: ok (1 connector(s), 1 sync(s))\n"

    # $SILTA_CONFIG wins over ./silta.toml, and --config over both
    r = silta(workdir, "sync", "list", "--json", env=cli_env(SILTA_CONFIG=str(env_config)))
    assert [s["name"] for s in r.json()] == ["from-env"]
    third = tmp_path / "third"
    third.mkdir()
    explicit = write_config(third, [{"name": "explicit"}])
    r = silta(workdir, "sync", "list", "--json", "--config", explicit,
              env=cli_env(SILTA_CONFIG=str(env_config)))
    assert r.code == 0, r
    assert [s["name"] for s in r.json()] == ["explicit"]


def test_unknown_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    r = silta(tmp_path, "frobnicate")

    assert r.code == 2, r
    assert "invalid choice: 'frobnicate'" in r.err
    assert "see `silta --help`" in r.err
    assert "Traceback" not in r.err


def test_no_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    r = silta(tmp_path)

    assert r.code == 2, r
    assert "the following arguments are required: cmd" in r.err
    assert "Traceback" not in r.err


def test_non_numeric_limit_is_a_usage_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"name": "s"}])

    for sub in ("history", "show"):
        r = silta(tmp_path, "tables", sub, "raw/t", "--limit", "abc", "--config", path)
        assert r.code == 2, r
        assert "argument --limit: 'abc' is not a whole number" in r.err
        assert f"see `silta tables {sub} --help`" in r.err
        assert "Traceback" not in r.err
    r = silta(tmp_path, "tables", "history", "raw/t", "--limit", "0", "--config", path)
    assert r.code == 2, r
    assert "argument --limit: '0' must be 1 or more" in r.err


def test_sync_run_unknown_sync(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"name": "s"}])

    r = silta(tmp_path, "sync", "run", "nosuch", "--config", path)

    assert r.code == 2, r
    assert r.err.strip().endswith("silta: sync 'nosuch' not found; see "
                                  "`silta sync list`"), r
    assert "Traceback" not in r.err
