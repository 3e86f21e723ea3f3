"""Names that come from outside (remote files, config) are untrusted input."""

from __future__ import annotations

import fnmatch
import re

from connectors.errors import UnsafeNameError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: names that are still being written or belong to other tools: never read them
TEMPORARY_PATTERNS = ("*.tmp", ".*", "~$*", "*.part", "*.partial", "*.crdownload")


def check_relative_path(path: str, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative path with ``/`` separators, else raise.

    Refuses absolute paths, ``..`` parts, backslashes, NUL and control characters, so a
    hostile name can never point outside the store's root.
    """
    if not path or path in (".", "/"):
        raise UnsafeNameError(f"{what} is empty")
    if _CONTROL.search(path):
        raise UnsafeNameError(f"{what} {path!r} contains a control character")
    if "\\" in path:
        raise UnsafeNameError(f"{what} {path!r} contains a backslash")
    if path.startswith("/"):
        raise UnsafeNameError(f"{what} {path!r} is absolute; give it relative to the root")
    parts = path.split("/")
    if any(p in ("..", "") for p in parts):
        raise UnsafeNameError(f"{what} {path!r} has an empty or '..' part")
    return path


def is_temporary(path: str) -> bool:
    """True when any part of ``path`` looks like a file still being written, or hidden."""
    return any(
        fnmatch.fnmatchcase(part, pat) for part in path.split("/") for pat in TEMPORARY_PATTERNS
    )


def safe_display(name: str) -> str:
    """A printable form of an untrusted name for logs and messages."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", name)
