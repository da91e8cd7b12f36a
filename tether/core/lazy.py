"""Public modules whose names load on first use (PEP 562), so importing the module itself
costs nothing: `lazy_exports(__name__, {"Name": "home.module"})` gives the module's
`__getattr__` and `__dir__`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    module: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `module`, which re-exports each name of `exports`
    from the module named beside it; a name once loaded is kept in the module."""

    def getattr_(name: str) -> Any:
        home = exports.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[module], name, value)
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[module]), *exports})

    return getattr_, dir_
