"""The public surface, pinned: `tether.__all__` changes only on purpose (edit the list
here with it), every name resolves, and the plain libraries load without Temporal."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tether

PUBLIC = [
    "ActionAmbiguous",
    "ActionDenied",
    "ActionRejected",
    "AgentLoopInput",
    "AgentLoopResult",
    "AgentLoopWorkflow",
    "AgentStatus",
    "AgentWorkflow",
    "App",
    "AppContext",
    "Budget",
    "BudgetExceeded",
    "ErrorType",
    "ModelOutputInvalid",
    "Runtime",
    "Settings",
    "TetherError",
    "TetherPlugin",
    "ToolContext",
    "Usage",
    "build_worker",
    "connect",
    "load_app",
    "load_settings",
    "run_client",
    "run_worker",
    "start_task",
    "tool",
    "tool_context",
]


def test_the_exported_names_are_pinned() -> None:
    assert sorted(PUBLIC) == PUBLIC
    assert tether.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_resolves(name: str) -> None:
    value = getattr(tether, name)
    assert getattr(value, "__name__", name) == name
    assert name in dir(tether)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="'NoSuchThing'"):
        _ = tether.NoSuchThing


def test_type_checkers_see_the_same_names_from_the_same_modules() -> None:
    """The `TYPE_CHECKING` imports (what mypy and editors read) match `_EXPORTS` (what
    loads at run time), name for name and module for module."""
    assert tether.__file__ is not None
    tree = ast.parse(Path(tether.__file__).read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    assert alias.asname == alias.name, "re-export as `X as X`"
                    seen[alias.name] = stmt.module
    assert seen == tether._EXPORTS


@pytest.mark.parametrize(
    "module",
    [
        "tether",
        "tether.errors",
        "tether.core.config",
        "tether.governance.policy",
        "tether.governance",
        "tether.verification.ledger",
    ],
)
def test_plain_modules_load_without_temporal(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing {module} loaded {done.stdout}"
