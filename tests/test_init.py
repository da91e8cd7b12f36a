"""`tether init`: the scaffold is a project whose own tests, policy tests and lint pass, and
whose author code uses Tether's public API only."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tether.cli.init import project_name, scaffold
from tether.errors import TetherError

FILES = {
    ".gitignore",
    "tether.toml",
    "pyproject.toml",
    "policy.csv",
    "policy.tests.toml",
    "model_script.json",
    "workflows/__init__.py",
    "workflows/refunds.py",
    "activities/__init__.py",
    "activities/refunds.py",
    "tests/test_refunds.py",
}


def run(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`args` in `cwd` with this venv's tools, none of the caller's TETHER_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "PYTEST_"))}
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def tether_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, "-m", "tether.cli.main", *args)


def test_the_scaffold_passes_its_own_tests(tmp_path: Path) -> None:
    made = tether_cli(tmp_path, "init", "refund-desk")
    assert made.returncode == 0, made.stderr
    project = tmp_path / "refund-desk"
    files = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    assert files == FILES
    assert 'task_queue = "refund-desk"' in (project / "tether.toml").read_text()

    tests = run(project, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout, tests.stdout

    policy = tether_cli(project, "policy", "test", "policy.tests.toml", "--json")
    assert policy.returncode == 0, policy.stdout + policy.stderr
    cases = json.loads(policy.stdout)["cases"]
    assert len(cases) == 5 and all(c["passed"] for c in cases), cases

    ruff = str(Path(sys.executable).parent / "ruff")
    for check in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        linted = run(project, ruff, *check)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    typed = strict_mypy(project, tmp_path / "mypy")
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert "Success: no issues found in 5 source files" in typed.stdout


def strict_mypy(project: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """`mypy --strict .` in `project`, which sees Tether as an author's install does: a
    typed package (py.typed) on the path, its own errors not the author's to fix."""
    installed = scratch / "site"
    installed.mkdir(parents=True)
    # The editable install is an import hook mypy cannot follow: link the package instead.
    (installed / "tether").symlink_to(Path(tether.__file__).resolve().parent)
    mypy = str(Path(sys.executable).parent / "mypy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "PYTEST_"))}
    return subprocess.run(
        [mypy, "--strict", "--follow-imports=silent", "--cache-dir", str(scratch / "cache"), "."],
        cwd=project,
        env={**env, "MYPYPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=240,
    )


def _tether_imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every import of Tether in `path`: (module, names)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tether":
            found.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "tether"]
    return found


def test_the_author_code_imports_the_public_api_only(tmp_path: Path) -> None:
    scaffold(tmp_path)
    for code in ("workflows/refunds.py", "activities/refunds.py"):
        imports = _tether_imports(tmp_path / code)
        assert imports, code
        for module, names in imports:
            assert module == "tether", (code, module)
            assert set(names) <= set(tether.__all__), (code, names)
    for module, _ in _tether_imports(tmp_path / "tests/test_refunds.py"):
        assert module in ("tether", "tether.testing")


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    refused = tether_cli(tmp_path, "init", str(tmp_path))
    assert refused.returncode == 2
    [line] = [x for x in refused.stderr.splitlines() if x.strip()]
    assert repr(str(tmp_path)) in line and "--force" in line
    assert not (tmp_path / "tether.toml").exists()

    forced = tether_cli(tmp_path, "init", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "tether.toml").is_file() and (tmp_path / "notes.txt").read_text() == "mine"


def test_force_never_overwrites_the_authors_pyproject_and_gitignore(tmp_path: Path) -> None:
    """--force writes Tether's files over old ones of the same name; the project's own
    pyproject.toml and .gitignore stay as they were, and the output says what to add."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    (tmp_path / ".gitignore").write_text("secrets/\n")
    (tmp_path / "tether.toml").write_text("# an old one\n")
    forced = tether_cli(tmp_path, "init", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "pyproject.toml").read_text() == '[project]\nname = "mine"\n'
    assert (tmp_path / ".gitignore").read_text() == "secrets/\n"
    assert "[app]" in (tmp_path / "tether.toml").read_text()  # Tether's own: rewritten
    lines = forced.stdout.splitlines()
    assert lines[0].startswith("kept your pyproject.toml as it is: ") and "asyncio_mode" in lines[0]
    assert lines[1].startswith("kept your .gitignore as it is: ") and ".tether/" in lines[1]
    assert lines[2].startswith(f"created {len(FILES) - 2} files in ")


def test_init_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("")
    with pytest.raises(TetherError, match="is a file, not a folder"):
        scaffold(target, force=True)


@pytest.mark.parametrize(
    ("folder", "name"),
    [("Refund Desk", "refund-desk"), ("my_app2", "my-app2"), ("___", "tether-app")],
)
def test_the_project_is_named_after_its_folder(tmp_path: Path, folder: str, name: str) -> None:
    assert project_name(tmp_path / folder) == name
