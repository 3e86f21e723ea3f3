"""Line numbers for TOML keys, so config errors can say where to look.

tomllib gives values without positions; this scanner maps each key path (with the
index of array-of-tables entries) to the line that set it. It is a best effort over
well-formed files: unknown paths fall back to the nearest known parent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_PART = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")
_INLINE_KEY = re.compile(r'[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=')

Loc = tuple[str | int, ...]


def _split_key(key: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.\s]+', key)
    return [p.strip("\"'") for p in parts]


def key_lines(text: str) -> dict[Loc, int]:
    """Map every key path found in ``text`` to its 1-based line number."""
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    current: Loc = ()
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
            in_multiline = not in_multiline
            if not in_multiline:
                continue
        if in_multiline and not (_KEY.match(line) and '"""' in line):
            continue
        m = _ARRAY_TABLE.match(line)
        if m:
            parts = tuple(_split_key(m.group(1)))
            index = counts.get(parts, 0)
            counts[parts] = index + 1
            current = (*parts, index)
            lines.setdefault(current, number)
            lines.setdefault(parts, number)
            continue
        m = _TABLE.match(line)
        if m:
            current = tuple(_split_key(m.group(1)))
            lines.setdefault(current, number)
            continue
        m = _KEY.match(line)
        if m:
            path = (*current, *_split_key(m.group(1)))
            lines.setdefault(path, number)
            rest = line[m.end():]
            if rest.lstrip().startswith("{"):
                for sub in _INLINE_KEY.finditer(rest):
                    lines.setdefault((*path, sub.group(1).strip('"')), number)
    return lines


def line_for(lines: dict[Loc, int], loc: Sequence[str | int]) -> int | None:
    """The line of ``loc`` or of its nearest parent that the scanner found."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
