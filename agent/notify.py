"""Delivering one alert notice to one channel: a webhook, an e-mail, a local command.

``send`` either delivers or raises a ``StoreError`` whose ``retriable`` tells the caller
whether to try again later (a server that was down) or give up (a refused token), and a
``ConfigError`` when a secret's environment variable is missing. Error messages name the
channel and what to do, and never carry a secret: webhook URLs are shown as
``scheme://host:port`` only (Slack and Teams URLs hold their token in the path), header
values and passwords are never shown, and whatever a server or program says back is
scrubbed of them. The log (``log_notice``) is the channel that is always on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from http.client import HTTPException
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, NoReturn

from agent.jsonsafe import json_safe
from agent.notify_config import (
    Channel,
    CommandChannel,
    EmailChannel,
    Severity,
    WebhookChannel,
    severity_rank,
)
from connectors.errors import AuthError, ConfigError, StoreError

log = logging.getLogger("silta.alerts")

#: what a program's stderr or a server's answer may add to an error message
_TAIL_CHARS = 500
_BODY_CHARS = 300
_FIRST_DELAY = 5.0
_MAX_DELAY = 900.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
#: a URL in free text: keep scheme and host, drop user info, path and query
_URL_IN_TEXT = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://(?:[^\s/@'\"<>]*@)?([^\s/'\"<>?#]+)"
                          r"([/?#][^\s'\"<>]*)?")
#: ``password=...``, ``token: ...`` and the like in free text
_SECRET_PAIR = re.compile(r"(?i)\b(password|passwd|pwd|token|secret|api[_-]?key|"
                          r"authorization)(\s*[=:]\s*)(bearer\s+)?\S+")
_EVENT_WORDS = {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED"}


def _user_agent() -> str:
    try:
        return f"silta/{version('silta')}"
    except PackageNotFoundError:
        return "silta/unknown"  # run from a source tree that was never installed


_USER_AGENT = _user_agent()


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _number(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4g}"


@dataclass(frozen=True, kw_only=True)
class Notice:
    """One message about one alert: it started firing, still fires, or was resolved."""

    event: Literal["firing", "repeat", "resolved"]
    alert_id: int
    monitor: str
    check: str
    target: str
    severity: Severity
    #: the alert's state when the notice was made (e.g. ``firing``, ``acknowledged``)
    state: str
    summary: str
    value: float | None
    threshold: float | None
    #: how many monitoring runs found the problem
    count: int
    first_seen: str
    last_seen: str
    run_id: str | None
    #: the agent that raised the alert
    agent: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """Every field, JSON-safe (non-finite numbers are null)."""
        out: dict[str, Any] = json_safe(dataclasses.asdict(self), text_for_other=True)
        return out

    @property
    def title(self) -> str:
        """``"FIRING warning: answers_drift / drift / job_title"`` (one line)."""
        where = " / ".join(p for p in (self.monitor, self.check, self.target) if p)
        return _one_line(f"{_EVENT_WORDS[self.event]} {self.severity}: {where}")

    @property
    def text(self) -> str:
        """A few lines for people: what, how far off, since when, how to acknowledge."""
        lines = [self.summary.strip() or self.title]
        if self.value is not None or self.threshold is not None:
            limit = "" if self.threshold is None else f" (threshold {_number(self.threshold)})"
            lines.append(f"Value: {_number(self.value)}{limit}")
        times = "time" if self.count == 1 else "times"
        if self.event == "resolved":
            lines.append(f"Resolved; it was seen {self.count} {times} from {self.first_seen} "
                         f"to {self.last_seen}")
        else:
            lines.append(f"Seen {self.count} {times} since {self.first_seen} "
                         f"(last {self.last_seen})")
        if self.run_id:
            lines.append(f"Run: {self.run_id}")
        lines.append(f"Agent: {self.agent}")
        if self.event != "resolved" and self.state != "acknowledged":
            lines.append(f"Acknowledge: silta alerts ack {self.alert_id}")
        return "\n".join(lines)


def reaches(channel: Channel, severity: str) -> bool:
    """Whether an alert of ``severity`` is for ``channel``: at least its ``min_severity``."""
    return severity_rank(severity) >= severity_rank(channel.min_severity)  # type: ignore[arg-type]


def should_send(channel: Channel, notice: Notice) -> bool:
    """Whether ``notice``'s severity reaches ``channel`` (the alert book also sends a
    resolved notice only to the channels that were told the alert fired)."""
    return reaches(channel, notice.severity)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed deliveries: 5, 10, 20, ... at most 900."""
    exponent = min(max(attempts, 1) - 1, 16)  # capped so a huge count cannot overflow
    return min(_FIRST_DELAY * 2.0 ** exponent, _MAX_DELAY)


def log_notice(notice: Notice) -> None:
    """Write the notice to the ``silta.alerts`` log, the channel that is always on.

    Critical alerts log at ERROR, warnings at WARNING, info alerts and resolutions at INFO.
    """
    if notice.event == "resolved" or notice.severity == "info":
        level = logging.INFO
    elif notice.severity == "critical":
        level = logging.ERROR
    else:
        level = logging.WARNING
    summary = _one_line(notice.summary)
    if summary:
        log.log(level, "%s: %s", notice.title, summary)
    else:
        log.log(level, "%s", notice.title)


def send(channel: Channel, notice: Notice) -> None:
    """Deliver ``notice`` through ``channel`` (the caller decides with ``should_send``).

    Raises:
        StoreError: delivery failed; ``retriable`` says whether a later try can succeed.
        AuthError: the SMTP server refused the login (a ``StoreError``).
        ConfigError: an environment variable holding a secret is not set.
    """
    if isinstance(channel, WebhookChannel):
        _post_webhook(channel, notice)
    elif isinstance(channel, EmailChannel):
        _send_email(channel, notice)
    else:
        _run_command(channel, notice)


# --- scrubbing ---------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/x`` -> ``https://hooks.slack.com``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets (in their URL-quoted forms too), URL paths and
    ``key=value`` secrets."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in {secret, urllib.parse.quote(secret, safe=""),
                     urllib.parse.quote_plus(secret), urllib.parse.unquote(secret)}:
            text = text.replace(form, "***")
    text = _URL_IN_TEXT.sub(lambda m: f"{m[1]}://{m[2]}" + ("/***" if m[3] else ""), text)
    return _SECRET_PAIR.sub(lambda m: f"{m[1]}{m[2]}***", text)


def _url_secrets(url: str) -> list[str]:
    """The URL and its parts that may be a token: path, query, longer segments, password."""
    parts = urllib.parse.urlsplit(url)
    found = [url, parts.query, parts.password or ""]
    if len(parts.path) > 1:
        found.append(parts.path)
    pieces = re.split(r"[/?&=]", parts.path + "?" + parts.query)
    # a token is long and random; short or plain pieces (`services`, `invoke`) are words
    found.extend(p for p in pieces
                 if len(p) >= 16 or (len(p) >= 8 and any(c.isdigit() for c in p)))
    return found


def _tail(data: bytes | str | None) -> str:
    """The last ``_TAIL_CHARS`` characters of a program's output, on one line."""
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = _one_line(text)
    return text if len(text) <= _TAIL_CHARS else "…" + text[-(_TAIL_CHARS - 1):]


def _env_secret(env: str, where: str, what: str) -> str:
    value = os.environ.get(env)
    if not value:
        raise ConfigError(f"{where}: environment variable {env} ({what}) is not set or empty; "
                          "set it in the agent's environment (e.g. its service unit) and "
                          "restart the agent")
    return value


# --- webhook -----------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend our secret headers to wherever they point."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None  # the 3xx then comes back as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


def webhook_payload(channel: WebhookChannel, notice: Notice) -> dict[str, Any]:
    """The JSON body posted for ``notice`` in the channel's ``format``."""
    if channel.format == "slack":
        return _slack_payload(notice)
    if channel.format == "teams":
        return _teams_payload(notice)
    return {**notice.as_json(), "title": notice.title, "text": notice.text}


def _slack_escape(text: str) -> str:
    # the three characters Slack's mrkdwn wants escaped
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_payload(notice: Notice) -> dict[str, Any]:
    body = f"*{_slack_escape(notice.title)}*\n{_slack_escape(notice.text)}"
    return {
        "text": notice.title,  # the notification preview and the fallback
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
            {"type": "context", "elements": [
                {"type": "mrkdwn",
                 "text": _slack_escape(f"alert {notice.alert_id} · agent {notice.agent}")}]},
        ],
    }


def _facts(notice: Notice) -> list[tuple[str, str]]:
    facts = [("Alert", str(notice.alert_id)), ("Monitor", notice.monitor),
             ("Check", notice.check), ("Target", notice.target),
             ("Severity", notice.severity), ("State", notice.state),
             ("Value", "" if notice.value is None else _number(notice.value)),
             ("Threshold", "" if notice.threshold is None else _number(notice.threshold)),
             ("Count", str(notice.count)), ("First seen", notice.first_seen),
             ("Last seen", notice.last_seen), ("Run", notice.run_id or ""),
             ("Agent", notice.agent)]
    return [(k, v) for k, v in facts if v]


_TEAMS_COLOURS = {"critical": "Attention", "warning": "Warning", "info": "Accent"}


def _teams_payload(notice: Notice) -> dict[str, Any]:
    colour = "Good" if notice.event == "resolved" else _TEAMS_COLOURS[notice.severity]
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": notice.title, "weight": "Bolder", "size": "Medium",
         "color": colour, "wrap": True},
        {"type": "TextBlock", "text": notice.summary or notice.title, "wrap": True},
        {"type": "FactSet",
         "facts": [{"title": k, "value": v} for k, v in _facts(notice)]},
    ]
    if notice.event != "resolved" and notice.state != "acknowledged":
        body.append({"type": "TextBlock", "wrap": True, "isSubtle": True,
                     "text": f"Acknowledge: silta alerts ack {notice.alert_id}"})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard", "version": "1.4", "body": body}
    return {"type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                             "contentUrl": None, "content": card}]}


def _http_advice(status: int, channel: WebhookChannel) -> str:
    if status in (401, 403):
        envs = ", ".join(channel.headers_from_env.values())
        return ("the server refused the credentials; check the webhook URL"
                + (f" and the token in {envs}" if envs else ""))
    if status in (404, 410):
        return "check the URL: the webhook may have been deleted or retyped"
    if 300 <= status < 400:
        return "the server redirects elsewhere; configure the final URL"
    if status in (408, 429) or status >= 500:
        return "will retry"
    return f"the server refused the message; check `url` and `format` ({channel.format})"


def _post_webhook(channel: WebhookChannel, notice: Notice) -> None:
    where = f"webhook channel {channel.name!r} ({redact_url(channel.url)})"
    secrets = _url_secrets(channel.url)
    headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT,
               **channel.headers}
    for header, env in channel.headers_from_env.items():
        value = _env_secret(env, where, f"header {header}")
        if "\r" in value or "\n" in value:
            # http.client would refuse it with the value in its message
            raise ConfigError(f"{where}: environment variable {env} (header {header}) holds a "
                              "line break; store the bare value")
        if not value.isascii():
            # http.client encodes headers as latin-1 and would fail with the value in hand
            raise ConfigError(f"{where}: environment variable {env} (header {header}) holds "
                              "characters outside ASCII; HTTP headers carry ASCII only")
        headers[header] = value
        secrets.append(value)
    data = json.dumps(webhook_payload(channel, notice), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
    request = urllib.request.Request(channel.url, data=data, headers=headers, method="POST")

    def fail(msg: str, retriable: bool) -> NoReturn:
        raise StoreError(f"{where}: {_scrub(msg, secrets)}", retriable=retriable)

    try:
        with _OPENER.open(request, timeout=channel.timeout_seconds) as response:
            response.read(65_536)  # drain, so the connection closes cleanly
    except urllib.error.HTTPError as e:
        try:
            said = _one_line(e.read(_BODY_CHARS * 4).decode("utf-8", "replace"))[:_BODY_CHARS]
        except (OSError, HTTPException):
            said = ""
        retriable = e.code >= 500 or e.code in (408, 429)
        answer = f"HTTP {e.code} {e.reason}" + (f" ({said})" if said else "")
        fail(f"server answered {answer}; {_http_advice(e.code, channel)}", retriable)
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            fail(f"TLS certificate refused ({reason.verify_message}); fix the server's "
                 "certificate or the system's trust store", False)
        fail(f"cannot reach the server ({reason}); check that it is reachable from this "
             "machine (proxy, firewall, DNS); will retry", True)
    except (OSError, HTTPException) as e:
        # timeouts while reading, a connection reset, a garbled answer
        fail(f"no valid answer from the server ({type(e).__name__}: {e}); will retry", True)


# --- e-mail ------------------------------------------------------------------------------


def email_message(channel: EmailChannel, notice: Notice) -> EmailMessage:
    """The e-mail sent for ``notice``: plain text, with ``X-Silta-Alert: <alert_id>``."""
    msg = EmailMessage()
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg["Subject"] = _one_line(f"{channel.subject_prefix} {notice.title}")
    msg["Date"] = formatdate(localtime=True)
    # a domain of our own: make_msgid would otherwise ask DNS for this host's name
    domain = channel.sender.rpartition("@")[2] or "silta.invalid"
    msg["Message-ID"] = make_msgid(idstring=f"silta-alert-{notice.alert_id}", domain=domain)
    msg["X-Silta-Alert"] = str(notice.alert_id)
    msg["X-Silta-Event"] = notice.event
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an agent
    msg.set_content(f"{notice.text}\n\n-- \nSent by the Silta agent {notice.agent}\n")
    return msg


def _smtp_text(e: smtplib.SMTPResponseException) -> str:
    said = e.smtp_error
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    return _one_line(text)[:_BODY_CHARS]


def _send_email(channel: EmailChannel, notice: Notice) -> None:
    where = f"e-mail channel {channel.name!r} ({channel.host}:{channel.port})"
    password = None
    if channel.username is not None and channel.password_env is not None:
        password = _env_secret(channel.password_env, where, "the SMTP password")
    secrets = [password or ""]
    msg = email_message(channel, notice)
    context = ssl.create_default_context()

    def fail(msg: str, retriable: bool, cls: type[StoreError] = StoreError) -> NoReturn:
        raise cls(f"{where}: {_scrub(msg, secrets)}", retriable=retriable)

    server: smtplib.SMTP | None = None
    try:
        if channel.security == "ssl":
            server = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout_seconds,
                                      context=context)
        else:
            server = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_seconds)
        if channel.security == "starttls":
            server.starttls(context=context)
        if channel.username is not None and password is not None:
            # no initial response: smtplib's AUTH LOGIN with one sends the user name where
            # the password belongs when it falls back from a refused PLAIN
            server.login(channel.username, password, initial_response_ok=False)
        refused = server.send_message(msg)
    except smtplib.SMTPAuthenticationError as e:
        fail(f"login as {channel.username!r} refused ({e.smtp_code} {_smtp_text(e)}); check "
             f"the user name and the password in {channel.password_env}",
             400 <= e.smtp_code < 500, AuthError)
    except smtplib.SMTPRecipientsRefused as e:
        codes = [code for code, _ in e.recipients.values()]
        said = "; ".join(f"{addr}: {code} {text.decode('utf-8', 'replace')}"
                         for addr, (code, text) in e.recipients.items())
        temporary = all(400 <= c < 500 for c in codes)
        fail(f"every recipient was refused ({_one_line(said)[:_BODY_CHARS]})"
             + ("; will retry" if temporary else "; check `to`"), temporary)
    except smtplib.SMTPNotSupportedError as e:
        fail(f"the server does not support what the config asks ({e}); check `security` and "
             "`username`", False)
    except smtplib.SMTPServerDisconnected as e:
        fail(f"the server closed the connection ({e}); will retry", True)
    except smtplib.SMTPResponseException as e:
        temporary = 400 <= e.smtp_code < 500 or e.smtp_code < 0
        fail(f"the server answered {e.smtp_code} {_smtp_text(e)}"
             + ("; will retry" if temporary else "; check `from`, `to` and the relay's rules"),
             temporary)
    except smtplib.SMTPException as e:
        fail(f"SMTP failed ({type(e).__name__}: {e}); will retry", True)
    except ssl.SSLCertVerificationError as e:
        fail(f"TLS certificate refused ({e.verify_message}); fix the server's certificate or "
             "the system's trust store", False)
    except ssl.SSLError as e:
        # e.g. `ssl` against a plain port: trying again will not help
        fail(f"TLS failed ({e.reason or e}); check `security` and `port`", False)
    except OSError as e:
        fail(f"cannot reach the server ({type(e).__name__}: {e}); check the host, the port and "
             "the firewall; will retry", True)
    finally:
        if server is not None:
            _quit(server)
    if refused:
        log.warning("%s: some recipients were refused and got no notice for alert %s: %s",
                    where, notice.alert_id, ", ".join(sorted(refused)))


def _quit(server: smtplib.SMTP) -> None:
    # the message is already accepted; a failing QUIT must not make the caller send it twice
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        server.close()


# --- command -----------------------------------------------------------------------------


def _run_command(channel: CommandChannel, notice: Notice) -> None:
    program = channel.command[0]
    where = f"command channel {channel.name!r} ({program})"
    env = {**os.environ, "SILTA_ALERT_ID": str(notice.alert_id),
           "SILTA_ALERT_EVENT": notice.event, "SILTA_ALERT_SEVERITY": notice.severity,
           "SILTA_ALERT_TITLE": notice.title}
    data = json.dumps(notice.as_json(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    try:
        # a list argv and no shell: nothing in the notice is ever interpreted as a command
        done = subprocess.run(channel.command, input=data, capture_output=True, env=env,
                              timeout=channel.timeout_seconds, check=False)
    except FileNotFoundError:
        raise StoreError(f"{where}: program not found; give its full path or install "
                         "it", retriable=False) from None
    except PermissionError:
        raise StoreError(f"{where}: program is not executable by the agent's user; "
                         "fix its permissions (chmod +x)", retriable=False) from None
    except subprocess.TimeoutExpired as e:
        said = _scrub(_tail(e.stderr))
        raise StoreError(f"{where}: killed after {channel.timeout_seconds:g} s"
                         + (f"; stderr: {said}" if said else "") + "; will retry",
                         retriable=True) from None
    except OSError as e:
        raise StoreError(f"{where}: cannot start it ({e.strerror or e}); check `command`",
                         retriable=False) from None
    if done.returncode != 0:
        status = (f"was killed by signal {-done.returncode}" if done.returncode < 0
                  else f"exited with status {done.returncode}")
        said = _scrub(_tail(done.stderr))
        raise StoreError(f"{where}: {status}" + (f"; stderr: {said}" if said else "")
                         + "; will retry", retriable=True)
