"""Config rules of the two directions: ingest (on-prem -> lake) and publish (lake -> on-prem).

Every case loads a real TOML file through ``load_config``; a refused config is a
ConfigError whose problems read ``file:line: key: what``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.config import LoadedConfig, SqlConnector, load_config
from connectors.errors import ConfigError

HEAD = """\
[agent]
name = "agent-7"
state_dir = "state"
[lake]
uri = "lake"
[connectors.inbox]
type = "folder"
path = "inbox"
[connectors.db]
type = "sql"
url = "sqlite:///x.db"
"""


def sync_toml(**keys: object) -> str:
    lines = ["[[syncs]]"]
    for k, v in keys.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{k} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "silta.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> LoadedConfig:
    return load_config(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.msg == f"{path}: {len(info.value.problems)} problem(s)"
    return path, info.value.problems


def line_of(text: str, fragment: str) -> int:
    """1-based line of the (single) line holding ``fragment``."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(found) == 1, (fragment, found)
    return found[0]


def only_problem(tmp_path: Path, text: str) -> str:
    _, found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# -- a good publish ---------------------------------------------------------------------------
@pytest.mark.parametrize(("target", "fmt"), [
    ("inbox:outgoing/codes_{version}.csv", "csv"),
    ("inbox:outgoing/codes_{version}.parquet", "parquet"),
    ("inbox:outgoing/CODES_{version}.PARQUET", "parquet"),
    ("inbox:outgoing/codes_{version}.jsonl", "jsonl"),
    ("inbox:outgoing/codes_{from_version}-{to_version}_{date}.ndjson", "jsonl"),
    ("inbox:outgoing/codes_{version}.txt", "csv"),
])
def test_a_publish_loads_and_infers_the_file_format_from_the_name(
        tmp_path: Path, target: str, fmt: str) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target=target,
                            columns=["id", "label"])
    s = load(tmp_path, text).config.syncs[0]
    assert s.publishes is True
    assert (s.connector, s.pattern, s.table) == ("inbox", target.partition(":")[2], "out/codes")
    assert s.file_format == fmt
    assert s.format == "csv"  # the field itself keeps its default
    assert s.columns == ["id", "label"]
    assert s.mode == "append"


def test_an_explicit_format_wins_over_the_extension(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes_{version}.parquet", format="jsonl")
    s = load(tmp_path, text).config.syncs[0]
    assert (s.file_format, s.format) == ("jsonl", "jsonl")


def test_an_ingest_never_infers_from_the_glob(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="in", source="inbox:*.parquet", target="lake:raw/t")
    s = load(tmp_path, text).config.syncs[0]
    assert s.publishes is False
    assert (s.connector, s.pattern, s.table, s.file_format) == (
        "inbox", "*.parquet", "raw/t", "csv")


def test_a_snapshot_publish_needs_no_version_in_the_name(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes.csv", mode="snapshot")
    s = load(tmp_path, text).config.syncs[0]
    assert (s.mode, s.pattern, s.file_format) == ("snapshot", "outgoing/codes.csv", "csv")


def test_a_publish_to_sql_loads(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target="db:reporting.codes",
                            mode="merge", key=["id"])
    s = load(tmp_path, text).config.syncs[0]
    assert (s.publishes, s.connector, s.pattern, s.table, s.key) == (
        True, "db", "reporting.codes", "out/codes", ["id"])


# -- direction -------------------------------------------------------------------------------
def test_both_sides_in_the_lake_is_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="s", source="lake:raw/a", target="lake:raw/b")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'target =')}: syncs[0].target: one side of a sync must be the "
        'lake: `target = "lake:TABLE"` to bring data in, or `source = "lake:TABLE"` to '
        "publish it")


def test_neither_side_in_the_lake_is_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="s", source="inbox:*.csv", target="inbox:out/x_{version}.csv")
    path = write(tmp_path, text)
    found = only_problem(tmp_path, text)
    assert found.startswith(f"{path}:{line_of(text, 'target =')}: syncs[0].target: one side "
                            "of a sync must be the lake")


def test_the_second_sync_s_problem_names_its_own_index_and_line(tmp_path: Path) -> None:
    text = (HEAD + sync_toml(name="ok", source="inbox:*.csv", target="lake:raw/a")
            + sync_toml(name="bad", source="lake:raw/a", target="lake:raw/b"))
    path = write(tmp_path, text)
    found = only_problem(tmp_path, text)
    assert found.startswith(f"{path}:{line_of(text, 'lake:raw/b')}: syncs[1].target: ")


# -- file names of a publish -------------------------------------------------------------------
def test_an_unknown_placeholder_is_named(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes_{version}_{foo}.csv")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'target =')}: syncs[0].target: unknown placeholder(s) ['foo']; "
        "use {version}, {from_version}, {to_version} or {date}")


@pytest.mark.parametrize("target", [
    "inbox:outgoing/codes_{version}}.csv",
    "inbox:outgoing/codes_{version}_{.csv",
])
def test_a_stray_brace_in_the_file_name_is_refused_at_load(tmp_path: Path, target: str) -> None:
    # The name is filled with str.format at run time; a lone brace makes every run fail.
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target=target)
    path = write(tmp_path, text)
    found = only_problem(tmp_path, text)
    assert found.startswith(f"{path}:{line_of(text, 'target =')}: syncs[0].target: "), found


def test_append_to_files_without_a_version_in_the_name_is_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes_{date}.csv", mode="append")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'target =')}: syncs[0].target: put {{version}} in the file "
        "name, or each publish would replace the previous file")


@pytest.mark.parametrize("placeholder", ["{version}", "{to_version}"])
def test_either_version_placeholder_satisfies_append(tmp_path: Path, placeholder: str) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target=f"inbox:outgoing/codes_{placeholder}.csv")
    assert load(tmp_path, text).config.syncs[0].pattern == f"outgoing/codes_{placeholder}.csv"


def test_merge_publish_to_files_is_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes_{version}.csv", mode="merge",
                            key=["id"])
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'mode =')}: syncs[0].mode: a publish to files is \"append\" "
        '(one file per Delta version range) or "snapshot" (the whole table)')


# -- SQL-only keys ------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [("watermark", "updated_at"),
                                            ("query", "SELECT * FROM t")])
def test_sql_only_keys_on_a_folder_ingest_are_refused(tmp_path: Path, key: str,
                                                      value: str) -> None:
    text = HEAD + sync_toml(name="in", source="inbox:*.csv", target="lake:raw/t",
                            **{key: value})
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, key + ' =')}: syncs[0].{key}: only for SQL connectors; "
        "'inbox' is a folder connector")


def test_sql_only_keys_on_a_folder_publish_are_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="inbox:outgoing/codes_{version}.csv", watermark="v")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'watermark =')}: syncs[0].watermark: only for SQL connectors; "
        "'inbox' is a folder connector")


def test_a_watermark_on_a_sql_publish_is_refused(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target="db:codes",
                            watermark="v")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'watermark =')}: syncs[0].watermark: only for SQL sources; a "
        "publish reads the lake by Delta version")


# -- connectors ------------------------------------------------------------------------------
def test_an_unknown_connector_in_the_target_names_the_defined_ones(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes",
                            target="outbox:outgoing/codes_{version}.csv")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'target =')}: syncs[0].target: connector 'outbox' is not "
        "defined under [connectors] (defined: db, inbox)")


@pytest.mark.parametrize("table", ["a;b", "x.y.z", "1abc", "codes-2024", "a b"])
def test_a_bad_sql_table_name_in_the_target_is_refused(tmp_path: Path, table: str) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target=f"db:{table}")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'target =')}: syncs[0].target: {table!r} is not a SQL table "
        "name: use `table` or `schema.table` with letters, digits and `_`")


@pytest.mark.parametrize("table", ["codes", "reporting.codes", "_t1.Codes_2024"])
def test_good_sql_table_names_load(tmp_path: Path, table: str) -> None:
    text = HEAD + sync_toml(name="pub", source="lake:out/codes", target=f"db:{table}")
    assert load(tmp_path, text).config.syncs[0].pattern == table


@pytest.mark.parametrize("url", [
    "postgresql://silta:s3cret@db.example:5432/stats",
    "postgresql+psycopg://silta:s3cret@db.example/stats",
])
def test_a_password_inside_the_url_is_refused_and_not_repeated(tmp_path: Path,
                                                               url: str) -> None:
    text = HEAD.replace('url = "sqlite:///x.db"', f'url = "{url}"')
    path = write(tmp_path, text)
    found = only_problem(tmp_path, text)
    # `connectors.db.url` at the url's line: the key as written in the file, not pydantic's
    # location with the connector type inside it (`connectors.db.sql.url`).
    assert found.startswith(f"{path}:{line_of(text, 'url =')}: connectors.db.url: do not put "
                            "the password in the URL"), found
    assert "s3cret" not in found


def test_a_password_in_the_url_query_is_refused_too(tmp_path: Path) -> None:
    # libpq and SQLAlchemy take `?password=` as the password: it would show in logs and in
    # `silta connectors list` just the same.
    text = HEAD.replace('url = "sqlite:///x.db"',
                        'url = "postgresql://silta@db.example/stats?password=s3cret"')
    found = only_problem(tmp_path, text)
    assert "connectors.db" in found and "do not put the password in the URL" in found, found
    assert "s3cret" not in found


def test_a_url_without_a_password_loads(tmp_path: Path) -> None:
    text = HEAD.replace('url = "sqlite:///x.db"',
                        'url = "postgresql://silta@db.example:5432/stats"')
    conn = load(tmp_path, text).config.connectors["db"]
    assert isinstance(conn, SqlConnector)
    assert (conn.type, conn.url, conn.password) == (
        "sql", "postgresql://silta@db.example:5432/stats", None)


def _with_password_file(name: str) -> str:
    return HEAD.replace('url = "sqlite:///x.db"',
                        f'url = "postgresql://silta@db.example/stats"\npassword_file = "{name}"')


def test_a_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "db.pass"
    secret.write_text("pa55-from-file\n", encoding="utf-8")
    secret.chmod(0o644)
    text = _with_password_file("db.pass")
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'password_file')}: connectors.db.password_file: secret file "
        f"{secret} is readable by group or others; run `chmod 600 {secret}`")


def test_a_private_password_file_is_loaded_as_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "db.pass"
    secret.write_text("pa55-from-file\n", encoding="utf-8")
    secret.chmod(0o600)
    config = load(tmp_path, _with_password_file("db.pass")).config
    conn = config.connectors["db"]
    assert isinstance(conn, SqlConnector)
    assert isinstance(conn.password, SecretStr)
    assert conn.password.get_secret_value() == "pa55-from-file"
    assert conn.password_file == Path("db.pass")
    for shown in (str(config), repr(config), str(conn), repr(conn),
                  config.model_dump_json()):
        assert "pa55" not in shown


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "db.pass"
    secret.write_text("pa55-from-file\n", encoding="utf-8")
    secret.chmod(0o600)
    text = _with_password_file("db.pass").replace('password_file = "db.pass"',
                                                  'password_file = "db.pass"\npassword = "x"')
    path = write(tmp_path, text)
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, 'password_file')}: connectors.db.password_file: give either "
        "`password` or `password_file`, not both")


# -- SQL ingest ------------------------------------------------------------------------------
def test_sql_ingest_in_append_mode_needs_a_watermark(tmp_path: Path) -> None:
    text = HEAD + sync_toml(name="in", source="db:public.orders", target="lake:raw/orders")
    path = write(tmp_path, text)
    # the problem has no key of its own in the file: it points at the sync's table header
    assert only_problem(tmp_path, text) == (
        f"{path}:{line_of(text, '[[syncs]]')}: syncs[0].watermark: mode = \"append\" from SQL "
        'needs `watermark = "column"` (or every run would add every row again); or use '
        'mode = "merge" / "snapshot"')


@pytest.mark.parametrize("extra", [{"watermark": "updated_at"},
                                   {"mode": "merge", "key": ["id"]},
                                   {"mode": "snapshot"}])
def test_sql_ingest_with_a_watermark_or_another_mode_loads(tmp_path: Path,
                                                           extra: dict[str, object]) -> None:
    text = HEAD + sync_toml(name="in", source="db:public.orders", target="lake:raw/orders",
                            **extra)
    s = load(tmp_path, text).config.syncs[0]
    assert (s.publishes, s.connector, s.pattern, s.table) == (
        False, "db", "public.orders", "raw/orders")


def test_every_direction_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (HEAD
            + sync_toml(name="a", source="lake:x", target="lake:y")
            + sync_toml(name="b", source="lake:x", target="inbox:out/{foo}.csv", mode="merge",
                        key=["id"])
            + sync_toml(name="c", source="db:orders", target="lake:raw/orders"))
    _, found = problems(tmp_path, text)
    keys = [p.split(": ")[1] for p in found]
    assert keys == ["syncs[0].target", "syncs[1].target", "syncs[1].mode",
                    "syncs[2].watermark"], found
