"""Structured logs to stderr: text for people, JSON lines for collectors."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path

_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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
    formatter = logging.Formatter(_TEXT, datefmt="%Y-%m-%dT%H:%M:%SZ")
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


def add_log_file(path: Path, fmt: str = "text") -> None:
    """Also write the log to ``path``, rotated (the service's own log; the TUI tails it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_KEEP, encoding="utf-8")
    handler.setFormatter(_formatter(fmt))
    logging.getLogger("silta").addHandler(handler)
