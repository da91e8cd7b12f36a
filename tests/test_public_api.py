"""The public surface, pinned: `tether.__all__` changes only on purpose (edit the list
here with it), every name resolves, and the plain libraries load without Temporal."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tests.test_layers import _module_files

PUBLIC = [
    "ActionAmbiguous",
    "ActionDenied",
    "ActionHalted",
    "ActionMisdeclared",
    "ActionRejected",
    "AgentLoopInput",
    "AgentLoopResult",
    "AgentLoopWorkflow",
    "AgentStatus",
    "AgentWorkflow",
    "App",
    "AppContext",
    "ApprovalError",
    "Budget",
    "BudgetExceeded",
    "ErrorType",
    "ModelOutputInvalid",
    "ReviewError",
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


def _strings(node: ast.expr) -> list[tuple[int, str]]:
    items = node.elts if isinstance(node, ast.List | ast.Tuple) else [node]
    return [
        (c.lineno, c.value)
        for c in items
        if isinstance(c, ast.Constant) and isinstance(c.value, str)
    ]


def _failure_type_literals(path: Path) -> list[tuple[int, str]]:
    """String literals used as a Temporal failure type in `path`: `type="..."` and
    `non_retryable_error_types=[...]` arguments, and comparisons with a `.type`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg in ("type", "non_retryable_error_types"):
            found += _strings(node.value)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "type" for s in sides):
                found += [
                    (s.lineno, s.value)
                    for s in sides
                    if isinstance(s, ast.Constant) and isinstance(s.value, str)
                ]
    return found


def test_failure_types_are_in_the_enum() -> None:
    """Every failure type Tether raises or matches on is an `ErrorType` value: one list of
    the wire names, so none is misspelled on one side or renamed by accident."""
    modules = _module_files()  # the linked plane folders included
    assert "tether.workflows.review" in modules
    known = {t.value for t in tether.ErrorType}
    unknown = [
        f"{module}:{line}: {value!r}"
        for module, path in sorted(modules.items())
        for line, value in _failure_type_literals(path)
        if value not in known
    ]
    assert not unknown, f"add these to ErrorType (and raise the member): {unknown}"
    for module in ("tether.workflows.review", "tether.workflows.approvals"):
        assert not _failure_type_literals(modules[module]), f"{module} spells a type out"
