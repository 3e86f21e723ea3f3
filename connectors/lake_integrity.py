"""A Delta table's newest log entries, checked before anything is written on top of them.

delta-rs refuses some damaged logs by itself (a commit cut in the middle of a line, a
checkpoint that is not Parquet, ``_last_checkpoint`` naming a checkpoint that is gone), but
with an error that names neither the file nor what to do. Others it reads without a word:
a zero-byte commit is an empty version, and a commit cut exactly at a line break is a
smaller commit. A sync that writes on top of either hides the loss for good (the batch
the broken commit carried is gone from the table while the ledger says it landed).

Two checks, both cheap (they read the newest commit or the checkpoint, never the log):

- ``latest_commit_problem``: every line of the newest commit is a JSON object, there is
  at least one, and a commit of Silta's (``silta.app_id`` in its commitInfo) carries the
  ``txn`` action of its ``(app_id, seq)``, which delta-rs writes last: a commit cut at a
  line break has lost it. Commits of other writers have no such marker, so a cut at a
  line break there is not seen.
- ``diagnose``: after delta-rs refused to open the table, which file is damaged: the
  newest commit, or the checkpoint ``_last_checkpoint`` (or the newest one listed) names.

Both return a sentence for ``CorruptTableError`` (what is wrong, in which file, what to
do), or None when the file is sound.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

LOG = "_delta_log"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.[^/]+)?\.(?:parquet|json)$")
_RESTORE = ("restore its original bytes from a backup (or the object store's earlier "
            "version of the file); nothing is written to the table until then")


@dataclass(frozen=True)
class LogAccess:
    """How to reach a table's ``_delta_log``: ``read`` a file by name (FileNotFoundError
    when it is not there) and ``names`` of the files in it."""

    read: Callable[[str], bytes]
    names: Callable[[], list[str]]


def commit_name(version: int) -> str:
    return f"{LOG}/{version:020d}.json"


def latest_commit_problem(data: bytes, version: int) -> str | None:
    """What is wrong with the newest commit (``version``'s bytes ``data``), or None."""
    where = f"its latest commit {commit_name(version)} (version {version})"
    if not data.strip():
        return f"{where} is empty ({len(data)} bytes): {_RESTORE}"
    lines = data.split(b"\n")
    actions: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as e:
            # the last line began as an action and stops before its end: a torn write
            cut = (number == len(lines) and line.lstrip().startswith(b'{"')
                   and not line.rstrip().endswith(b"}"))
            what = (f"ends in the middle of a record on line {number} (the file was cut "
                    "short)" if cut else
                    f"has a line {number} that is not JSON ({_reason(e)})")
            return f"{where} {what}: {_RESTORE}"
        if not isinstance(action, dict) or len(action) != 1:
            return (f"{where} has a line {number} that is not a Delta action (one JSON "
                    f"object with one key): {_RESTORE}")
        actions.append(action)
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), None)
    if isinstance(info, dict) and info.get("silta.app_id") and info.get("silta.seq"):
        app_id, seq = str(info["silta.app_id"]), str(info["silta.seq"])
        txns = [a["txn"] for a in actions if isinstance(a.get("txn"), dict)]
        if not any(t.get("appId") == app_id and str(t.get("version")) == seq
                   for t in txns):
            return (f"{where} lacks the txn action of {app_id} batch {seq} that its "
                    f"commitInfo announces (the file was cut short after line "
                    f"{len(actions)}): {_RESTORE}")
    return None


def diagnose(log: LogAccess) -> str | None:
    """Why delta-rs could not open the table: the damaged newest commit or checkpoint."""
    names = log.names()
    commits = sorted(int(m.group(1)) for n in names if (m := _COMMIT.match(n)))
    if commits:
        latest = commits[-1]
        try:
            problem = latest_commit_problem(log.read(commit_name(latest)), latest)
        except FileNotFoundError:
            problem = None
        if problem is not None:
            return problem
    return _checkpoint_problem(log, names, commits)


def _checkpoint_problem(log: LogAccess, names: list[str], commits: list[int]) -> str | None:
    by_version: dict[int, list[str]] = {}
    for n in names:
        if m := _CHECKPOINT.match(n):
            by_version.setdefault(int(m.group(1)), []).append(n)
    hint = _last_checkpoint(log)
    version = hint if hint is not None else max(by_version, default=None)
    if version is None:
        return None
    # Commits 0..version all still in the log: the checkpoint can be done without.
    replayable = all(v in set(commits) for v in range(version + 1))
    files = sorted(by_version.get(version, []))
    if not files:
        fix = ("restore the checkpoint from a backup, or remove _delta_log/_last_checkpoint"
               " (every commit up to it is still in the log, which is then read from them)"
               if replayable else "restore the checkpoint from a backup")
        return (f"its {LOG}/_last_checkpoint names the checkpoint of version {version}, "
                f"which is not in {LOG}/: {fix}; nothing is written to the table until then")
    for name in files:
        if not name.endswith(".parquet"):
            continue
        try:
            pq.ParquetFile(io.BytesIO(log.read(f"{LOG}/{name}")))
        except FileNotFoundError:
            continue
        except Exception as e:  # pyarrow's ArrowInvalid, OSError: what it is, not a crash
            fix = (f"restore it from a backup, or move it and {LOG}/_last_checkpoint "
                   "aside (every commit up to it is still in the log, which is then read "
                   "from them)" if replayable else "restore it from a backup")
            return (f"its checkpoint {LOG}/{name} (version {version}) is not a readable "
                    f"Parquet file ({_reason(e)}): {fix}; nothing is written to the table "
                    "until then")
    return None


def _last_checkpoint(log: LogAccess) -> int | None:
    try:
        hint = json.loads(log.read(f"{LOG}/_last_checkpoint"))
    except (FileNotFoundError, ValueError):
        return None  # delta-rs lists the log instead: not a damage of its own
    version = hint.get("version") if isinstance(hint, dict) else None
    return version if isinstance(version, int) and version >= 0 else None


def _reason(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]
