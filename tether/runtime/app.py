"""The author's app: one declaration of workflows and tools, honoured everywhere.

`[app]` in `tether.toml` names workflow classes and tool classes as `module:Name`;
`load_app(settings)` imports them (the `path` folders first on the import path), so the
worker, `tether dev`, `tether run`, replay, what-if, export and the console all see the
same set. Importing the tool modules also registers their tools, which replay needs: an
agent loop's workflow looks its tools up by name.

A tool reference may name a class (built with `from_app(context)` when it defines that
classmethod, else with no arguments), an object that is already built, or a module-level
`@tool` function.

The `path` folders stay on the import path once an app loaded: the workflow sandbox
imports the workflow modules anew for every run, and tools may import lazily, both long
after `load_app` returned. A load that fails takes back the folders it added.

Errors: a reference that cannot be imported, or names something that is not a workflow
(or has no tools), raises `AppError` naming it and saying what to fix; so does a module
imported from elsewhere (another project's of the same name, imported first) when the
`path` folders have their own.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from sqlalchemy import Engine
from temporalio import workflow

from tether.activities.tools import TOOL_ATTR
from tether.core.config import AppConfig, Settings
from tether.errors import AppError

TETHER_WORKFLOW_PACKAGE = "tether.workflows"
"""Tether's own workflow modules: never passed through the sandbox."""


@dataclass(frozen=True)
class AppContext:
    """What a tools class may build itself from: the settings and the database engine."""

    settings: Settings
    engine: Engine


class _FromApp(Protocol):
    @classmethod
    def from_app(cls, context: AppContext) -> object: ...


@dataclass
class App:
    """An app's workflow classes and tool classes (or objects), as imported."""

    workflows: list[type] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)

    @property
    def tool_modules(self) -> list[str]:
        """The modules the tools live in, the plugin passes them through the sandbox; not a
        workflow module nor a package holding one (passing it through would pass the
        workflow through too, unsandboxed): those the sandbox imports anew, as it must."""
        own = [*(cls.__module__ for cls in self.workflows), TETHER_WORKFLOW_PACKAGE]
        modules = [_module_of(t) for t in self.tools]
        return [
            m
            for m in dict.fromkeys(modules)
            if not any(w == m or w.startswith(f"{m}.") for w in own)
        ]

    def workflow_names(self) -> dict[str, type]:
        """Each workflow's Temporal type name to its class."""
        return {workflow_name(cls): cls for cls in self.workflows}

    def check_tools(self) -> None:
        """AppError naming the first tools class a worker cannot build: one with no
        `from_app(cls, context)` whose constructor needs arguments."""
        for ref in self.tools:
            if not inspect.isclass(ref) or callable(getattr(ref, "from_app", None)):
                continue
            try:
                inspect.signature(ref).bind()
            except TypeError:
                needs = ", ".join(
                    name
                    for name, p in inspect.signature(ref).parameters.items()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                )
                raise AppError(
                    f"tools class {ref.__module__}:{ref.__qualname__} cannot be built: its "
                    f"constructor needs ({needs}); add a classmethod from_app(cls, context) that "
                    "builds it from context.settings and context.engine, or give the constructor "
                    "no required arguments"
                ) from None
            except ValueError:  # no signature to read (a builtin): leave it to the worker
                continue

    def build_tools(self, context: AppContext) -> list[object]:
        """The tool objects a worker binds: classes built, objects as they are."""
        self.check_tools()
        built: list[object] = []
        for ref in self.tools:
            if inspect.isclass(ref):
                factory = getattr(ref, "from_app", None)
                built.append(factory(context) if callable(factory) else ref())
            else:
                built.append(ref)
        return built

    def merged(self, workflows: Sequence[type] = (), tools: Sequence[object] = ()) -> App:
        """This app with more workflows and tools (tests and benchmarks add their own)."""
        return App([*self.workflows, *workflows], [*self.tools, *tools])


def workflow_name(cls: type) -> str:
    """The Temporal type name of workflow class `cls`; AppError when it is not one."""
    defn = workflow._Definition.from_class(cls)
    if defn is None or defn.name is None:
        raise AppError(
            f"{cls.__module__}:{cls.__qualname__} is not a workflow; decorate it with "
            "@workflow.defn(name=...) or remove it from [app] workflows"
        )
    return defn.name


@contextlib.contextmanager
def _import_path(paths: Sequence[str]) -> Iterator[None]:
    """`paths` first on the import path (those not on it yet); taken back if the block
    fails, kept if it succeeds (see the module)."""
    added = [p for p in dict.fromkeys(paths) if p not in sys.path]
    sys.path[:0] = added
    if added:
        importlib.invalidate_caches()
    try:
        yield
    except BaseException:
        for path in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
        raise


def _origin(module: ModuleType) -> list[Path]:
    """Where `module` was loaded from: its file, or a namespace package's folders."""
    file = getattr(module, "__file__", None)
    if file:
        return [Path(file).resolve()]
    return [Path(p).resolve() for p in getattr(module, "__path__", [])]


def _declared_files(name: str, paths: Sequence[str]) -> list[Path]:
    """The files (or package folders) of module `name` under the `paths` folders."""
    found: list[Path] = []
    for folder in paths:
        base = Path(folder).resolve().joinpath(*name.split("."))
        for candidate in (base.with_name(f"{base.name}.py"), base / "__init__.py", base):
            if candidate.exists():
                found.append(candidate)
                break
    return found


def _check_not_shadowed(ref: str, what: str, module_name: str, paths: Sequence[str]) -> None:
    """AppError when `module_name` (or a package above it) came from outside `paths`
    although the `paths` folders have their own: another module of that name was imported
    first (from sys.modules, or an earlier import path entry) and shadows the app's."""
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        module = sys.modules.get(name)
        declared = _declared_files(name, paths)
        if module is None or not declared:
            continue
        origin = _origin(module)
        if not set(origin) & set(declared):
            raise AppError(
                f"[app] {what} entry {ref!r}: module {name!r} was imported from "
                f"{', '.join(str(o) for o in origin) or 'nowhere'!r}, not from the [app] path "
                f"({', '.join(map(repr, paths))}), which has {str(declared[0])!r}: another "
                f"module named {name!r} was imported first; rename the package, or run "
                "Tether for this project in a process of its own"
            )


def import_ref(ref: str, what: str, paths: Sequence[str]) -> Any:
    """The object `ref` ('module:Name') names; `what` is the [app] key, for errors."""
    with _import_path(paths):
        return _import_ref(ref, what, paths)


def _import_ref(ref: str, what: str, paths: Sequence[str]) -> Any:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        example = {"workflows": "RefundWorkflow", "tools": "SupportTools"}.get(what, what)
        raise AppError(
            f"[app] {what} entry {ref!r} is not 'module:Name'; write e.g. 'myapp.{what}:{example}'"
        )
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise AppError(
            f"[app] {what} entry {ref!r}: {exc.filename}:{exc.lineno}: {exc.msg}; fix that file"
        ) from None
    except ImportError as exc:
        raise AppError(
            f"[app] {what} entry {ref!r}: cannot import {module_name!r} ({exc}); the import "
            f"path starts with {', '.join(map(repr, paths)) or 'nothing'} (set [app] path)"
        ) from None
    _check_not_shadowed(ref, what, module_name, paths)
    try:
        value = module
        for part in attr.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise AppError(
            f"[app] {what} entry {ref!r}: module {module_name!r} has no {attr!r}"
        ) from None
    return value


def _has_tools(ref: Any) -> bool:
    if inspect.isfunction(ref):  # a module-level @tool function
        return hasattr(ref, TOOL_ATTR)
    kind = ref if inspect.isclass(ref) else type(ref)
    return any(hasattr(v, TOOL_ATTR) for _, v in inspect.getmembers(kind))


def _module_of(tools: Any) -> str:
    """The module a tools entry (class, function or object) is defined in."""
    return str(
        (tools if inspect.isclass(tools) or inspect.isfunction(tools) else type(tools)).__module__
    )


def load_app(config: AppConfig | Settings) -> App:
    """Import the app `config` declares (the settings' `[app]`)."""
    app_config = config.app if isinstance(config, Settings) else config
    paths = [str(p) for p in app_config.path]
    with _import_path(paths):
        return _load(app_config, paths)


def _load(app_config: AppConfig, paths: Sequence[str]) -> App:
    app = App()
    for ref in app_config.workflows:
        cls = import_ref(ref, "workflows", paths)
        if not inspect.isclass(cls):
            raise AppError(f"[app] workflows entry {ref!r} is not a class")
        workflow_name(cls)
        app.workflows.append(cls)
    for ref in app_config.tools:
        tools = import_ref(ref, "tools", paths)
        if not _has_tools(tools):
            raise AppError(
                f"[app] tools entry {ref!r} declares no @tool methods; name the class "
                "whose methods carry @tool(...), or a function decorated with @tool(...)"
            )
        app.tools.append(tools)
    return app


def app_from_ref(ref: str, paths: Sequence[str] = (".",)) -> App:
    """The `App` that `ref` names (`module:attribute`, or a module with an `app`), for
    `tether --app`; a callable is called for it."""
    if ":" not in ref:
        ref = f"{ref}:app"
    value = import_ref(ref, "app", [str(Path(p).resolve()) for p in paths])
    if callable(value) and not isinstance(value, App):
        try:
            value = value()
        except Exception as exc:  # the author's factory: its failure is one line, not ours
            raise AppError(
                f"--app {ref!r}: calling it to get the app raised {type(exc).__name__}: {exc}; "
                "name a tether.App, or a function that takes no arguments and returns one"
            ) from None
    if not isinstance(value, App):
        raise AppError(
            f"--app {ref!r} names a {type(value).__name__}, not a tether.App; define "
            "e.g. app = App(workflows=[MyWorkflow], tools=[MyTools]) there"
        )
    return value
