"""`silta service unit`: the hardened systemd unit of this install, its paths filled in.

The unit runs ``silta agent run --config FILE`` as a ``Type=notify`` service with a
watchdog, in a sandbox where everything is read-only except the folders the config says
the agent writes: the state folder, a local lake, folder connectors and SQLite databases.
``config/systemd/silta-agent.service`` is :func:`template`, the same unit for placeholder
paths; a test keeps the two in step.

Paths come from the config, so they are untrusted. systemd's unit syntax (checked with
``systemd-analyze verify`` of systemd 252) decides what can be written and how:

- in every value ``%`` starts a specifier: it is written ``%%``;
- ExecStart arguments, ReadWritePaths and RequiresMountsFor are words: a word with a
  space or a special character is written in double quotes, with ``\\`` and ``"``
  escaped by a backslash; ExecStart arguments also expand ``$``: it is written ``$$``;
- the ExecStart program's own path may not hold quotes, backslashes, ``$`` or whitespace
  other than spaces (systemd refuses most of them and expands ``$`` in ``argv[0]``);
- WorkingDirectory is the rest of the line, unquoted: it may not end in whitespace;
- no value can hold a newline or another control character, and a line ending in ``\\``
  continues on the next one.

What cannot be written is refused with a :class:`UsageError` (exit 2) that says why.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from agent.config import FolderConnector, LoadedConfig, SqlConnector
from agent.notify_config import CommandChannel
from connectors.errors import UsageError

UNIT_NAME = "silta-agent.service"
#: the folders ``ProtectHome=yes`` makes inaccessible
HOME_ROOTS = ("/home", "/root", "/run/user")
#: systemd's strict user name rule (anything else makes `systemd-analyze verify` warn)
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}|[0-9]{1,10}")
#: a word that needs no quotes in a unit file (``%`` is doubled, never quoted)
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
#: the shutdown after ``ml_stop_grace_seconds``: the worker's SIGTERM, then SIGKILL
#: (10 s each, agent/ml/worker.py), the state flush, and some room
_STOP_MARGIN_SECONDS = 30


@dataclass(frozen=True, kw_only=True)
class UnitSpec:
    """What differs between installs; everything else in the unit is fixed."""

    command: tuple[str, ...]
    """ExecStart: the program (absolute) and its arguments."""
    user: str
    """The account the agent runs as."""
    config: str
    """The config file (absolute)."""
    working_dir: str
    """The config's folder."""
    writable: tuple[tuple[str, str], ...]
    """The folders the agent writes, each with what it is, in the config's order."""
    stop_timeout: int
    """TimeoutStopSec, in seconds."""
    in_home: tuple[tuple[str, str], ...] = ()
    """Paths the agent needs that ``ProtectHome=yes`` would hide, each with what it is."""


PLACEHOLDERS = UnitSpec(
    command=("/opt/silta/.venv/bin/silta", "agent", "run", "--config", "/etc/silta/silta.toml"),
    user="silta",
    config="/etc/silta/silta.toml",
    working_dir="/etc/silta",
    writable=(("/var/lib/silta/state", "the state folder"),
              ("/var/lib/silta/lake", "the lake"),
              ("/srv/silta/dropzone", "connector dropzone")),
    stop_timeout=60,
)


def cmd_unit(loaded: LoadedConfig, args: argparse.Namespace) -> int:
    """Print the unit for this install and config; notes on what to do go to stderr."""
    user = args.user or getpass.getuser()
    spec = spec_for(loaded, user=user, program=program())
    sys.stdout.write(render(spec))
    missing = [p for p, _ in spec.writable if not os.path.isdir(p)]
    if missing:
        sys.stderr.write(
            "silta: note: systemd refuses to start the unit while a ReadWritePaths folder "
            "is missing; create them first:\n  install -d -m 0700 -o "
            f"{shlex.quote(user)} {' '.join(shlex.quote(p) for p in missing)}\n")
    if user in ("root", "0"):
        sys.stderr.write("silta: note: the unit runs the agent as root; give it an account "
                         "of its own with --user (e.g. `useradd --system silta`)\n")
    return 0


def program() -> tuple[str, ...]:
    """The running install's `silta` console script, or its interpreter with ``-m tui``."""
    exe = Path(os.path.abspath(sys.executable))
    script = exe.with_name("silta")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (str(exe), "-m", "tui")


def spec_for(loaded: LoadedConfig, *, user: str, program: tuple[str, ...]) -> UnitSpec:
    """The unit's variable parts for ``loaded``; raises UsageError for what cannot be said."""
    config = _abs(loaded.path)
    writable = _writable(loaded)
    needed = [(program[0], "the program"),
              (os.path.realpath(sys.executable), "the Python interpreter"),
              (sys.base_prefix, "the Python installation"),
              (sys.prefix, "the Python environment"),
              (str(Path(__file__).resolve().parent.parent), "Silta's code"),
              (config, "the config"), *writable, *_read_files(loaded)]
    first: dict[str, str] = {}
    for path, what in needed:
        first.setdefault(path, what)
    in_home = tuple((p, what) for p, what in first.items() if _under_home(p))
    return UnitSpec(command=(*program, "agent", "run", "--config", config), user=user,
                    config=config, working_dir=str(Path(config).parent),
                    writable=tuple(writable), in_home=in_home,
                    stop_timeout=math.ceil(loaded.config.agent.ml_stop_grace_seconds
                                           + _STOP_MARGIN_SECONDS))


def template() -> str:
    """``config/systemd/silta-agent.service``: the unit for placeholder paths."""
    return render(PLACEHOLDERS, as_template=True)


def render(spec: UnitSpec, *, as_template: bool = False) -> str:
    """The unit file's text; raises UsageError for a value systemd cannot be given."""
    user = _user(spec.user)
    exec_start = " ".join([_program(spec.command[0]),
                           *(_word(a, "an argument of ExecStart", dollar=True)
                             for a in spec.command[1:])])
    workdir = _value(_path(spec.working_dir, "the config's folder"))
    if workdir != workdir.rstrip():
        raise UsageError(f"the config's folder {_show(spec.working_dir)!r} ends in a space, "
                         "which systemd drops from WorkingDirectory; rename it")
    folders = [(_word(p, what), p, what) for p, what in spec.writable]
    lines = _header(spec, as_template)
    lines += [
        "[Unit]",
        "Description=Silta agent: on-prem data to a versioned Delta lake, and its ML jobs",
        "Wants=network-online.target",
        "After=network-online.target",
        "# The folders the agent writes may be NFS or SMB mounts: start once they are mounted.",
        *(f"RequiresMountsFor={w}" for w, _, _ in folders),
        "",
        "[Service]",
        "# The agent says READY=1 on $NOTIFY_SOCKET once it runs its jobs, and WATCHDOG=1",
        "# from its main loop; a hung agent is killed and restarted.",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        f"ExecStart={exec_start}",
        f"User={user}",
        f"WorkingDirectory={workdir}",
        "Restart=on-failure",
        "RestartSec=5",
        "# Exit status 2 is a bad config or argument: restarting cannot fix it",
        "# (`silta config check` says what to).",
        "RestartPreventExitStatus=2",
        "# SIGTERM goes to the agent alone: it stops new work, lets in-flight batches finish",
        "# and gives running ML workers ml_stop_grace_seconds before it stops them itself",
        "# (a worker's own SIGTERM would end it at once). Whatever still runs when",
        "# TimeoutStopSec (ml_stop_grace_seconds + 30) is up gets SIGKILL.",
        "KillMode=mixed",
        f"TimeoutStopSec={spec.stop_timeout}",
        "",
        "# Sandbox: the file system is read-only to the agent (its private /tmp aside) but",
        "# for these folders; each must exist before the service starts (systemd refuses",
        "# to start it otherwise).",
        *(f"#   {_show(p)}: {what}" for _, p, what in folders),
        "ProtectSystem=strict",
        *(f"ReadWritePaths={w}" for w, _, _ in folders),
        *_protect_home(spec.in_home),
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "# Files the agent creates are its account's alone. To let operators (`silta tui`)",
        "# or on-prem systems read the state, the lake or published files, give those",
        "# folders a default ACL (`setfacl -d -m g:GROUP:rX DIR`: it overrides the umask),",
        "# or set UMask=0027 and share the agent's group.",
        "UMask=0077",
        "",
        "# Secrets: systemd copies each credential to $CREDENTIALS_DIRECTORY/NAME, readable",
        "# by the agent alone; the config names it as ${credential:NAME}, e.g.",
        "# storage_options = { azure_storage_account_key = \"${credential:lake-key}\" }",
        "# LoadCredential=lake-key:/etc/silta/lake-key",
        "",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


# -- the parts --------------------------------------------------------------------------------
def _header(spec: UnitSpec, as_template: bool) -> list[str]:
    if as_template:
        return [
            "# Silta agent as a systemd service: a TEMPLATE with placeholder paths (/opt/silta,",
            "# /etc/silta, /var/lib/silta, /srv/silta). Do not install it as it is: generate",
            "# the unit of your install, with its real paths and folders:",
            "#   /opt/silta/.venv/bin/silta service unit --config /etc/silta/silta.toml "
            "--user silta > /etc/systemd/system/silta-agent.service",
            "# then `systemctl daemon-reload && systemctl enable --now silta-agent`.",
            "",
        ]
    return [
        "# Silta agent as a systemd service, written by `silta service unit` for the config",
        f"#   {_show(spec.config)}",
        "# Install it as /etc/systemd/system/silta-agent.service, then",
        "#   systemctl daemon-reload && systemctl enable --now silta-agent",
        "# Write it again after moving the install or changing the config's folders.",
        "",
    ]


def _protect_home(in_home: tuple[tuple[str, str], ...]) -> list[str]:
    if not in_home:
        return ["# Nothing of this install is in /home, /root or /run/user: hide them.",
                "ProtectHome=yes"]
    shown = [f"#   {_show(p)}: {what}" for p, what in in_home[:5]]
    if len(in_home) > 5:
        shown.append(f"#   and {len(in_home) - 5} more")
    return ["# ProtectHome=read-only, not yes: `yes` would hide what the agent needs from",
            "# /home, /root or /run/user:", *shown,
            "# read-only keeps them unwritable (the ReadWritePaths above excepted). Install in",
            "# /opt, the config in /etc and the folders in /var/lib or /srv to hide them all.",
            "ProtectHome=read-only"]


def _writable(loaded: LoadedConfig) -> list[tuple[str, str]]:
    """The folders the agent writes: state (and its log's folder), lake, connectors."""
    state = _abs(loaded.state_dir)
    found: list[tuple[str, str]] = [(state, "the state folder")]
    if loaded.log_path is not None:  # `log_file` may lead out of the state folder
        logs = _abs(loaded.log_path.parent)
        if not (logs + "/").startswith(state.rstrip("/") + "/"):
            found.append((logs, "the log's folder"))
    uri = loaded.lake_uri
    if "://" not in uri or uri.startswith("file://"):
        found.append((_abs(loaded.resolve(uri.removeprefix("file://"))), "the lake"))
    for name, conf in loaded.config.connectors.items():
        if isinstance(conf, FolderConnector):
            found.append((_abs(loaded.resolve(conf.path)), f"connector {name}"))
        elif isinstance(conf, SqlConnector):
            db = _sqlite_file(conf.url)
            if db is not None:  # SQLite writes its journal next to the database
                found.append((_abs(loaded.resolve(db).parent), f"connector {name}'s database"))
    unique: dict[str, str] = {}
    for path, what in found:  # a folder inside another stays: it may be a mount of its own
        unique.setdefault(path, what)
    return [(_path(p, what), what) for p, what in unique.items()]


def _sqlite_file(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:" \
            or db.startswith("file:"):
        return None
    return db


def _read_files(loaded: LoadedConfig) -> list[tuple[str, str]]:
    """Files the agent reads besides the config: keys, known_hosts, secrets, programs."""
    found: list[tuple[str, str]] = []
    for name, conf in loaded.config.connectors.items():
        for key, value in conf:
            if isinstance(value, Path):
                found.append((_abs(loaded.resolve(value)), f"connector {name}'s {key}"))
    for channel in loaded.config.alerts.channels:
        if isinstance(channel, CommandChannel) and channel.command[0].startswith("/"):
            found.append((channel.command[0], f"alert channel {channel.name}'s program"))
    # `[lake].storage_options` NAME_file secrets are read at load and not kept: read them
    # from the file again (it loaded a moment ago, so it parses)
    raw = tomllib.loads(loaded.path.read_text(encoding="utf-8"))
    options = raw.get("lake", {}).get("storage_options", {})
    for key, value in options.items() if isinstance(options, dict) else ():
        if key.endswith("_file") and isinstance(value, str) and "${" not in value:
            found.append((_abs(loaded.resolve(value)), f"lake storage option {key}"))
    return found


def _under_home(path: str) -> bool:
    return any(p == root or p.startswith(root + "/")
               for p in {path, os.path.realpath(path)} for root in HOME_ROOTS)


# -- writing values the way systemd reads them --------------------------------------------------
def _abs(path: Path | str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _show(text: str) -> str:
    """``text`` with anything unprintable escaped, for messages."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _path(path: str, what: str) -> str:
    """``path`` if it can be written into a unit at all, else UsageError."""
    if not os.path.isabs(path):
        raise UsageError(f"{what} {_show(path)!r} is not an absolute path")
    if not path.isprintable():
        raise UsageError(f"{what} {_show(path)!r} contains a newline, tab or other control "
                         "character, which a systemd unit cannot hold; rename or move it")
    if path.endswith("\\"):
        raise UsageError(f"{what} {_show(path)!r} ends in a backslash, which continues a "
                         "line of a systemd unit; rename it")
    return path


def _value(text: str) -> str:
    """A value systemd expands specifiers in (``%``) and takes as it is otherwise."""
    return text.replace("%", "%%")


def _word(text: str, what: str, *, dollar: bool = False) -> str:
    """One word of a list (quoted when needed); ``dollar``: where ``$VAR`` expands."""
    if text.startswith("/"):
        _path(text, what)
    elif not text.isprintable():
        raise UsageError(f"{what} {_show(text)!r} contains a control character")
    out = _value(text.replace("\\", "\\\\").replace('"', '\\"'))
    if dollar:
        out = out.replace("$", "$$")
    return out if _PLAIN.fullmatch(text) else f'"{out}"'


def _program(path: str) -> str:
    _path(path, "the program")
    bad = sorted({c for c in path if c in "\"'\\$" or (c.isspace() and c != " ")})
    if bad:
        raise UsageError(f"the program {_show(path)!r} cannot be ExecStart's program: systemd "
                         f"refuses or expands {' '.join(map(repr, bad))} in its path; install "
                         "Silta in a folder without them")
    out = _value(path)
    return out if _PLAIN.fullmatch(path) else f'"{out}"'


def _user(user: str) -> str:
    if not _USER.fullmatch(user):
        raise UsageError(f"user {_show(user)!r} is not a name systemd accepts as it is: "
                         "letters, digits, `_` and `-`, at most 31, not starting with a digit "
                         "or `-` (or a numeric uid); pass --user NAME")
    return user
