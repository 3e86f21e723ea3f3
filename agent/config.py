"""Silta's configuration: TOML validated into typed pydantic models.

Unknown keys are errors. Relative paths resolve against the config file's folder.
Secrets are referenced, never required inline: ``${ENV_VAR}`` anywhere in a string and
``*_file = "path"`` keys. ``load_config`` reports every problem at once as a
:class:`ConfigError` whose lines name the file, the line, the key and what to do.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.tomlmap import key_lines, line_for
from connectors.errors import ConfigError, UnsafeNameError
from connectors.names import check_relative_path

if TYPE_CHECKING:
    from connectors.formats import CsvFormat

ENV_VAR = "SILTA_CONFIG"
DEFAULT_FILE = "silta.toml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              use_attribute_docstrings=True)


class AgentSection(_Model):
    """The agent process."""

    name: str = Field(default_factory=socket.gethostname)
    """Name of this agent, shown in status and recorded in commits."""
    state_dir: Path = Path("var/state")
    """Folder of the state store (SQLite), the lock and logs."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe level written to the log."""
    log_format: Literal["text", "json"] = "text"
    """`text` for people, `json` for log collectors (one object per line)."""
    heartbeat_seconds: float = Field(10.0, gt=0, le=3600)
    """How often the agent records that it is alive."""
    sync_workers: int = Field(4, ge=1, le=64)
    """How many syncs may run at the same time (threads)."""


class LakeSection(_Model):
    """The Delta lake that holds the versioned copies."""

    uri: str = "var/lake"
    """Root of the lake: a local folder (relative to the config file) or a URI."""
    storage_options: dict[str, str] = Field(default_factory=dict)
    """Options passed to deltalake's object store; use ${ENV} for secrets."""

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = v.split("://", 1)[0] if "://" in v else "file"
        if scheme not in {"file", "az", "abfs", "abfss", "s3", "s3a", "gs"}:
            raise ValueError(f"unsupported lake scheme {scheme!r}; use a folder, az://, "
                             "abfss://, s3:// or gs://")
        return v


class FolderConnector(_Model):
    """A local folder, NFS or SMB mount."""

    type: Literal["folder"]
    """Connector type."""
    path: Path
    """The folder; relative paths resolve against the config file's folder."""
    description: str = ""
    """Free text for operators."""


ConnectorConfig = FolderConnector


class CsvSection(_Model):
    """How CSV files are read. The defaults read RFC 4180 UTF-8 files with a header."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', max_length=1)
    """Quote character; empty for none."""
    encoding: str = "utf-8"
    """utf-8, utf-8-sig, cp1252, latin-1, ... (any Python codec)."""
    decimal: Literal[".", ","] = "."
    """Decimal separator of numbers."""
    header: bool = True
    """The first line holds the column names."""
    column_names: list[str] | None = None
    """Names of the columns; replaces the header line, or names a file without one."""
    column_types: dict[str, str] = Field(default_factory=dict)
    """Column name to type (string, int64, float64, bool, date, timestamp, decimal(P,S))."""
    null_values: list[str] = Field(default_factory=lambda: ["", "NA", "N/A", "NULL", "null"])
    """Cell values read as null."""
    newlines_in_values: bool = True
    """Quoted values may hold line breaks (slower parsing when true)."""
    skip_rows: int = Field(0, ge=0)
    """Lines to skip before the header."""

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}; use utf-8, utf-8-sig, cp1252 or "
                             "latin-1") from None
        return v

    @field_validator("column_types")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        from connectors.formats import parse_type_name  # pyarrow: only when types are given

        for name, tname in v.items():
            try:
                parse_type_name(tname)
            except ValueError as e:
                raise ValueError(f"column {name!r}: {e}") from None
        return v

    def to_format(self) -> CsvFormat:
        from connectors.formats import CsvFormat

        return CsvFormat(
            delimiter=self.delimiter, quote=self.quote, encoding=self.encoding,
            decimal=self.decimal, header=self.header,
            column_names=tuple(self.column_names) if self.column_names else None,
            column_types=dict(self.column_types), null_values=tuple(self.null_values),
            newlines_in_values=self.newlines_in_values, skip_rows=self.skip_rows,
        )


class SyncConfig(_Model):
    """One sync: a source in an on-prem store into one Delta table."""

    name: Annotated[str, Field(pattern=_NAME)]
    """Unique name: letters, digits, `_`, `.`, `-`."""
    description: str = ""
    """Free text for operators."""
    source: str
    """`connector:glob`, e.g. `dropzone:responses/*.csv` (`**` for subfolders)."""
    target: str
    """`lake:TABLE`, a Delta table under [lake].uri, e.g. `lake:raw/survey_responses`."""
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    """File format of the source files."""
    csv: CsvSection = Field(default_factory=CsvSection)
    """CSV dialect (with format = "csv")."""
    mode: Literal["append", "merge", "snapshot"] = "append"
    """append: add rows; merge: upsert on `key`; snapshot: each file replaces the table."""
    key: list[str] = Field(default_factory=list)
    """Key columns for `merge`."""
    schema_policy: Literal["merge", "strict"] = Field("merge", alias="schema")
    """merge: new columns are added; strict: a changed schema is an error."""
    schedule: str | None = None
    """Cron expression (5 fields, the agent's local time), e.g. `*/5 * * * *`."""
    watch: bool = False
    """React to file arrival (watchdog) as well as the schedule."""
    settle_seconds: float = Field(5.0, ge=0, le=86400)
    """A file must be unchanged this long before it is read."""
    on_success: Literal["keep", "move", "delete"] = "keep"
    """What to do with a source file once its commit is durable."""
    move_to: str = ".silta-done"
    """Folder (relative to the connector root) for on_success = "move"."""
    batch_max_bytes: int = Field(256 << 20, ge=1)
    """Small files are grouped into one commit up to this many bytes."""
    batch_max_files: int = Field(1000, ge=1, le=100_000)
    """... and up to this many files."""
    lineage_columns: bool = True
    """Add `_silta_source`, `_silta_batch` and `_silta_ingested_at` to every row."""
    enabled: bool = True
    """A disabled sync is kept in config but never runs."""

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        connector, sep, pattern = v.partition(":")
        if not sep or not connector or not pattern:
            raise ValueError("must be `connector:glob`, e.g. `dropzone:responses/*.csv`")
        try:
            check_relative_path(pattern, what="glob")
        except UnsafeNameError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        kind, _, table = v.partition(":")
        if kind != "lake" or not table:
            raise ValueError("must be `lake:TABLE`, e.g. `lake:raw/survey_responses`")
        try:
            check_relative_path(table, what="table name")
        except UnsafeNameError as e:
            raise ValueError(str(e)) from None
        if table.split("/")[0].startswith("_silta"):
            raise ValueError("tables under `_silta/` belong to Silta itself; choose another")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v)
        except ValueError as e:
            raise ValueError(f"not a cron expression ({e}); use 5 fields like "
                             "`*/5 * * * *`") from None
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str]) -> list[str]:
        for k in v:
            if not _IDENT.match(k):
                raise ValueError(f"key column {k!r} is not a plain column name")
        return v

    @field_validator("move_to")
    @classmethod
    def _move_to(cls, v: str) -> str:
        try:
            check_relative_path(v, what="move_to")
        except UnsafeNameError as e:
            raise ValueError(str(e)) from None
        return v

    @property
    def connector(self) -> str:
        return self.source.partition(":")[0]

    @property
    def pattern(self) -> str:
        return self.source.partition(":")[2]

    @property
    def table(self) -> str:
        return self.target.partition(":")[2]


class SiltaConfig(_Model):
    """A whole Silta configuration file."""

    agent: AgentSection = Field(default_factory=AgentSection)
    """The agent process."""
    lake: LakeSection = Field(default_factory=LakeSection)
    """The Delta lake."""
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    """On-prem stores by name, referenced by syncs as `NAME:glob`."""
    syncs: list[SyncConfig] = Field(default_factory=list)
    """Syncs: each moves one source into one Delta table."""

    def sync(self, name: str) -> SyncConfig:
        for s in self.syncs:
            if s.name == name:
                return s
        from connectors.errors import NotFoundError

        raise NotFoundError("sync", name, "see `silta sync list`")


class LoadedConfig:
    """A validated config plus where it came from."""

    def __init__(self, config: SiltaConfig, path: Path) -> None:
        self.config = config
        self.path = path
        self.base = path.parent

    def resolve(self, p: Path | str) -> Path:
        p = Path(p).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else self.base / p))

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.config.agent.state_dir)

    @property
    def lake_uri(self) -> str:
        uri = self.config.lake.uri
        if "://" in uri:
            return uri
        return str(self.resolve(uri))


def default_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config``, else ``$SILTA_CONFIG``, else ``./silta.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(DEFAULT_FILE)


def _expand_env(value: Any, loc: tuple[str | int, ...], problems: list[tuple[tuple[str | int,
                ...], str]]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                problems.append((loc, f"environment variable {name} is not set; export it "
                                      "or reference a file with a `*_file` key"))
                return ""
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*loc, i), problems) for i, v in enumerate(value)]
    return value


def _read_secret_files(data: dict[str, Any], base: Path,
                       problems: list[tuple[tuple[str | int, ...], str]]) -> dict[str, Any]:
    """``[lake].storage_options``: ``NAME_file = "path"`` becomes ``NAME`` = the file's text.

    The file must not be readable by group or others (it holds a secret).
    """
    lake = data.get("lake")
    if not isinstance(lake, dict) or not isinstance(lake.get("storage_options"), dict):
        return data
    options: dict[str, Any] = lake["storage_options"]
    resolved: dict[str, Any] = {}
    for key, value in options.items():
        if not (isinstance(key, str) and key.endswith("_file") and isinstance(value, str)):
            resolved[key] = value
            continue
        loc: tuple[str | int, ...] = ("lake", "storage_options", key)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                problems.append((loc, f"secret file {path} is readable by group or others; "
                                      f"run `chmod 600 {path}`"))
                continue
            resolved[key.removesuffix("_file")] = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            problems.append((loc, f"cannot read secret file {path}: {e.strerror}"))
    return {**data, "lake": {**lake, "storage_options": resolved}}


def _all_field_names() -> set[str]:
    names: set[str] = set()
    for model in (AgentSection, LakeSection, FolderConnector, CsvSection, SyncConfig,
                  SiltaConfig):
        for fname, info in model.model_fields.items():
            names.add(info.alias or fname)
    return names


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # pydantic inserts validator names like 'function-after[...]' into error locations
    return tuple(p for p in loc if not (isinstance(p, str) and "[" in p))


def _explain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, sorted(_all_field_names()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; remove it or check the spelling"
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing; add it"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind.startswith(("literal_", "enum")) or kind.endswith(("_type", "_parsing")):
        got = err.get("input")
        if not isinstance(got, dict | list):
            msg += f" (got {got!r})"
    return msg


def _cross_checks(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that span keys; run on the raw data so they show beside field errors."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    connectors = data.get("connectors") if isinstance(data.get("connectors"), dict) else {}
    raw_syncs = data.get("syncs")
    syncs: list[Any] = raw_syncs if isinstance(raw_syncs, list) else []
    seen: dict[str, int] = {}
    for i, sync in enumerate(syncs):
        if not isinstance(sync, dict):
            continue
        name = sync.get("name")
        if isinstance(name, str):
            if name in seen:
                out.append(((("syncs", i, "name")), f"sync name {name!r} is already used by "
                            f"syncs[{seen[name]}]; names must be unique"))
            seen.setdefault(name, i)
        source = sync.get("source")
        if isinstance(source, str) and ":" in source:
            conn = source.partition(":")[0]
            if conn and conn not in (connectors or {}):
                known = ", ".join(sorted(connectors or {})) or "none defined"
                out.append((("syncs", i, "source"), f"connector {conn!r} is not defined under "
                            f"[connectors] (defined: {known})"))
        if sync.get("mode") == "merge" and not sync.get("key"):
            out.append((("syncs", i, "key"), 'mode = "merge" needs `key = ["column", ...]`'))
    return out


def _validate(text: str, data: dict[str, Any], path: Path
              ) -> tuple[SiltaConfig | None, list[str]]:
    """Expand, check and validate a parsed config once.

    Returns the config, or None and every problem formatted ``file:line: key: what``.
    """
    lines = key_lines(text)
    env_problems: list[tuple[tuple[str | int, ...], str]] = []
    data = _read_secret_files(_expand_env(data, (), env_problems), path.absolute().parent,
                              env_problems)
    found: list[tuple[int, str]] = []
    config: SiltaConfig | None = None

    def add(loc: tuple[str | int, ...], what: str) -> None:
        line = line_for(lines, loc)
        where = f"{path}:{line}" if line else str(path)
        found.append((line or 0, f"{where}: {_format_loc(loc)}: {what}"))

    for loc, what in env_problems + _cross_checks(data):
        add(loc, what)
    try:
        config = SiltaConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            add(_clean_loc(tuple(err["loc"])), _explain(dict(err)))
    problems = [msg for _, msg in sorted(found, key=lambda x: x[0])]
    return (None if problems else config), problems


def load_config(path: Path | str) -> LoadedConfig:
    """Read, expand and validate ``path``; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config FILE or set "
                          f"${ENV_VAR}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    config, problems = _validate(text, data, path)
    if config is None:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems)
    return LoadedConfig(config, path.absolute())


def json_schema() -> dict[str, Any]:
    """The JSON schema of the config file (written to config/schema.json)."""
    schema = SiltaConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Silta configuration"
    return schema
