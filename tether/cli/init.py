"""`tether init DIR`: scaffold a new Tether project from the templates in `scaffold/`.

The project is a refund agent: its own top-level `workflows/` and `activities/`
packages (the app, declared in `tether.toml`), a policy with its regression tests, a
model script, and tests that use `tether.testing`. Every template is a real file named
like its output plus `.tmpl` (so no tool mistakes it for this package's code); a
leading `dot-` becomes `.`, and `{{project}}` becomes the project's name (DIR's, made
a valid name).

A DIR that is not empty is refused (TetherError) unless `force`, which writes Tether's
files over files of the same names and leaves every other file alone; the author's own
`pyproject.toml` and `.gitignore` (`AUTHOR_FILES`) are never overwritten, even then.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from tether.errors import TetherError

SUFFIX = ".tmpl"
TOKEN = "{{project}}"
AUTHOR_FILES = {
    "pyproject.toml": "for the tests, add the [tool.pytest.ini_options] that tether init "
    'writes into an empty folder (asyncio_mode = "auto", pythonpath = ["."], session loops)',
    ".gitignore": "add .tether/ to it (local state and keys)",
}
"""Files a project has before Tether (scaffolded when absent, kept when present), each
with what to add to it by hand."""


def project_name(target: Path) -> str:
    """A task-queue and package-friendly name from the folder's: lower case, `-` between
    words; `tether-app` when nothing is left."""
    name = re.sub(r"[^a-z0-9]+", "-", target.resolve().name.lower()).strip("-")
    return name or "tether-app"


def _templates(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """Every template under `folder` as (path relative to the scaffold, file)."""
    found: list[tuple[str, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found.extend(_templates(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(SUFFIX):
            found.append((prefix + entry.name, entry))
    return found


def _output_path(relative: str) -> str:
    parts = relative.removesuffix(SUFFIX).split("/")
    return "/".join("." + p.removeprefix("dot-") if p.startswith("dot-") else p for p in parts)


def scaffold(target: Path, *, force: bool = False) -> list[Path]:
    """Write the project into `target` (created if missing); return the files written (an
    `AUTHOR_FILES` one that was there already is not among them)."""
    if target.exists() and not target.is_dir():
        raise TetherError(
            f"{str(target)!r} is a file, not a folder; name a new folder for the project"
        )
    if target.is_dir() and any(target.iterdir()) and not force:
        raise TetherError(
            f"{str(target)!r} is not empty; name a new folder, or pass --force to write the "
            "project's files over it (your pyproject.toml and .gitignore are kept)"
        )
    name = project_name(target)
    written: list[Path] = []
    for relative, template in _templates(resources.files("tether.cli") / "scaffold"):
        output = _output_path(relative)
        path = target / output
        if output in AUTHOR_FILES and path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.read_text(encoding="utf-8").replace(TOKEN, name), "utf-8")
        written.append(path)
    return written
