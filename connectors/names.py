"""Names that come from outside (remote files, config) are untrusted input."""

from __future__ import annotations

import fnmatch
import re

from connectors.errors import UnsafeNameError

#: C0, DEL and C1 (U+0080-U+009F: U+009B is a one-character CSI to many terminals)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: lone surrogates: how Python hands over the bytes of a name that is not valid UTF-8
_SURROGATE = re.compile("[\ud800-\udfff]")
#: names that are still being written or belong to other tools: never read them
TEMPORARY_PATTERNS = ("*.tmp", ".*", "~$*", "*.part", "*.partial", "*.crdownload")


def check_relative_path(path: str, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative path with ``/`` separators, else raise.

    Refuses absolute paths, ``..`` parts, backslashes, NUL and control characters, so a
    hostile name can never point outside the store's root, and names that are not valid
    UTF-8 (lone surrogates from ``os.fsdecode``), which no lake column can hold.
    """
    if not path or path in (".", "/"):
        raise UnsafeNameError(f"{what} is empty")
    if _CONTROL.search(path):
        raise UnsafeNameError(f"{what} {path!r} contains a control character")
    if _SURROGATE.search(path):
        # Arrow, Delta and SQLite hold UTF-8 only: such a name cannot be recorded as it is.
        raise UnsafeNameError(f"{what} {safe_display(path)!r} is not valid UTF-8")
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
    """A printable form of an untrusted name for logs and messages.

    Control characters become ``\\xNN``; a byte that was not UTF-8 (a lone surrogate
    ``\\udcNN`` from ``os.fsdecode``) becomes ``\\xNN`` too, so the text can be encoded.
    """
    name = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", name)
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) & 0xff:02x}", name)
