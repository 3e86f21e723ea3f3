"""Alert notices delivered to real servers on loopback: an HTTP server, an SMTP server
(aiosmtpd) and real programs. Nothing is mocked; each test starts what it talks to.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import TypeAdapter, ValidationError

from agent.notify import Notice, log_notice, retry_delay, send, should_send
from agent.notify_config import AlertsSection, Channel, severity_rank
from connectors.errors import AuthError, ConfigError, StoreError
from tests.servers import free_port

CHANNEL: TypeAdapter[Channel] = TypeAdapter(Channel)
TOKEN = "Bearer s3cr3t-token-0123456789"
HOOK_PATH = "/services/T0000/B0000/XXXXsecretpathtokenXXXX"


def channel(**kw: Any) -> Channel:
    return CHANNEL.validate_python(kw)


def notice(**kw: Any) -> Notice:
    base: dict[str, Any] = dict(
        event="firing", alert_id=42, monitor="answers_drift", check="drift",
        target="job_title", severity="warning", state="firing",
        summary="PSI 0.31 above 0.2 on job_title", value=0.31, threshold=0.2, count=3,
        first_seen="2025-03-01T06:00:00Z", last_seen="2025-03-01T18:00:00Z",
        run_id="run-7f3a", agent="stats-agent-1", detail={"psi": 0.31, "bins": [1, 2]})
    base.update(kw)
    return Notice(**base)


# --- a real HTTP server ------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class HookServer:
    """Records every POST; answers ``status`` and, on errors, echoes path and auth back."""

    port: int
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    location: str = ""

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def hook() -> Iterator[HookServer]:
    state = HookServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Recorded(self.path, dict(self.headers.items()),
                                           json.loads(raw)))
            self.send_response(state.status)
            if state.location:
                self.send_header("Location", state.location)
            # a careless server repeats what it got: the error message must not
            echo = (b"ok" if state.status < 300 else
                    f"bad request to {self.path} with {self.headers.get('Authorization')}"
                    .encode())
            self.send_header("Content-Length", str(len(echo)))
            self.end_headers()
            self.wfile.write(echo)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = None
    for _ in range(20):  # free_port() can race with another process
        try:
            server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
            break
        except OSError:
            continue
    assert server is not None, "no free port for the webhook server"
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def webhook(server: HookServer, **kw: Any) -> Channel:
    return channel(type="webhook", name="hook", url=server.url(), **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_json_webhook_posts_the_notice(hook: HookServer) -> None:
    n = notice()
    send(webhook(hook), n)
    [req] = hook.requests
    assert req.path == HOOK_PATH
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("silta/")
    assert req.body == {**n.as_json(), "title": n.title, "text": n.text}
    assert req.body["alert_id"] == 42
    assert req.body["severity"] == "warning"
    assert req.body["title"] == "FIRING warning: answers_drift / drift / job_title"
    assert req.body["detail"] == {"psi": 0.31, "bins": [1, 2]}
    assert "silta alerts ack 42" in req.body["text"]


def test_slack_webhook_posts_text_and_blocks(hook: HookServer) -> None:
    send(webhook(hook, format="slack"), notice(event="repeat", summary="a < b & c"))
    [req] = hook.requests
    assert req.body["text"] == "STILL FIRING warning: answers_drift / drift / job_title"
    section = req.body["blocks"][0]
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].startswith(
        "*STILL FIRING warning: answers_drift / drift / job_title*\na &lt; b &amp; c\n")
    assert "Value: 0.31 (threshold 0.2)" in section["text"]["text"]
    assert req.body["blocks"][1]["elements"][0]["text"] == "alert 42 · agent stats-agent-1"


def test_teams_webhook_posts_an_adaptive_card(hook: HookServer) -> None:
    send(webhook(hook, format="teams"), notice(severity="critical", event="resolved",
                                               state="resolved"))
    [req] = hook.requests
    assert req.body["type"] == "message"
    [attachment] = req.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    title, summary, facts = card["body"][:3]
    assert title == {"type": "TextBlock", "text": "RESOLVED critical: answers_drift / drift / "
                     "job_title", "weight": "Bolder", "size": "Medium", "color": "Good",
                     "wrap": True}
    assert summary["text"] == "PSI 0.31 above 0.2 on job_title"
    assert facts["type"] == "FactSet"
    got = {f["title"]: f["value"] for f in facts["facts"]}
    assert got == {"Alert": "42", "Monitor": "answers_drift", "Check": "drift",
                   "Target": "job_title", "Severity": "critical", "State": "resolved",
                   "Value": "0.31", "Threshold": "0.2", "Count": "3",
                   "First seen": "2025-03-01T06:00:00Z", "Last seen": "2025-03-01T18:00:00Z",
                   "Run": "run-7f3a", "Agent": "stats-agent-1"}
    assert len(card["body"]) == 3  # no "acknowledge" line for a resolved alert


def test_header_from_env_reaches_the_server_and_no_message(
        hook: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILTA_TEST_HOOK_AUTH", TOKEN)
    ch = webhook(hook, headers={"X-Team": "stats"},
                 headers_from_env={"Authorization": "SILTA_TEST_HOOK_AUTH"})
    send(ch, notice())
    assert hook.requests[0].headers["Authorization"] == TOKEN
    assert hook.requests[0].headers["X-Team"] == "stats"

    hook.status = 401  # the server echoes the token back in its answer
    with pytest.raises(StoreError) as e:
        send(ch, notice())
    assert not e.value.retriable
    assert "s3cr3t" not in str(e.value)
    assert "SILTA_TEST_HOOK_AUTH" in str(e.value)  # the variable's name says what to fix
    assert "HTTP 401" in str(e.value)


def test_missing_env_for_a_header_is_a_config_error(hook: HookServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SILTA_TEST_UNSET", raising=False)
    ch = webhook(hook, headers_from_env={"Authorization": "SILTA_TEST_UNSET"})
    with pytest.raises(ConfigError) as e:
        send(ch, notice())
    assert not e.value.retriable
    assert "SILTA_TEST_UNSET" in str(e.value)
    assert hook.requests == []


def test_server_down_is_retriable() -> None:
    ch = channel(type="webhook", name="down",
                 url=f"http://127.0.0.1:{closed_port()}{HOOK_PATH}")
    with pytest.raises(StoreError) as e:
        send(ch, notice())
    assert e.value.retriable
    assert "'down'" in str(e.value)
    assert "secretpathtoken" not in str(e.value)


def test_no_answer_is_a_retriable_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(4)
        port = listener.getsockname()[1]
        ch = channel(type="webhook", name="slow", url=f"http://127.0.0.1:{port}/x",
                     timeout_seconds=0.3)
        with pytest.raises(StoreError) as e:
            send(ch, notice())
    assert e.value.retriable


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_server_errors_and_throttling_are_retriable(hook: HookServer, status: int) -> None:
    hook.status = status
    with pytest.raises(StoreError) as e:
        send(webhook(hook), notice())
    assert e.value.retriable
    assert f"HTTP {status}" in str(e.value)


def test_bad_request_is_permanent_and_hides_the_url_token(hook: HookServer) -> None:
    hook.status = 400  # the answer repeats the path, token and all
    with pytest.raises(StoreError) as e:
        send(webhook(hook, format="slack"), notice())
    msg = str(e.value)
    assert not e.value.retriable
    assert f"http://127.0.0.1:{hook.port}" in msg
    assert "HTTP 400" in msg
    for part in ("secretpathtoken", "/services", "T0000", "B0000"):
        assert part not in msg


def test_redirect_is_not_followed(hook: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILTA_TEST_HOOK_AUTH", TOKEN)
    hook.status, hook.location = 307, hook.url("/elsewhere")
    ch = webhook(hook, headers_from_env={"Authorization": "SILTA_TEST_HOOK_AUTH"})
    with pytest.raises(StoreError) as e:
        send(ch, notice())
    assert not e.value.retriable
    assert [r.path for r in hook.requests] == [HOOK_PATH]  # the token went nowhere else
    assert "s3cr3t" not in str(e.value)


# --- a real SMTP server ------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler keeping every envelope; ``rcpt_answer`` refuses recipients."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.rcpt_answer = ""

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.rcpt_answer:
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


def _authenticator(server: SMTPServer, session: Session, envelope: Envelope, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"silta"
          and auth_data.password == b"right-password-123")
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535


@dataclass
class Smtp:
    controller: Controller
    inbox: Inbox

    @property
    def port(self) -> int:
        return int(self.controller.port)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=_authenticator, auth_require_tls=False)
    controller.start()
    yield Smtp(controller, inbox)
    if controller.loop.is_running():
        controller.stop()  # unless the test stopped it already


def mail_channel(port: int, **kw: Any) -> Channel:
    return channel(**{"type": "email", "name": "mail", "host": "127.0.0.1", "port": port,
                      "from": "silta@stats.example", "to": ["ops@stats.example",
                                                            "oncall@stats.example"], **kw})


def test_email_arrives(smtp: Smtp) -> None:
    n = notice(severity="critical")
    send(mail_channel(smtp.port), n)
    [env] = smtp.inbox.envelopes
    assert env.mail_from == "silta@stats.example"
    assert env.rcpt_tos == ["ops@stats.example", "oncall@stats.example"]
    assert isinstance(env.content, bytes)
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["From"] == "silta@stats.example"
    assert msg["To"] == "ops@stats.example, oncall@stats.example"
    assert msg["Subject"] == "[silta] FIRING critical: answers_drift / drift / job_title"
    assert msg["X-Silta-Alert"] == "42"
    assert msg["Message-ID"].endswith("@stats.example>")
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("PSI 0.31 above 0.2 on job_title\n")
    assert "Value: 0.31 (threshold 0.2)" in body
    assert "Run: run-7f3a" in body
    assert "silta alerts ack 42" in body


def test_email_login(smtp: Smtp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILTA_TEST_SMTP_PASSWORD", "right-password-123")
    ch = mail_channel(smtp.port, username="silta", password_env="SILTA_TEST_SMTP_PASSWORD")
    send(ch, notice())
    assert len(smtp.inbox.envelopes) == 1

    monkeypatch.setenv("SILTA_TEST_SMTP_PASSWORD", "wrong-password-456")
    with pytest.raises(AuthError) as e:
        send(ch, notice())
    assert not e.value.retriable
    assert "wrong-password" not in str(e.value)
    assert "SILTA_TEST_SMTP_PASSWORD" in str(e.value)
    assert len(smtp.inbox.envelopes) == 1


@pytest.mark.parametrize(("answer", "retriable"), [("550 5.1.1 no such user", False),
                                                   ("451 4.3.0 try later", True)])
def test_refused_recipients(smtp: Smtp, answer: str, retriable: bool) -> None:
    smtp.inbox.rcpt_answer = answer
    with pytest.raises(StoreError) as e:
        send(mail_channel(smtp.port), notice())
    assert e.value.retriable is retriable
    assert answer.split()[0] in str(e.value)


def test_smtp_server_stopped_is_retriable(smtp: Smtp) -> None:
    smtp.controller.stop()
    with pytest.raises(StoreError) as e:
        send(mail_channel(smtp.port), notice())
    assert e.value.retriable
    assert "'mail'" in str(e.value)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_the_server_does_not_speak_is_permanent(smtp: Smtp, security: str) -> None:
    # the test server speaks plain SMTP and offers no STARTTLS
    with pytest.raises(StoreError) as e:
        send(mail_channel(smtp.port, security=security, timeout_seconds=5), notice())
    assert not e.value.retriable
    assert "security" in str(e.value)
    assert smtp.inbox.envelopes == []


# --- a real program ----------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "hook.py"
    path.write_text("import json, os, sys\n" + body, encoding="utf-8")
    return [sys.executable, str(path)]


def test_command_gets_json_and_env(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    argv = script(tmp_path, f"""
data = sys.stdin.buffer.read()
env = {{k: v for k, v in os.environ.items() if k.startswith("SILTA_ALERT_")}}
open({str(out)!r}, "w").write(json.dumps({{"stdin": data.decode(), "env": env}}))
""")
    n = notice(severity="critical")
    send(channel(type="command", name="pager", command=argv), n)
    got = json.loads(out.read_text())
    assert json.loads(got["stdin"]) == n.as_json()
    assert got["env"] == {"SILTA_ALERT_ID": "42", "SILTA_ALERT_EVENT": "firing",
                          "SILTA_ALERT_SEVERITY": "critical",
                          "SILTA_ALERT_TITLE": "FIRING critical: answers_drift / drift / "
                                               "job_title"}


def test_command_failure_is_retriable_with_stderr_tail(tmp_path: Path) -> None:
    argv = script(tmp_path, """
sys.stderr.write("x" * 2000 + " curl https://hooks.example/services/AAA/BBB token=abc123 "
                 "paging service said no\\n")
sys.exit(1)
""")
    with pytest.raises(StoreError) as e:
        send(channel(type="command", name="pager", command=argv), notice())
    msg = str(e.value)
    assert e.value.retriable
    assert "'pager'" in msg
    assert "exited with status 1" in msg
    assert "paging service said no" in msg
    assert "xxxxxxx" in msg
    assert len(msg) < 800  # the tail, not all 2000 characters
    assert "/services/AAA" not in msg
    assert "abc123" not in msg


def test_command_timeout_is_retriable(tmp_path: Path) -> None:
    argv = script(tmp_path, "import time\ntime.sleep(30)\n")
    with pytest.raises(StoreError) as e:
        send(channel(type="command", name="slow", command=argv, timeout_seconds=0.5),
             notice())
    assert e.value.retriable
    assert "killed after 0.5 s" in str(e.value)


def test_unknown_program_is_permanent(tmp_path: Path) -> None:
    ch = channel(type="command", name="gone", command=[str(tmp_path / "no-such-program")])
    with pytest.raises(StoreError) as e:
        send(ch, notice())
    assert not e.value.retriable
    assert "not found" in str(e.value)


def test_program_not_executable_is_permanent(tmp_path: Path) -> None:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    with pytest.raises(StoreError) as e:
        send(channel(type="command", name="noexec", command=[str(path)]), notice())
    assert not e.value.retriable


# --- rules -------------------------------------------------------------------------------


def test_should_send_by_severity(tmp_path: Path) -> None:
    warn = channel(type="command", name="w", command=["true"])  # min_severity warning
    crit = channel(type="command", name="c", command=["true"], min_severity="critical")
    info = channel(type="command", name="i", command=["true"], min_severity="info")
    assert [should_send(ch, notice(severity="info")) for ch in (info, warn, crit)] == \
        [True, False, False]
    assert [should_send(ch, notice(severity="warning")) for ch in (info, warn, crit)] == \
        [True, True, False]
    assert [should_send(ch, notice(severity="critical")) for ch in (info, warn, crit)] == \
        [True, True, True]
    # a resolution goes where the firing went: by the alert's severity
    assert should_send(warn, notice(event="resolved", severity="warning"))
    assert not should_send(crit, notice(event="resolved", severity="warning"))
    assert severity_rank("info") < severity_rank("warning") < severity_rank("critical")


def test_retry_delay() -> None:
    assert [retry_delay(n) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 640, 900]
    assert retry_delay(0) == 5
    assert retry_delay(10_000) == 900


def test_titles_text_and_json() -> None:
    assert notice(event="repeat").title == "STILL FIRING warning: answers_drift / drift / " \
        "job_title"
    assert notice(event="resolved").title.startswith("RESOLVED warning: ")
    assert "silta alerts ack" not in notice(event="resolved").text
    assert "silta alerts ack" not in notice(state="acknowledged").text
    n = notice(value=float("nan"), threshold=None, run_id=None,
               detail={"when": Path("/x"), "inf": float("inf")})
    assert n.as_json()["value"] is None
    assert n.as_json()["detail"] == {"when": "/x", "inf": None}
    json.dumps(n.as_json(), allow_nan=False)
    assert "Run:" not in n.text


def test_log_notice_levels(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="silta.alerts"):
        log_notice(notice(severity="warning"))
        log_notice(notice(severity="critical", event="repeat"))
        log_notice(notice(event="resolved", severity="critical"))
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("silta.alerts", logging.WARNING), ("silta.alerts", logging.ERROR),
        ("silta.alerts", logging.INFO)]
    assert caplog.records[0].getMessage() == ("FIRING warning: answers_drift / drift / "
                                              "job_title: PSI 0.31 above 0.2 on job_title")


# --- config ------------------------------------------------------------------------------


def test_config_defaults_and_durations() -> None:
    alerts = AlertsSection.model_validate({
        "repeat_interval": "30m",
        "channels": [{"type": "webhook", "name": "chat", "url": "https://hooks.example/x",
                      "format": "teams"},
                     {"type": "email", "name": "mail", "host": "smtp", "from": "a@b.c",
                      "to": ["d@e.f"]},
                     {"type": "command", "name": "pager", "command": ["page"]}]})
    assert alerts.repeat_seconds == 1800
    assert alerts.retry_seconds == 86400
    chat, mail, pager = alerts.channels
    assert chat.min_severity == mail.min_severity == pager.min_severity == "warning"
    assert mail.type == "email"
    assert mail.sender == "a@b.c"
    assert mail.port == 25


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://hooks.example/x", "http:// or https://"),
    ("hooks.slack.com/services/x", "http:// or https://"),
    ("https://", "http:// or https://"), ("file:///etc/passwd", "http:// or https://"),
    ("https://hooks.example:99999/x", "port")])
def test_config_refuses_bad_url(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        channel(type="webhook", name="h", url=url)


def test_config_refuses_duplicate_names() -> None:
    with pytest.raises(ValidationError, match="two channels are named 'x'"):
        AlertsSection.model_validate({"channels": [
            {"type": "command", "name": "x", "command": ["a"]},
            {"type": "webhook", "name": "x", "url": "https://h/"}]})


@pytest.mark.parametrize(("key", "value"), [("to", ["ops.example.org"]),
                                            ("to", ["a@b", "two words@x"]), ("to", []),
                                            ("from", "nobody")])
def test_config_refuses_bad_address(key: str, value: Any) -> None:
    fields = {"type": "email", "name": "m", "host": "smtp", "from": "a@b.c", "to": ["d@e.f"],
              key: value}
    with pytest.raises(ValidationError):
        channel(**fields)


@pytest.mark.parametrize("bad", ["soon", "4 hours", "0s", "", "-1h"])
def test_config_refuses_bad_durations(bad: str) -> None:
    with pytest.raises(ValidationError, match="duration"):
        AlertsSection.model_validate({"repeat_interval": bad})
    with pytest.raises(ValidationError, match="duration"):
        AlertsSection.model_validate({"retry_for": bad})


def test_config_refuses_other_mistakes() -> None:
    with pytest.raises(ValidationError, match="environment variable name"):
        channel(type="webhook", name="h", url="https://h/", headers_from_env={"A": "1BAD"})
    with pytest.raises(ValidationError, match="both"):
        channel(type="email", name="m", host="h", to=["a@b"], username="u", **{"from": "a@b"})
    with pytest.raises(ValidationError):
        channel(type="command", name="c", command=[])
    with pytest.raises(ValidationError):
        channel(type="sms", name="s")


def test_notice_is_frozen() -> None:
    n = notice()
    assert replace(n, count=4).count == 4
    with pytest.raises(AttributeError):
        n.count = 5  # type: ignore[misc]
