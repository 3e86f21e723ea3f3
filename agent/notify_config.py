"""The ``[alerts]`` section of the config: where alert notices go and how often.

Every alert is always written to the log (``silta.alerts``); each entry of
``[[alerts.channels]]`` adds a webhook (plain JSON, Slack or Teams), an e-mail or a local
command. Secrets (bearer tokens, SMTP passwords) are never written in the file: the config
names the environment variable that holds them.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config_base import NAME_PATTERN, StrictModel, parse_duration

Severity = Literal["info", "warning", "critical"]
_RANKS: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

#: an environment variable name as POSIX shells accept it
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: an HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: a bare mail address: something@domain, no spaces or angle brackets
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def severity_rank(s: Severity) -> int:
    """``info`` 0 < ``warning`` 1 < ``critical`` 2, to compare a notice with a threshold."""
    return _RANKS[s]


def _check_env_name(name: str, what: str) -> str:
    if not _ENV_NAME.match(name):
        raise ValueError(f"{what} {name!r} is not an environment variable name "
                         "(letters, digits and `_`, not starting with a digit)")
    return name


def _check_address(addr: str) -> str:
    if not _ADDRESS.match(addr.strip()):
        raise ValueError(f"{addr!r} is not a mail address; write it like `ops@example.org`")
    return addr.strip()


class WebhookChannel(StrictModel):
    """POST each notice as JSON to a URL (a chat webhook, an incident tool, a gateway)."""

    type: Literal["webhook"]
    """Channel kind."""
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Unique name of the channel, used in logs and `silta alerts` output."""
    url: str
    """`http://` or `https://` URL to POST to. Slack and Teams webhook URLs carry a token:
    Silta only ever shows their scheme, host and port."""
    format: Literal["json", "slack", "teams"] = "json"
    """`json`: the notice's fields plus `title` and `text`; `slack`: a Slack incoming
    webhook message; `teams`: an Adaptive Card for a Teams workflow or incoming webhook."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers with plain (non-secret) values."""
    headers_from_env: dict[str, str] = Field(default_factory=dict)
    """Headers whose value is read from an environment variable when a notice is sent,
    e.g. `{ Authorization = "SILTA_WEBHOOK_AUTH" }`; the value is a secret."""
    timeout_seconds: float = Field(10, gt=0, le=600)
    """How long to wait for the server to answer."""
    min_severity: Severity = "warning"
    """Only alerts at or above this severity are sent here."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v.strip())
        try:
            parts.port  # noqa: B018 - a bad port only shows when it is read
        except ValueError:
            raise ValueError("the port in the webhook URL is not a number from 1 to "
                             "65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # echo only the scheme: the rest of a webhook URL may be its token
            raise ValueError(f"webhook URL must start with http:// or https:// and name a "
                             f"host (got scheme {parts.scheme or 'none'!r})")
        return v.strip()

    @field_validator("headers", "headers_from_env")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
        return v

    @field_validator("headers")
    @classmethod
    def _header_values(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} has a line break in its value")
        return v

    @field_validator("headers_from_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env in v.items():
            _check_env_name(env, f"environment variable of header {header!r}")
        return v

    @model_validator(mode="after")
    def _no_twice(self) -> WebhookChannel:
        twice = {h.lower() for h in self.headers} & {h.lower() for h in self.headers_from_env}
        if twice:
            raise ValueError(f"header(s) {sorted(twice)} are in both `headers` and "
                             "`headers_from_env`; keep one")
        return self


class EmailChannel(StrictModel):
    """Send each notice as a plain-text e-mail through an SMTP server."""

    type: Literal["email"]
    """Channel kind."""
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Unique name of the channel, used in logs and `silta alerts` output."""
    host: str = Field(min_length=1)
    """SMTP server (the office's mail relay)."""
    port: int = Field(25, ge=1, le=65535)
    """SMTP port: usually 25 (relay), 587 (`starttls`) or 465 (`ssl`)."""
    security: Literal["none", "starttls", "ssl"] = "none"
    """`starttls` upgrades a plain connection; `ssl` connects with TLS from the start;
    certificates are checked against the system's trust store."""
    username: str | None = None
    """Login name, if the server needs one (then `password_env` too)."""
    password_env: str | None = None
    """Environment variable holding the SMTP password; the value is a secret."""
    sender: str = Field(alias="from")
    """The `From` address (TOML key `from`)."""
    to: list[str] = Field(min_length=1)
    """Recipient addresses."""
    subject_prefix: str = "[silta]"
    """Put in front of every subject, for mail filters."""
    timeout_seconds: float = Field(20, gt=0, le=600)
    """How long to wait for each answer of the server."""
    min_severity: Severity = "warning"
    """Only alerts at or above this severity are sent here."""

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [_check_address(a) for a in v]

    @field_validator("password_env")
    @classmethod
    def _password_env(cls, v: str | None) -> str | None:
        return v if v is None else _check_env_name(v, "password_env")

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "\r" in v or "\n" in v:
            raise ValueError("subject_prefix has a line break")
        return v

    @model_validator(mode="after")
    def _login(self) -> EmailChannel:
        # a login needs both halves; one alone is a typo, better found at load time
        if (self.username is None) != (self.password_env is None):
            raise ValueError("set both `username` and `password_env` to log in, or neither")
        return self


class CommandChannel(StrictModel):
    """Run a local program with the notice as JSON on its stdin (a paging tool, a script)."""

    type: Literal["command"]
    """Channel kind."""
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Unique name of the channel, used in logs and `silta alerts` output."""
    command: list[str] = Field(min_length=1)
    """Program and arguments, e.g. `["/usr/local/bin/page-oncall", "--team", "stats"]`.
    Run directly, never through a shell; it also gets `SILTA_ALERT_ID`,
    `SILTA_ALERT_EVENT`, `SILTA_ALERT_SEVERITY` and `SILTA_ALERT_TITLE` in its
    environment. Exit status 0 means delivered."""
    timeout_seconds: float = Field(30, gt=0, le=3600)
    """The program is killed (and the notice retried) after this long."""
    min_severity: Severity = "warning"
    """Only alerts at or above this severity are sent here."""

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the program (first item of `command`) is empty")
        return v


Channel = Annotated[WebhookChannel | EmailChannel | CommandChannel, Field(discriminator="type")]


class AlertsSection(StrictModel):
    """Where alert notices go, how often a firing alert is repeated, how long to retry."""

    repeat_interval: str = "4h"
    """A notice is sent again this often while an alert keeps firing and is not
    acknowledged (`90s`, `15m`, `4h`, `1d`)."""
    retry_for: str = "24h"
    """How long a failing delivery is retried (with growing pauses) before it is given up
    and logged as an error."""
    channels: list[Channel] = Field(default_factory=list)
    """Webhooks, e-mail and commands that get notices, besides the log."""

    @field_validator("repeat_interval", "retry_for")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[Channel]) -> list[Channel]:
        seen: set[str] = set()
        for ch in v:
            if ch.name in seen:
                raise ValueError(f"two channels are named {ch.name!r}; names must be unique")
            seen.add(ch.name)
        return v

    @property
    def repeat_seconds(self) -> float:
        """``repeat_interval`` in seconds."""
        return parse_duration(self.repeat_interval)

    @property
    def retry_seconds(self) -> float:
        """``retry_for`` in seconds."""
        return parse_duration(self.retry_for)
