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
import string
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from agent.config_base import IDENT as _IDENT
from agent.config_base import (
    JOB_SECTIONS,
    check_columns,
    check_cron,
    check_lake_table,
    parse_after,
)
from agent.config_base import NAME_PATTERN as _NAME
from agent.config_base import StrictModel as _Model
from agent.ml.config import ModelConfig, PredictionConfig, TrainingConfig
from agent.ml.monitor_config import ColumnRule, MonitorConfig
from agent.notify_config import AlertsSection, CommandChannel, EmailChannel, WebhookChannel
from agent.tomlmap import key_lines, line_for
from connectors.errors import ConfigError, UnsafeNameError
from connectors.names import check_relative_path

if TYPE_CHECKING:
    from connectors.formats import CsvFormat

ENV_VAR = "SILTA_CONFIG"
DEFAULT_FILE = "silta.toml"
_ENV_REF = re.compile(r"\$\{(credential:[A-Za-z0-9_][A-Za-z0-9_.-]*|[A-Za-z_][A-Za-z0-9_]*)\}")
#: where systemd puts the service's credentials (`LoadCredential=NAME:/path`)
CREDENTIALS_VAR = "CREDENTIALS_DIRECTORY"




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
    log_file: str = "logs/agent.log"
    """The service's log file, relative to `state_dir` (rotated at 10 MiB, 5 kept), besides
    stderr/journald; `silta tui` tails it. Empty: no file."""
    heartbeat_seconds: float = Field(10.0, gt=0, le=3600)
    """How often the agent records that it is alive."""
    sync_workers: int = Field(4, ge=1, le=64)
    """How many syncs may run at the same time (threads)."""
    ml_workers: int = Field(1, ge=1, le=16)
    """How many training and prediction runs may run at the same time, each in a worker
    process of its own (a crash or a long fit never stalls the agent)."""
    ml_stop_grace_seconds: float = Field(30.0, ge=0, le=3600)
    """On shutdown, how long running ML jobs may go on before their worker is stopped
    (both are safe to stop: a stopped run is repeated, never doubled)."""
    retry_seconds: float = Field(30.0, ge=0, le=86400)
    """A run that failed on a transient error (a server away, a link lost) is tried again
    after this long, doubled for each failure in a row; 0: wait for the next trigger."""
    retry_max_seconds: float = Field(1800.0, gt=0, le=86400)
    """The longest wait between such retries."""
    compact_min_files: int = Field(20, ge=0, le=1_000_000)
    """Compact a table the agent writes (sync targets, predictions) once its latest version
    has this many small files, and checkpoint it: reads of a table synced every few
    seconds stay fast. The rewrite changes no data and keeps time travel; 0: never."""


class TuiSection(_Model):
    """The operator's terminal UI (`silta tui`)."""

    refresh_seconds: float = Field(2.0, ge=0.5, le=3600)
    """How often the screen in view reloads its figures (in the background)."""
    page_size: int = Field(50, ge=10, le=5000)
    """Rows per page of long lists (runs, alerts, tables); PgUp/PgDn turn pages."""
    keys: dict[str, str] = Field(default_factory=dict)
    """Key remaps by binding id, e.g. `{ "alerts.ack" = "k" }`; `?` in the TUI lists ids."""


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


class SftpConnector(_Model):
    """An SFTP server (OpenSSH or any SFTP v3 server). Host keys are checked, never added."""

    type: Literal["sftp"]
    """Connector type."""
    host: str = Field(min_length=1)
    """Host name or address of the server."""
    port: int = Field(22, ge=1, le=65535)
    """TCP port."""
    username: str = Field(min_length=1)
    """User to log in as."""
    key_file: Path | None = None
    """Private key file (OpenSSH format); relative paths resolve against the config file."""
    password: SecretStr | None = None
    """Password (or the key file's passphrase); use `${ENV}` or `password_file`."""
    password_file: Path | None = None
    """File holding the password; must not be readable by group or others."""
    known_hosts: Path
    """known_hosts file with the server's key; an unknown or changed key is refused."""
    root: str = "."
    """Folder on the server that paths are relative to (absolute, or relative to login)."""
    timeout_seconds: float = Field(30.0, gt=0, le=3600)
    """Connect and read timeout."""
    retries: int = Field(3, ge=0, le=20)
    """Attempts after a transient failure (dropped connection, timeout), with backoff."""
    description: str = ""
    """Free text for operators."""

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if any(c in v for c in "\x00\n\r") or ".." in v.split("/"):
            raise ValueError("root must be a plain folder path without '..' or control "
                             "characters")
        return v


class SqlConnector(_Model):
    """A SQL database: SQLite (embedded) or PostgreSQL."""

    type: Literal["sql"]
    """Connector type."""
    url: str
    """`sqlite:///path/to.db` (relative to the config file) or
    `postgresql://user@host:port/database`; the password goes in `password`."""
    password: SecretStr | None = None
    """Database password; use `${ENV}` or `password_file`."""
    password_file: Path | None = None
    """File holding the password; must not be readable by group or others."""
    connect_timeout_seconds: float = Field(10.0, gt=0, le=600)
    """How long to wait for a connection."""
    description: str = ""
    """Free text for operators."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme.split("+")[0] not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must start with sqlite:/// or postgresql://")
        userinfo = rest.split("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
        from urllib.parse import parse_qs, urlsplit

        query = {k.lower() for k in parse_qs(urlsplit(v).query, keep_blank_values=True)}
        if ":" in userinfo or "password" in query:
            raise ValueError("do not put the password in the URL (it would show in logs); "
                             "use `password = \"${ENV}\"` or `password_file`")
        return v


_CONNECTOR_TYPES = {"folder", "sftp", "sql"}
ConnectorConfig = Annotated[FolderConnector | SftpConnector | SqlConnector,
                            Field(discriminator="type")]


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
    """One sync: an on-prem source into a Delta table, or a Delta table out to on-prem."""

    name: Annotated[str, Field(pattern=_NAME)]
    """Unique name: letters, digits, `_`, `.`, `-`."""
    description: str = ""
    """Free text for operators."""
    source: str
    """Where rows come from: `connector:glob` (files, `**` for subfolders),
    `connector:schema.table` (SQL; or just `connector` with `query`), or `lake:TABLE` to
    publish a Delta table on-prem."""
    target: str
    """Where rows go: `lake:TABLE`, or for a publish `connector:folder/name_{version}.csv`
    (files; `{version}`, `{from_version}`, `{to_version}`, `{date}` are filled in) or
    `connector:schema.table` (SQL)."""
    query: str | None = None
    """A SELECT to read instead of a table (SQL sources; `source` names the connector)."""
    watermark: str | None = None
    """SQL sources: a column that grows with every change (e.g. `updated_at`); each run
    reads only rows at or above the last one committed."""
    overlap: float = Field(0.0, ge=0)
    """SQL sources: read this far below the watermark again (seconds for time columns,
    units for numbers) so rows committed late are not lost; rows already in the table
    (same key and watermark) are not written twice."""
    batch_rows: int = Field(100_000, ge=1, le=10_000_000)
    """SQL sources: rows per Delta commit (cut where the watermark changes)."""
    columns: list[str] | None = None
    """Publish: the columns to write (default: all but Silta's `_silta_*` lineage columns)."""
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    """Format of the files on the on-prem side (read, or written by a publish; a publish
    to `*.parquet` / `*.jsonl` infers it)."""
    csv: CsvSection = Field(default_factory=CsvSection)
    """CSV dialect (with format = "csv")."""
    mode: Literal["append", "merge", "snapshot"] = "append"
    """append: add rows; merge: upsert on `key`; snapshot: each unit replaces the target."""
    key: list[str] = Field(default_factory=list)
    """Key columns for `merge`, and for de-duplicating a SQL source's overlap."""
    schema_policy: Literal["merge", "strict"] = Field("merge", alias="schema")
    """merge: new columns are added; strict: a changed schema is an error."""
    schedule: str | None = None
    """Cron expression (5 fields, the agent's local time), e.g. `*/5 * * * *`."""
    watch: bool = False
    """React to file arrival (watchdog) as well as the schedule."""
    after: list[str] = Field(default_factory=list)
    """Names of syncs this one follows: it runs when one of them committed new data (and
    after them in `silta agent run --once`), e.g. a publish after the ingest it sends on."""
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
        store, sep, rest = v.partition(":")
        if not store:
            raise ValueError("must be `connector:glob`, `connector:schema.table`, "
                             "`connector` (with query) or `lake:TABLE`")
        if sep and not rest:
            raise ValueError(f"nothing after {store + ':'!r}; name a glob, a table or use "
                             "`query`")
        if rest:
            try:
                check_relative_path(rest, what="table name" if store == "lake" else "glob")
            except UnsafeNameError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        store, _, rest = v.partition(":")
        if not store or not rest:
            raise ValueError("must be `lake:TABLE` or, to publish, `connector:path` or "
                             "`connector:schema.table`")
        if store == "lake":
            check_lake_table(rest, writable=True)
            return v
        try:
            check_relative_path(rest, what="path")
        except UnsafeNameError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return check_cron(v)

    @field_validator("key", "columns")
    @classmethod
    def _columns(cls, v: list[str] | None) -> list[str] | None:
        return check_columns(v)

    @field_validator("watermark")
    @classmethod
    def _watermark(cls, v: str | None) -> str | None:
        if v is not None and not _IDENT.match(v):
            raise ValueError(f"column {v!r} is not a plain column name")
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
    def publishes(self) -> bool:
        """True for lake -> on-prem."""
        return self.source.partition(":")[0] == "lake"

    @property
    def connector(self) -> str:
        """The on-prem connector (source of an ingest, target of a publish)."""
        return (self.target if self.publishes else self.source).partition(":")[0]

    @property
    def pattern(self) -> str:
        """The on-prem side: a glob, a path template or a SQL table ('' with `query`)."""
        return (self.target if self.publishes else self.source).partition(":")[2]

    @property
    def table(self) -> str:
        """The Delta table (target of an ingest, source of a publish)."""
        return (self.source if self.publishes else self.target).partition(":")[2]

    @property
    def file_format(self) -> Literal["csv", "parquet", "jsonl"]:
        """The on-prem file format; a publish infers it from the name unless set."""
        if "format" not in self.model_fields_set and self.publishes:
            name = self.pattern.lower()
            if name.endswith(".parquet"):
                return "parquet"
            if name.endswith((".jsonl", ".ndjson")):
                return "jsonl"
        return self.format


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
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    """Models by name: what each learns from and how it is evaluated and promoted."""
    trainings: list[TrainingConfig] = Field(default_factory=list)
    """Training jobs: when each model is fitted and registered."""
    predictions: list[PredictionConfig] = Field(default_factory=list)
    """Prediction jobs: which model@alias codes which table's new rows."""
    monitors: list[MonitorConfig] = Field(default_factory=list)
    """Monitoring jobs: schema, quality, drift and accuracy checks that raise alerts."""
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    """Where alerts are sent (webhook, e-mail, a command; always the log) and how often."""
    tui: TuiSection = Field(default_factory=TuiSection)
    """The operator's terminal UI."""

    def sync(self, name: str) -> SyncConfig:
        for s in self.syncs:
            if s.name == name:
                return s
        from connectors.errors import NotFoundError

        raise NotFoundError("sync", name, "see `silta sync list`")

    def training(self, name: str) -> TrainingConfig:
        for t in self.trainings:
            if t.name == name:
                return t
        from connectors.errors import NotFoundError

        raise NotFoundError("training", name, "see `silta jobs list`")

    def prediction(self, name: str) -> PredictionConfig:
        for p in self.predictions:
            if p.name == name:
                return p
        from connectors.errors import NotFoundError

        raise NotFoundError("prediction", name, "see `silta jobs list`")

    def monitor(self, name: str) -> MonitorConfig:
        for m in self.monitors:
            if m.name == name:
                return m
        from connectors.errors import NotFoundError

        raise NotFoundError("monitor", name, "see `silta monitors list`")

    def model(self, name: str) -> ModelConfig:
        if name in self.models:
            return self.models[name]
        from connectors.errors import NotFoundError

        known = ", ".join(sorted(self.models)) or "none"
        raise NotFoundError("model", name, f"models in the config: {known}")


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
    def log_path(self) -> Path | None:
        """The agent's log file, or None when `agent.log_file` is empty."""
        name = self.config.agent.log_file
        return Path(os.path.normpath(self.state_dir / name)) if name else None

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
            if name.startswith("credential:"):
                return _credential(name.removeprefix("credential:"), loc, problems)
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


def _credential(name: str, loc: tuple[str | int, ...],
                problems: list[tuple[tuple[str | int, ...], str]]) -> str:
    """``${credential:NAME}``: the file NAME in systemd's ``$CREDENTIALS_DIRECTORY``."""
    folder = os.environ.get(CREDENTIALS_VAR)
    if not folder:
        problems.append((loc, f"${{credential:{name}}} needs ${CREDENTIALS_VAR}, which systemd "
                              f"sets for `LoadCredential={name}:/path/to/secret` in the unit; "
                              "outside systemd use ${ENV} or a `*_file` key"))
        return ""
    if "/" in name or name in (".", ".."):
        problems.append((loc, f"credential name {name!r} must not contain '/'"))
        return ""
    text = _read_secret(str(Path(folder) / name), Path(folder), loc, problems)
    return "" if text is None else text


def _read_secret(value: str, base: Path, loc: tuple[str | int, ...],
                 problems: list[tuple[tuple[str | int, ...], str]]) -> str | None:
    """The text of a secret file, refused when group or others may read it."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        if path.stat().st_mode & 0o077:
            problems.append((loc, f"secret file {path} is readable by group or others; "
                                  f"run `chmod 600 {path}`"))
            return None
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        problems.append((loc, f"cannot read secret file {path}: {e.strerror}"))
        return None


def _read_secret_files(data: dict[str, Any], base: Path,
                       problems: list[tuple[tuple[str | int, ...], str]]) -> dict[str, Any]:
    """Secrets referenced by file, read once at load.

    ``[lake].storage_options``: ``NAME_file = "path"`` becomes ``NAME`` = the file's text;
    ``[connectors.X].password_file`` fills ``password``.
    """
    lake = data.get("lake")
    if isinstance(lake, dict) and isinstance(lake.get("storage_options"), dict):
        resolved: dict[str, Any] = {}
        for key, value in lake["storage_options"].items():
            if not (isinstance(key, str) and key.endswith("_file") and isinstance(value, str)):
                resolved[key] = value
                continue
            text = _read_secret(value, base, ("lake", "storage_options", key), problems)
            if text is not None:
                resolved[key.removesuffix("_file")] = text
        data = {**data, "lake": {**lake, "storage_options": resolved}}
    connectors = data.get("connectors")
    if isinstance(connectors, dict):
        out: dict[str, Any] = {}
        for name, conn in connectors.items():
            if isinstance(conn, dict) and isinstance(conn.get("password_file"), str):
                loc: tuple[str | int, ...] = ("connectors", name, "password_file")
                if conn.get("password") is not None:
                    problems.append((loc, "give either `password` or `password_file`, not "
                                          "both"))
                text = _read_secret(conn["password_file"], base, loc, problems)
                if text is not None:
                    conn = {**conn, "password": text}
            out[name] = conn
        data = {**data, "connectors": out}
    return data


def _all_field_names() -> set[str]:
    names: set[str] = set()
    from agent.ml.config import CardSection, EthicalItem, SplitSection

    for model in (AgentSection, LakeSection, FolderConnector, SftpConnector, SqlConnector,
                  CsvSection, SyncConfig, SiltaConfig, ModelConfig, TrainingConfig,
                  PredictionConfig, CardSection, SplitSection, EthicalItem, MonitorConfig,
                  ColumnRule, AlertsSection, WebhookChannel, EmailChannel, CommandChannel):
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
    # pydantic inserts validator names like 'function-after[...]' into error locations,
    # and the connector's type (the union's tag) after its name: neither is a key.
    out = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    if len(out) > 2 and out[0] == "connectors" and out[2] in _CONNECTOR_TYPES:
        out = out[:2] + out[3:]
    return out


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
    if kind.startswith(("literal_", "enum", "greater_than", "less_than")) or kind.endswith(
            ("_type", "_parsing")):
        got = err.get("input")
        if not isinstance(got, dict | list):
            msg += f" (got {got!r})"
    return msg


_SQL_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PLACEHOLDERS = re.compile(r"\{([^{}]*)\}")
_TEMPLATE_FIELDS = {"version", "from_version", "to_version", "date"}


def _sync_problems(sync: dict[str, Any], ctypes: dict[str, str]
                   ) -> list[tuple[str, str]]:
    """(key, what) for one sync, checked against the types of its connectors."""
    out: list[tuple[str, str]] = []
    source, target = sync.get("source"), sync.get("target")
    if not isinstance(source, str) or not isinstance(target, str):
        return out
    src_store, _, src_rest = source.partition(":")
    dst_store, _, dst_rest = target.partition(":")
    known = ", ".join(sorted(ctypes)) or "none defined"
    for key, store in (("source", src_store), ("target", dst_store)):
        if store and store != "lake" and store not in ctypes:
            out.append((key, f"connector {store!r} is not defined under [connectors] "
                             f"(defined: {known})"))
    if (src_store == "lake") == (dst_store == "lake"):
        out.append(("target", "one side of a sync must be the lake: `target = \"lake:TABLE\"` "
                              "to bring data in, or `source = \"lake:TABLE\"` to publish it"))
        return out
    mode = sync.get("mode", "append")
    if mode == "merge" and not sync.get("key"):
        out.append(("key", 'mode = "merge" needs `key = ["column", ...]`'))
    publishes = src_store == "lake"
    onprem, rest = (dst_store, dst_rest) if publishes else (src_store, src_rest)
    kind = ctypes.get(onprem)
    sql_only = [k for k in ("query", "watermark") if sync.get(k) is not None]
    if kind is None:
        return out
    if kind == "sql":
        if rest:
            if not all(_SQL_PART.match(p) for p in rest.split(".")) or rest.count(".") > 1:
                out.append(("target" if publishes else "source",
                            f"{rest!r} is not a SQL table name: use `table` or "
                            "`schema.table` with letters, digits and `_`"))
        elif publishes:
            out.append(("target", "name the SQL table: `connector:schema.table`"))
        if sync.get("query") is not None and rest:
            out.append(("query", "give either a table in `source` or a `query`, not both"))
        if not publishes and not rest and sync.get("query") is None:
            out.append(("source", "name a table (`connector:schema.table`) or set `query`"))
        if publishes and sql_only:
            out.append((sql_only[0], "only for SQL sources; a publish reads the lake by "
                                     "Delta version"))
        if not publishes and mode == "snapshot" and sync.get("watermark") is not None:
            out.append(("watermark", 'mode = "snapshot" reads the whole table each run; '
                                     'remove `watermark`, or use mode = "append" / "merge"'))
        if not publishes and mode == "append" and sync.get("watermark") is None:
            out.append(("watermark", 'mode = "append" from SQL needs `watermark = "column"` '
                                     "(or every run would add every row again); or use "
                                     'mode = "merge" / "snapshot"'))
    else:
        for key in sql_only:
            out.append((key, f"only for SQL connectors; {onprem!r} is a {kind} connector"))
        if publishes:
            try:
                list(string.Formatter().parse(rest))
            except ValueError as e:
                out.append(("target", f"{e}; write `{{{{` or `}}}}` for a literal brace"))
                return out
            fields = set(_PLACEHOLDERS.findall(rest))
            unknown = sorted(fields - _TEMPLATE_FIELDS)
            if unknown:
                out.append(("target", f"unknown placeholder(s) {unknown}; use "
                                      "{version}, {from_version}, {to_version} or {date}"))
            if mode == "merge":
                out.append(("mode", 'a publish to files is "append" (one file per Delta '
                                    'version range) or "snapshot" (the whole table)'))
            elif mode == "append" and not fields & {"version", "to_version"}:
                out.append(("target", "put {version} in the file name, or each publish "
                                      "would replace the previous file"))
    return out


def _order_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """`after` names known jobs (syncs, trainings, predictions) and makes no cycle."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    jobs: dict[str, tuple[str, int]] = {}  # "kind:name" -> (section, index)
    for section, kind in JOB_SECTIONS.items():
        entries = data.get(section)
        for i, job in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(job, dict) and isinstance(job.get("name"), str):
                jobs.setdefault(f"{kind}:{job['name']}", (section, i))
    graph: dict[str, list[str]] = {}
    for node, (section, i) in jobs.items():
        after = data[section][i].get("after")
        after = [after] if isinstance(after, str) else after
        if not isinstance(after, list):
            continue
        for item in after:
            if not isinstance(item, str):
                continue
            dep = ":".join(parse_after(item))
            if dep == node:
                out.append(((section, i, "after"), "a job cannot follow itself"))
            elif dep not in jobs:
                known = ", ".join(sorted(jobs)) or "none"
                out.append(((section, i, "after"),
                            f"no job {dep!r}; write `sync:NAME`, `train:NAME`, "
                            f"`predict:NAME` or `monitor:NAME` (jobs: {known})"))
            else:
                graph.setdefault(node, []).append(dep)
    state: dict[str, int] = {}

    def cyclic(node: str) -> bool:
        state[node] = 1
        for dep in graph.get(node, []):
            if state.get(dep) == 1 or (state.get(dep) is None and cyclic(dep)):
                return True
        state[node] = 2
        return False

    for node in graph:
        if state.get(node) is None and cyclic(node):
            section, i = jobs[node]
            out.append(((section, i, "after"), f"`after` makes a cycle through {node!r}; "
                                               "remove one of the links"))
            break
    return out


def _ml_problems(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """ML jobs name defined models; job names are unique across kinds."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    models = data.get("models")
    model_names = set(models) if isinstance(models, dict) else set()
    for name in sorted(model_names):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
                                                         name):
            out.append((("models", str(name)), "a model name is 1-64 letters, digits, `_`, "
                                               "`.` or `-`, starting with a letter or digit"))
    known = ", ".join(sorted(str(m) for m in model_names)) or "none defined"
    for section, field in (("trainings", "model"), ("predictions", "model"),
                           ("monitors", "model")):
        entries = data.get(section)
        for i, job in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(job, dict) or not isinstance(job.get(field), str):
                continue
            model = job[field].partition("@")[0]
            if model not in model_names:
                out.append(((section, i, field), f"model {model!r} is not defined under "
                                                 f"[models] (defined: {known})"))
    seen: dict[str, str] = {}
    for section in JOB_SECTIONS:
        entries = data.get(section)
        for i, job in enumerate(entries if isinstance(entries, list) else []):
            name = job.get("name") if isinstance(job, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen and not (section == "syncs" and seen[name].startswith("syncs")):
                # (two syncs with one name are reported by the sync checks already)
                out.append(((section, i, "name"), f"name {name!r} is already used by "
                                                  f"{seen[name]}; names must be unique "
                                                  "across syncs, trainings, predictions "
                                                  "and monitors"))
            seen.setdefault(name, f"{section}[{i}]")
    return out


def _cross_checks(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that span keys; run on the raw data so they show beside field errors."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    raw_connectors = data.get("connectors")
    ctypes = {name: str(c.get("type")) for name, c in raw_connectors.items()
              if isinstance(c, dict)} if isinstance(raw_connectors, dict) else {}
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
        out += [(("syncs", i, key), what) for key, what in _sync_problems(sync, ctypes)]
    return out + _order_problems(data) + _ml_problems(data)


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
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; pass --config FILE or set "
                          f"${ENV_VAR}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the "
                          "file as UTF-8") from None
    if text.startswith("\ufeff"):
        raise ConfigError(f"{path}:1: starts with a byte order mark (BOM), which TOML does "
                          "not allow; save the file as UTF-8 without BOM") from None
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
