"""Which code made a result: Silta's version and git commit, and the library versions.

Recorded with every model version and run, so a published number can be traced to the
code that made it and re-made with the same libraries.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

#: the libraries whose versions change what a model learns or predicts
LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "deltalake", "skops")
_ROOT = Path(__file__).resolve().parent.parent


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    if not (_ROOT / ".git").exists():
        return None  # an installed wheel: no commit to name
    try:
        out = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def code_info() -> dict[str, Any]:
    """``{"package", "version", "git_commit", "git_dirty"}``; commit None when unknown."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {"package": "silta", "version": _package_version("silta"),
            "git_commit": commit or None, "git_dirty": dirty}


def code_version() -> str:
    """``"silta 0.1.0 (git 1a2b3c4d5e6f)"``; without a git checkout just ``"silta 0.1.0"``.

    Uncommitted changes are said (``+ uncommitted changes``): the commit alone would not
    re-make the result.
    """
    info = code_info()
    base = f"silta {info['version'] or 'unknown'}"
    if not info["git_commit"]:
        return base
    dirty = " + uncommitted changes" if info["git_dirty"] else ""
    return f"{base} (git {info['git_commit'][:12]}{dirty})"


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        v = _package_version(name)
        if v is not None:
            found[name] = v
    return found
