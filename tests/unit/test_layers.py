"""The layers import one way (connectors <- agent <- tui); headless code never loads textual."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "connectors": {"agent", "tui", "textual"},
    "agent": {"tui", "textual"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str):
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_headless_modules_load_without_textual():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for pkg in ("connectors", "agent") for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__init__.py"
    )
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
    assert len(modules) > 10


def test_one_errors_module():
    defined = [p.relative_to(ROOT).as_posix() for pkg in ("connectors", "agent", "tui")
               for p in (ROOT / pkg).rglob("*.py")
               if "class " in p.read_text(encoding="utf-8")
               and any(isinstance(n, ast.ClassDef) and any(
                   getattr(b, "id", "") in ("Exception", "SiltaError") for b in n.bases)
                   for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert defined == ["connectors/errors.py"]
