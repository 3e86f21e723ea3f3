"""`silta service unit`: the unit for a real config, checked as systemd itself reads it.

Units are rendered by the real CLI in a subprocess, then linted with `systemd-analyze
verify` (any output fails: it only warns about unknown keys and bad values) and read back
from the unit dump it prints with ``SYSTEMD_LOG_LEVEL=debug``, which shows the values
systemd parsed: quoting, ``%`` and ``$`` escapes are checked by systemd, not by us.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.service_unit import HOME_ROOTS, PLACEHOLDERS, UNIT_NAME, template
from tests.conftest import ROOT, write_config
from tests.e2e._cli import SILTA, Result, cli_env, silta

TEMPLATE = ROOT / "config" / "systemd" / UNIT_NAME
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian package `systemd`): it lints units "
           "offline and shows how systemd parses them")

#: the fixed part of every unit, as written
FIXED = {
    "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60", "Restart": "on-failure",
    "RestartSec": "5", "RestartPreventExitStatus": "2", "KillMode": "mixed",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes", "LockPersonality": "yes", "SystemCallArchitectures": "native",
    "UMask": "0077", "StandardOutput": "journal", "StandardError": "journal",
    "WantedBy": "multi-user.target", "Wants": "network-online.target",
    "After": "network-online.target",
}
#: the same, as systemd's unit dump shows them
FIXED_PARSED = {
    "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "1min", "Restart": "on-failure",
    "RestartSec": "5s", "KillMode": "mixed", "ProtectSystem": "strict", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "RestrictSUIDSGID": "yes", "RestrictRealtime": "yes",
    "UMask": "0077", "StandardOutput": "journal", "StandardError": "journal",
}


def directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (every section), values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line[0] in "#;[":
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        found.setdefault(key, []).append(value)
    return found


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def verify_clean(unit: Path) -> None:
    """`systemd-analyze verify` exits 0 and says nothing at all."""
    assert SYSTEMD_ANALYZE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), \
        f"systemd-analyze verify {unit}:\n{done.stderr}{done.stdout}"


def systemd_reads(unit: Path) -> dict[str, list[str]]:
    """The unit as systemd parsed it: its dump, ``Key: value`` lines in order."""
    assert SYSTEMD_ANALYZE is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")},
           "SYSTEMD_LOG_LEVEL": "debug"}
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    start = lines.index(f"\t-> Unit {unit.name}:")  # the dump of this unit, on stdout
    parsed: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if not line.startswith("\t\t"):
            break
        key, sep, value = line.strip().partition(": ")
        if sep:
            parsed.setdefault(key, []).append(value)
    return parsed


def write_unit(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / UNIT_NAME
    path.write_text(text, encoding="utf-8")
    return path


def install_paths_in_home() -> bool:
    """Whether this test's own Python lives where ProtectHome=yes would hide it."""
    paths = {os.path.realpath(sys.executable), sys.base_prefix, sys.prefix, str(ROOT),
             SILTA[0]}
    return any(p == r or p.startswith(r + "/") for p in paths for r in HOME_ROOTS)


def exec_argv(command_line: str) -> list[str]:
    """The argv systemd runs for a dumped ``Command Line``.

    The dump quotes it for a POSIX shell (``\\$`` in double quotes, which shlex does not
    know), so a shell splits it; at exec time systemd turns ``$$`` into ``$``.
    """
    done = subprocess.run(["sh", "-c", f"printf '%s\\0' {command_line}"], capture_output=True,
                          text=True, check=True, timeout=30)
    return [a.replace("$$", "$") for a in done.stdout.split("\0")[:-1]]


# -- the unit for a config ----------------------------------------------------------------
def test_unit_for_a_config_names_its_program_user_and_folders(tmp_path: Path):
    cfg = write_config(tmp_path, [], agent={"ml_stop_grace_seconds": 45})
    r = silta(tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert r.code == 0, r
    d = directives(r.out)
    state, lake, inbox = (str(tmp_path / n) for n in ("state", "lake", "inbox"))
    assert d["ExecStart"] == [" ".join([*SILTA, "agent", "run", "--config", str(cfg)])]
    assert d["User"] == ["silta"]
    assert d["WorkingDirectory"] == [str(tmp_path)]
    assert d["ReadWritePaths"] == [state, lake, inbox]
    assert d["RequiresMountsFor"] == [state, lake, inbox]
    assert d["TimeoutStopSec"] == ["75"]  # ml_stop_grace_seconds + 30
    assert d["ProtectHome"] == ["read-only" if install_paths_in_home() else "yes"]
    assert {k: d[k] for k in FIXED} == {k: [v] for k, v in FIXED.items()}
    assert "Environment" not in d
    assert "# LoadCredential=lake-key:/etc/silta/lake-key" in comments(r.out)
    # state and lake do not exist yet: the note says how to make them, for the right user
    assert f"install -d -m 0700 -o silta {state} {lake}\n" in r.err


def test_user_defaults_to_the_caller(tmp_path: Path):
    cfg = write_config(tmp_path, [])
    r = silta(tmp_path, "service", "unit", "--config", cfg)
    assert r.code == 0, r
    assert directives(r.out)["User"] == [getpass.getuser()]


@needs_systemd
def test_rendered_unit_verifies_clean_and_systemd_reads_its_values(tmp_path: Path):
    cfg = write_config(tmp_path / "site", [], agent={"ml_stop_grace_seconds": 90})
    for name in ("state", "lake"):
        (tmp_path / "site" / name).mkdir()
    r = silta(tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert (r.code, r.err) == (0, ""), r  # every folder exists: no notes
    unit = write_unit(tmp_path / "unit", r.out)
    verify_clean(unit)
    parsed = systemd_reads(unit)
    site = tmp_path / "site"
    folders = [str(site / n) for n in ("state", "lake", "inbox")]
    assert parsed["Command Line"] == [" ".join([*SILTA, "agent", "run", "--config", str(cfg)])]
    assert parsed["User"] == ["silta"]
    assert parsed["WorkingDirectory"] == [str(site)]
    assert parsed["ReadWritePaths"] == [" ".join(folders)]
    assert parsed["TimeoutStopSec"] == ["2min"]
    mounts = {m.removesuffix(" (origin-file)") for m in parsed["RequiresMountsFor"]}
    assert mounts - {"/var/tmp", str(site)} == set(folders)  # those two systemd adds
    assert {k: parsed[k] for k in FIXED_PARSED} == {k: [v] for k, v in FIXED_PARSED.items()}


def test_demo_config_writes_its_sqlite_database_folder_too():
    r = silta(ROOT, "service", "unit", "--config", "config/demo.toml", "--user", "silta")
    assert r.code == 0, r
    d = directives(r.out)
    var = ROOT / "var"
    assert d["ReadWritePaths"] == [str(var / "state"), str(var / "lake"),
                                   str(var / "onprem" / "incoming"), str(var / "onprem")]
    assert d["WorkingDirectory"] == [str(ROOT / "config")]


@needs_systemd
def test_demo_unit_verifies_clean(tmp_path: Path):
    r = silta(ROOT, "service", "unit", "--config", "config/demo.toml", "--user", "silta")
    assert r.code == 0, r
    verify_clean(write_unit(tmp_path, r.out))


# -- untrusted paths ----------------------------------------------------------------------
def _venv_at(folder: Path) -> Path:
    """A venv at ``folder`` that is this one (symlinks), so its `silta` has that path."""
    (folder / "bin").mkdir(parents=True)
    venv = Path(sys.prefix)
    (folder / "bin" / "python").symlink_to(venv / "bin" / "python")
    (folder / "lib").symlink_to(venv / "lib")
    shutil.copy(venv / "pyvenv.cfg", folder / "pyvenv.cfg")
    shutil.copy(venv / "bin" / "silta", folder / "bin" / "silta")
    return folder


def _silta_from(venv: Path, cwd: Path, *args: str | os.PathLike[str]) -> Result:
    # a shebang cannot hold a space: run the script with the venv's interpreter
    proc = subprocess.run([str(venv / "bin" / "python"), str(venv / "bin" / "silta"),
                           *map(str, args)], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    return Result(proc.returncode, proc.stdout, proc.stderr, 0)


@needs_systemd
@pytest.mark.skipif(not Path(sys.prefix, "bin", "silta").exists(),
                    reason="needs the venv's `silta` console script")
def test_spaces_quotes_percent_and_dollar_are_written_as_systemd_reads_them(tmp_path: Path):
    venv = _venv_at(tmp_path / "in stall %n;#")
    site = tmp_path / "site %i $HOME ${X} $$ \"q\" 'a' \\b; #c"
    cfg = write_config(site, [])
    for name in ("state", "lake"):
        (site / name).mkdir()
    r = _silta_from(venv, tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert (r.code, r.err) == (0, ""), r
    unit = write_unit(tmp_path / "unit", r.out)
    verify_clean(unit)  # it found the program: its path was read right
    parsed = systemd_reads(unit)
    folders = [str(site / n) for n in ("state", "lake", "inbox")]
    program = str(venv / "bin" / "silta")
    assert [exec_argv(c) for c in parsed["Command Line"]] == [
        [program, "agent", "run", "--config", str(cfg)]]
    assert parsed["WorkingDirectory"] == [str(site)]
    assert parsed["ReadWritePaths"] == [" ".join(folders)]
    mounts = {m.removesuffix(" (origin-file)") for m in parsed["RequiresMountsFor"]}
    assert mounts - {"/var/tmp", str(site)} == set(folders)


@pytest.mark.parametrize("folder, says", [
    ("new\nline", "control character"),
    ("tab\there", "control character"),
    ("ends in space ", "ends in a space"),
    ("back\\", "ends in a backslash"),
])
def test_a_folder_systemd_cannot_hold_is_refused(tmp_path: Path, folder: str, says: str):
    cfg = write_config(tmp_path / folder, [])
    r = silta(tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert (r.code, r.out) == (2, ""), r  # refused, and no half unit on stdout
    assert says in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("folder, says", [("a'b", "\"'\""), ("dollar$x", "'$'")])
@pytest.mark.skipif(not Path(sys.prefix, "bin", "silta").exists(),
                    reason="needs the venv's `silta` console script")
def test_an_install_path_systemd_cannot_run_is_refused(tmp_path: Path, folder: str, says: str):
    venv = _venv_at(tmp_path / folder)
    cfg = write_config(tmp_path / "site", [])
    r = _silta_from(venv, tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert (r.code, r.out) == (2, ""), r
    assert "cannot be ExecStart's program" in r.err
    assert says in r.err


@pytest.mark.parametrize("user", ["bad user", "-x", "a.b", "x" * 32, "new\nline"])
def test_a_user_name_systemd_would_warn_about_is_refused(tmp_path: Path, user: str):
    cfg = write_config(tmp_path, [])
    r = silta(tmp_path, "service", "unit", "--config", cfg, f"--user={user}")
    assert (r.code, r.out) == (2, ""), r
    assert "pass --user NAME" in r.err


def _unit_with_a_folder_in_home(tmp_path: Path) -> Result:
    cfg = write_config(tmp_path, [])
    with cfg.open("a", encoding="utf-8") as f:
        f.write('[connectors.homebox]\ntype = "folder"\npath = "/home/silta-test/box"\n')
    r = silta(tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert r.code == 0, r
    return r


def test_a_folder_in_home_makes_protect_home_read_only(tmp_path: Path):
    r = _unit_with_a_folder_in_home(tmp_path)
    d = directives(r.out)
    assert d["ProtectHome"] == ["read-only"]  # `yes` would hide the folder it writes
    assert d["ReadWritePaths"][-1] == "/home/silta-test/box"
    assert "#   /home/silta-test/box: connector homebox" in comments(r.out)


@needs_systemd
def test_protect_home_read_only_verifies_clean(tmp_path: Path):
    r = _unit_with_a_folder_in_home(tmp_path)
    unit = write_unit(tmp_path / "unit", r.out)
    verify_clean(unit)
    assert systemd_reads(unit)["ProtectHome"] == ["read-only"]


# -- the shipped template -----------------------------------------------------------------
def test_template_is_the_generator_for_placeholder_paths():
    assert TEMPLATE.read_text(encoding="utf-8") == template(), (
        f"{TEMPLATE.relative_to(ROOT)} is out of step with agent/service_unit.py; write it "
        "again: .venv/bin/python -c 'import sys; from agent.service_unit import template; "
        f"sys.stdout.write(template())' > {TEMPLATE.relative_to(ROOT)}")


def test_template_differs_from_a_generated_unit_only_in_paths_and_header(tmp_path: Path):
    cfg = write_config(tmp_path, [])
    r = silta(tmp_path, "service", "unit", "--config", cfg, "--user", "silta")
    assert r.code == 0, r
    generated, shipped = directives(r.out), directives(TEMPLATE.read_text(encoding="utf-8"))
    assert set(generated) == set(shipped)
    varying = {"ExecStart", "User", "WorkingDirectory", "ReadWritePaths", "RequiresMountsFor",
               "ProtectHome"}
    assert {k: v for k, v in generated.items() if k not in varying} == \
        {k: v for k, v in shipped.items() if k not in varying}
    assert shipped["ExecStart"] == [" ".join(PLACEHOLDERS.command)]
    assert shipped["ProtectHome"] == ["yes"]


@needs_systemd
def test_template_verifies_clean_with_a_program_that_exists(tmp_path: Path):
    text = TEMPLATE.read_text(encoding="utf-8")
    placeholder = f"ExecStart={PLACEHOLDERS.command[0]} "
    assert text.count(placeholder) == 1
    # verify checks that the program exists; /opt/silta is a placeholder: use this install's
    verify_clean(write_unit(tmp_path, text.replace(placeholder, f"ExecStart={SILTA[0]} ")))
