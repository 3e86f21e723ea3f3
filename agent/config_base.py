"""What every config section shares: the strict base model and the name rules.

Kept apart from ``config.py`` so the ML sections (``agent/ml/config.py``) can build on it
without importing the whole config module (which imports them).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from connectors.errors import UnsafeNameError
from connectors.names import check_relative_path

#: names of syncs, jobs and models: letters, digits, ``_ . -``
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: a plain column name (letters, digits, ``_``, spaces)
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,127}$")


class StrictModel(BaseModel):
    """Unknown keys are errors; values are frozen; field docstrings become descriptions."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              use_attribute_docstrings=True)


def check_columns(columns: list[str] | None) -> list[str] | None:
    """Raise ValueError for a name that is not a plain column name (a validator's body)."""
    for c in columns or []:
        if not IDENT.match(c):
            raise ValueError(f"column {c!r} is not a plain column name")
    return columns


def check_cron(expr: str | None) -> str | None:
    """Raise ValueError for an expression APScheduler's crontab parser refuses."""
    if expr is None:
        return expr
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr)
    except ValueError as e:
        raise ValueError(f"not a cron expression ({e}); use 5 fields like "
                         "`*/5 * * * *`") from None
    return expr


def check_lake_table(name: str, *, writable: bool = False) -> str:
    """Raise ValueError unless ``name`` is a safe table path (and not Silta's own, to write)."""
    try:
        check_relative_path(name, what="table name")
    except UnsafeNameError as e:
        raise ValueError(str(e)) from None
    if writable and name.split("/")[0].startswith("_silta"):
        raise ValueError("tables under `_silta/` belong to Silta itself; choose another")
    return name


JOB_KINDS = ("sync", "train", "predict", "monitor")
#: the config section of each kind of job
JOB_SECTIONS = {"syncs": "sync", "trainings": "train", "predictions": "predict",
                "monitors": "monitor"}


def parse_after(item: str) -> tuple[str, str]:
    """``"predict:x"`` -> ``("predict", "x")``; a bare name is a sync (``after = ["ingest"]``)."""
    kind, sep, name = item.partition(":")
    if sep and kind in JOB_KINDS:
        return kind, name
    return "sync", item


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d12h"``, ``"1w"`` -> seconds; ValueError otherwise."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration; write it like `90s`, `15m`, `2h`, "
                         "`1d` or `1d12h`")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds
