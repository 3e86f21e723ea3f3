from __future__ import annotations

import pytest

from agent.tomlmap import key_lines, line_for
from connectors.errors import UnsafeNameError
from connectors.names import check_relative_path, is_temporary, safe_display


@pytest.mark.parametrize("bad", [
    "../etc/passwd", "a/../../b", "/etc/passwd", "a\\b", "a\x00b", "new\nline", "tab\there",
    "", ".", "a//b", "esc\x1b[31m",
])
def test_hostile_relative_paths_are_refused(bad: str):
    with pytest.raises(UnsafeNameError):
        check_relative_path(bad)


@pytest.mark.parametrize("good", ["a.csv", "responses/2026/a.csv", "ääkköset/tiedosto.csv",
                                  "*.csv", "**/*.parquet", "[x]y.csv"])
def test_ordinary_relative_paths_pass(good: str):
    assert check_relative_path(good) == good


@pytest.mark.parametrize(("path", "temporary"), [
    ("a.csv", False), ("a.csv.tmp", True), ("a.part", True), (".hidden.csv", True),
    ("~$book.csv", True), ("dir/.inprogress/a.csv", True), ("dir/a.csv.partial", True),
    ("tmp/a.csv", False),
])
def test_temporary_names(path: str, temporary: bool):
    assert is_temporary(path) is temporary


def test_safe_display_escapes_control_characters():
    assert safe_display("a\x1b[31mb\n") == "a\\x1b[31mb\\x0a"


def test_key_lines_follow_tables_arrays_and_inline_tables():
    text = (
        "[agent]\nname = 'x'\n\n[[syncs]]\nname = \"a\"\ncsv = { delimiter = \";\", "
        "decimal = \",\" }\n[[syncs]]\n# comment\nname = \"b\"\n[connectors.\"drop zone\"]\n"
        "type = \"folder\"\n"
    )
    lines = key_lines(text)
    assert lines[("agent", "name")] == 2
    assert lines[("syncs", 0, "name")] == 5
    assert lines[("syncs", 0, "csv", "decimal")] == 6
    assert lines[("syncs", 1, "name")] == 9
    assert lines[("connectors", "drop zone", "type")] == 11
    assert line_for(lines, ("syncs", 1, "mode")) == 7  # falls back to the [[syncs]] header
    assert line_for(lines, ("nowhere",)) is None
