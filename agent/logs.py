"""Structured logs to stderr: text for people, JSON lines for collectors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import re
import sys
import time
from pathlib import Path

_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: controls but tab and newline (C0, DEL, C1): a message may quote a file's content
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class TextFormatter(logging.Formatter):
    """Text lines whose message cannot send escape sequences to the terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


LOG_FILE_BYTES, LOG_FILE_KEEP = 10 * 2**20, 5


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    formatter = TextFormatter(_TEXT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Send Silta's logs to stderr (results go to stdout, never mixed)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger("silta")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # APScheduler is chatty at info; keep its warnings.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # paramiko's transport thread logs each connection it loses as an ERROR plus its
    # traceback, one record a line; with no handler of its own they reached stderr raw
    # (logging's last resort): unformatted, outside the JSON log and the log file. The
    # SFTP connector reports the same failure as a Silta error, so keep only criticals.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """The rotated log file; a write that fails (its disk is full) is said once on stderr.

    logging's own handleError prints a traceback to stderr for every record that cannot
    be written: on a full disk that is one traceback per log line, burying the error
    that matters. Here it is one line per outage, and the records still go to stderr.
    """

    _failing = False  # in an outage: said once, until a record is written again
    _last_failed = False

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self._failing and not self._last_failed:
            self._failing = False
            sys.stderr.write(f"silta: writing the log file {self.baseFilename} works again\n")
        self._last_failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._last_failed = True
        if self._failing:
            return
        self._failing = True
        e = sys.exc_info()[1]
        why = e.strerror if isinstance(e, OSError) and e.strerror else repr(e)
        sys.stderr.write(f"silta: cannot write the log file {self.baseFilename}: {why}; "
                         "the log goes on on stderr only until it can be written again\n")


def add_log_file(path: Path, fmt: str = "text") -> None:
    """Also write the log to ``path``, rotated (the service's own log; the TUI tails it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_KEEP, encoding="utf-8")
    handler.setFormatter(_formatter(fmt))
    logging.getLogger("silta").addHandler(handler)
