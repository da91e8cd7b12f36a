"""The floors of STYLE.md, read from the source: who may import whom, and no cycles.

Every module under `tether/` (the linked plane folders included) is parsed with `ast`;
an edge is one `import` or `from … import` of a `tether.*` module, at module level, in a
function, or under `TYPE_CHECKING`. The floors, bottom up:

    ground    tether.errors, tether.core.*             imports nothing else of Tether
    planes    tether.governance, .verification, .activities, .workflows
    services  tether.runtime.*
    top       tether.cli, tether.console, tether.worker, tether.testing, tether (the facade)

Nothing below the top floor imports it; the plain-library planes (governance,
verification) reach no `temporalio` through what they import at module level; and the
module-level imports that run at import time have no cycle.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tether

PACKAGE = Path(tether.__file__).resolve().parent
# `tether init` copies these files into a new project: they are the author's code, not
# modules of Tether (their `workflows`/`activities` are the author's packages).
NOT_MODULES = {PACKAGE / "cli" / "scaffold"}

GROUND = ("tether.errors", "tether.core")
PLAIN_LIBRARIES = ("tether.governance", "tether.verification")
TOP = ("tether.cli", "tether.console", "tether.worker", "tether.testing")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    module_level: bool
    type_checking: bool

    @property
    def runs_on_import(self) -> bool:
        return self.module_level and not self.type_checking

    def __str__(self) -> str:
        where = "module level" if self.module_level else "in a function"
        if self.type_checking:
            where += ", TYPE_CHECKING"
        return f"{self.source} -> {self.target} (line {self.line}, {where})"


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(PACKAGE, followlinks=True):
        here = Path(folder)
        dirs[:] = [
            d for d in dirs if here / d not in NOT_MODULES and (here / d / "__init__.py").is_file()
        ]
        for name in files:
            if not name.endswith(".py"):
                continue
            parts = ["tether", *here.relative_to(PACKAGE).parts]
            if name != "__init__.py":
                parts.append(name[:-3])
            found[".".join(parts)] = here / name
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import statement of one module, with where it sits."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, list[str], int, bool, bool]] = []
        self._depth = 0
        self._type_checking = 0

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _add(self, target: str, names: list[str], line: int) -> None:
        self.found.append((target, names, line, self._depth == 0, self._type_checking > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, [], node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        self._add(base, [a.name for a in node.names], node.lineno)


@cache
def graph() -> tuple[dict[str, Path], tuple[Edge, ...], tuple[tuple[str, str, int], ...]]:
    """The modules, the edges between them, and every import of a non-Tether module
    (source, top-level name, line) at module level outside TYPE_CHECKING."""
    files = _module_files()
    edges: list[Edge] = []
    external: list[tuple[str, str, int]] = []
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, names, line, module_level, type_checking in visitor.found:
            if not within(target, ("tether",)):
                if module_level and not type_checking:
                    external.append((module, target.split(".")[0], line))
                continue
            # `from tether.x import y` imports the module tether.x.y when there is one.
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in files] or [target]
            if len(targets) < len(names):
                targets.append(target)
            for t in dict.fromkeys(targets):
                assert t in files, f"{module} line {line} imports {t}, which does not exist"
                edges.append(Edge(module, t, line, module_level, type_checking))
    return files, tuple(edges), tuple(external)


def _floor(module: str) -> str:
    if within(module, GROUND):
        return "ground"
    if within(module, TOP) or module == "tether":
        return "top"
    if within(module, ("tether.runtime",)):
        return "services"
    return "planes"


def test_every_module_is_read() -> None:
    files, edges, _ = graph()
    for expected in (
        "tether.errors",
        "tether.core.config",
        "tether.governance.policy",
        "tether.verification.ledger",
        "tether.workflows.agent",
        "tether.activities.tools",
        "tether.runtime.client",
        "tether.cli.main",
        "tether.console.app",
        "tether.worker",
    ):
        assert expected in files, expected
    assert len(edges) > 100


def test_the_ground_floor_imports_only_itself() -> None:
    _, edges, _ = graph()
    bad = [e for e in edges if _floor(e.source) == "ground" and _floor(e.target) != "ground"]
    assert not bad, "\n".join(map(str, bad))


def test_nothing_below_the_top_floor_imports_it() -> None:
    _, edges, _ = graph()
    bad = [e for e in edges if _floor(e.source) != "top" and _floor(e.target) == "top"]
    assert not bad, "\n".join(map(str, bad))


def test_planes_do_not_import_services() -> None:
    _, edges, _ = graph()
    bad = [e for e in edges if _floor(e.source) == "planes" and _floor(e.target) == "services"]
    assert not bad, "\n".join(map(str, bad))


def test_the_console_does_not_import_the_cli() -> None:
    """The console is a peer of the CLI, not a user of it; shared code lives lower down
    (only the `tether console` command itself, `tether.console.cli`, is CLI code)."""
    _, edges, _ = graph()
    bad = [
        e
        for e in edges
        if within(e.source, ("tether.console",))
        and e.source != "tether.console.cli"
        and within(e.target, ("tether.cli",))
    ]
    assert not bad, "\n".join(map(str, bad))


def _loaded_with(module: str, files: dict[str, Path]) -> list[str]:
    """`module` and the packages Python runs before it (tether, tether.x, ...)."""
    parts = module.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in chain if m in files]


def test_plain_libraries_never_reach_temporalio() -> None:
    files, edges, external = graph()
    direct = [
        f"{source} line {line}"
        for source, name, line in external
        if name == "temporalio" and within(source, PLAIN_LIBRARIES)
    ]
    assert not direct, direct
    # Any import of temporalio in a plain library, even in a function, is a mistake.
    for module, path in files.items():
        if within(module, PLAIN_LIBRARIES):
            visitor = _Imports(module, path.name == "__init__.py")
            visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
            assert not [f for f in visitor.found if within(f[0], ("temporalio",))], module

    runtime_edges: dict[str, list[str]] = {}
    for e in edges:
        if e.runs_on_import:
            runtime_edges.setdefault(e.source, []).append(e.target)
    uses_temporal = {source for source, name, _ in external if name == "temporalio"}
    for start in (m for m in files if within(m, PLAIN_LIBRARIES)):
        came_from: dict[str, str] = {}
        todo = [start]
        seen = {start}
        while todo:
            here = todo.pop()
            if here in uses_temporal:
                chain = [here]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                raise AssertionError(
                    "temporalio reached: " + " -> ".join(reversed(chain)) + " -> temporalio"
                )
            for nxt in runtime_edges.get(here, []) + _loaded_with(here, files):
                if nxt not in seen:
                    seen.add(nxt)
                    came_from[nxt] = here
                    todo.append(nxt)


def test_no_import_cycles() -> None:
    files, edges, _ = graph()
    succ: dict[str, list[str]] = {m: [] for m in files}
    for e in edges:
        if e.runs_on_import and e.target != e.source:
            succ[e.source].append(e.target)
    # Depth-first search with colours; the first back edge found is reported as a cycle.
    colour = dict.fromkeys(files, 0)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in succ[node]:
            if colour[nxt] == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if colour[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = 2
        return None

    for module in sorted(files):
        if colour[module] == 0 and (cycle := visit(module)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
