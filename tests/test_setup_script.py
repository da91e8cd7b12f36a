"""`make test` on a fresh machine: scripts/ensure-packages installs Debian's chromium and
python3-venv where it can (root, apt-get) and otherwise stops with the one command to
run. Run against a fake PATH: `id`, `apt-get`, `python3` and `chromium` are stand-ins
that record what they were asked, so nothing is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "ensure-packages"
BASH = shutil.which("bash") or "/bin/bash"
CHMOD = shutil.which("chmod") or "/bin/chmod"


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


def machine(
    tmp_path: Path,
    *,
    root: bool,
    apt: bool = True,
    chromium: bool = False,
    venv: bool = True,
    apt_fails: bool = False,
) -> Path:
    """A bin folder standing for a machine; `apt-get install` "installs" what it is
    asked (a chromium command, a working `python3 -c`) unless `apt_fails`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "id", f"echo {0 if root else 1000}")
    _tool(bin_dir, "python3", "exit 0" if venv else f'[ -e "{bin_dir}/.venv-installed" ]')
    if chromium:
        _tool(bin_dir, "chromium", "exit 0")
    if apt:
        _tool(
            bin_dir,
            "apt-get",
            f'echo "$DEBIAN_FRONTEND apt-get $*" >> "{tmp_path}/apt.log"\n'
            + ("exit 100\n" if apt_fails else "")
            + 'if [ "$1" = install ]; then for p in "$@"; do\n'
            f'  [ "$p" = chromium ] && printf "#!{BASH}\\nexit 0\\n" > "{bin_dir}/chromium"'
            f' && {CHMOD} +x "{bin_dir}/chromium"\n'
            f'  [ "$p" = python3-venv ] && : > "{bin_dir}/.venv-installed"\n'
            "done; fi; exit 0",
        )
    return bin_dir


def ensure(bin_dir: Path, *packages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *packages],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def apt_log(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


def test_nothing_missing_does_nothing(tmp_path: Path) -> None:
    done = ensure(machine(tmp_path, root=True, chromium=True), "python3-venv", "chromium")
    assert (done.returncode, done.stderr) == (0, "")
    assert apt_log(tmp_path) == []


def test_root_with_apt_installs_what_is_missing_in_one_call(tmp_path: Path) -> None:
    bin_dir = machine(tmp_path, root=True, venv=False)
    done = ensure(bin_dir, "python3-venv", "chromium")
    assert done.returncode == 0, done.stderr
    assert apt_log(tmp_path) == [
        " apt-get update -qq",
        "noninteractive apt-get install -y -qq python3-venv chromium",
    ]
    assert (bin_dir / "chromium").exists()
    # Now present: a second run installs nothing.
    assert ensure(bin_dir, "python3-venv", "chromium").returncode == 0
    assert len(apt_log(tmp_path)) == 2


@pytest.mark.parametrize("package", ["chromium", "python3-venv"])
def test_without_root_it_stops_with_the_command_to_run(tmp_path: Path, package: str) -> None:
    done = ensure(machine(tmp_path, root=False, venv=False), package)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"missing: {package}; install it with:  sudo sh -c 'apt-get update -qq && "
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}'"
    )
    assert apt_log(tmp_path) == []


def test_without_apt_it_stops_and_says_so(tmp_path: Path) -> None:
    done = ensure(machine(tmp_path, root=True, apt=False), "chromium")
    assert done.returncode == 1
    assert "missing: chromium; install it with your system's package manager" in done.stderr


def test_a_failed_install_fails(tmp_path: Path) -> None:
    done = ensure(machine(tmp_path, root=True, apt_fails=True), "chromium")
    assert done.returncode != 0
    assert apt_log(tmp_path) == [" apt-get update -qq"]


def test_an_unknown_package_is_refused(tmp_path: Path) -> None:
    done = ensure(machine(tmp_path, root=True), "firefox")
    assert done.returncode == 2 and "unknown package 'firefox'" in done.stderr


def _dry_run(target: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_makefile_wants_chromium_for_tests_only() -> None:
    assert "scripts/ensure-packages chromium" in _dry_run("test")
    assert "scripts/ensure-packages chromium" in _dry_run("pytest")
    assert "chromium" not in _dry_run("demo")
    makefile = (ROOT / "Makefile").read_text()
    assert "export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1" in makefile
    assert "$(ENSURE) python3-venv\n\tpython3 -m venv" in makefile
