"""The author's app: one declaration of workflows and tools, honoured everywhere.

`[app]` in `tether.toml` names workflow classes and tool classes as `module:Name`;
`load_app(settings)` imports them (the `path` folders first on the import path), so the
worker, `tether dev`, `tether run`, replay, what-if, export and the console all see the
same set. Importing the tool modules also registers their tools, which replay needs: an
agent loop's workflow looks its tools up by name.

A tool reference may name a class (built with `from_app(context)` when it defines that
classmethod, else with no arguments), or an object that is already built.

Errors: a reference that cannot be imported, or names something that is not a workflow
(or has no tools), raises `AppError` naming it and saying what to fix.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine
from temporalio import workflow

from tether.activities.tools import TOOL_ATTR
from tether.core.config import AppConfig, Settings
from tether.errors import AppError


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
        """The modules the tools live in, workflow modules excepted: the plugin passes them
        through the sandbox (a workflow's own module is always imported anew in it)."""
        own = {cls.__module__ for cls in self.workflows}
        modules = [(t if inspect.isclass(t) else type(t)).__module__ for t in self.tools]
        return [m for m in dict.fromkeys(modules) if m not in own]

    def workflow_names(self) -> dict[str, type]:
        """Each workflow's Temporal type name to its class."""
        return {_workflow_name(cls): cls for cls in self.workflows}

    def build_tools(self, context: AppContext) -> list[object]:
        """The tool objects a worker binds: classes built, objects as they are."""
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


def _workflow_name(cls: type) -> str:
    defn = workflow._Definition.from_class(cls)
    if defn is None or defn.name is None:
        raise AppError(
            f"{cls.__module__}:{cls.__qualname__} is not a workflow; decorate it with "
            "@workflow.defn(name=...) or remove it from [app] workflows"
        )
    return defn.name


def import_ref(ref: str, what: str, paths: Sequence[str]) -> Any:
    """The object `ref` ('module:Name') names; `what` is the [app] key, for errors."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
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
    kind = ref if inspect.isclass(ref) else type(ref)
    return any(hasattr(v, TOOL_ATTR) for _, v in inspect.getmembers(kind))


def load_app(config: AppConfig | Settings) -> App:
    """Import the app `config` declares (the settings' `[app]`)."""
    app_config = config.app if isinstance(config, Settings) else config
    paths = [str(p) for p in app_config.path]
    app = App()
    for ref in app_config.workflows:
        cls = import_ref(ref, "workflows", paths)
        if not inspect.isclass(cls):
            raise AppError(f"[app] workflows entry {ref!r} is not a class")
        _workflow_name(cls)
        app.workflows.append(cls)
    for ref in app_config.tools:
        tools = import_ref(ref, "tools", paths)
        if not _has_tools(tools):
            raise AppError(
                f"[app] tools entry {ref!r} declares no @tool methods; name the class "
                "whose methods carry @tool(...)"
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
