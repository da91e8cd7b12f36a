"""load_app: the `[app] path` folders on the import path, and the app's own modules."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox_app import PackageTools
from tests.sandbox_app.flows import ClockWorkflow, FlowTools
from tether.activities.tools import REGISTRY
from tether.core.config import AppConfig
from tether.errors import AppError
from tether.runtime.app import App, load_app

TOOLS = """
from pydantic import BaseModel

from tether.activities.tools import tool


class Args(BaseModel):
    text: str = ""


class Tools:
    @tool(action="notes.write", resource="note", name="{name}")
    async def note(self, args: Args) -> Args:
        return args
"""


@pytest.fixture
def package() -> Iterator[str]:
    """A fresh package name; afterwards its modules, tools and import path entries go."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    saved_path, saved_tools = list(sys.path), dict(REGISTRY)
    try:
        yield name
    finally:
        sys.path[:] = saved_path
        for module in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[module]
        REGISTRY.clear()
        REGISTRY.update(saved_tools)


def _project(root: Path, package: str) -> Path:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    tool_name = f"{package}_{root.name}"
    (root / package / "tools.py").write_text(TOOLS.replace("{name}", tool_name))
    return root


def test_a_module_of_another_project_imported_first_is_refused(
    tmp_path: Path, package: str
) -> None:
    first = _project(tmp_path / "first", package)
    second = _project(tmp_path / "second", package)
    [tools] = load_app(AppConfig(path=[first], tools=[f"{package}.tools:Tools"])).tools
    assert Path(sys.modules[package].__file__ or "").is_relative_to(first)
    with pytest.raises(AppError) as raised:
        load_app(AppConfig(path=[second], tools=[f"{package}.tools:Tools"]))
    message = str(raised.value)
    assert repr(package) in message
    assert str(first / package / "__init__.py") in message  # where it came from
    assert repr(str(second)) in message  # the declared folder
    assert "rename the package" in message
    assert load_app(AppConfig(path=[first], tools=[f"{package}.tools:Tools"])).tools == [tools]


def test_a_failed_load_takes_its_import_path_entries_back(tmp_path: Path, package: str) -> None:
    folder = _project(tmp_path / "project", package)
    missing = tmp_path / "missing"
    with pytest.raises(AppError, match="cannot import"):
        load_app(AppConfig(path=[missing, folder], tools=[f"{package}.nothing:Tools"]))
    assert str(missing) not in sys.path and str(folder) not in sys.path


def test_a_loaded_app_keeps_its_folder_on_the_import_path_once(
    tmp_path: Path, package: str
) -> None:
    folder = _project(tmp_path / "project", package)
    config = AppConfig(path=[folder], tools=[f"{package}.tools:Tools"])
    load_app(config)
    load_app(config)
    # Kept: the sandbox imports workflow modules anew for every run, long after loading.
    assert sys.path.count(str(folder)) == 1


def test_tool_modules_skip_workflow_modules_and_packages_holding_one() -> None:
    app = App(workflows=[ClockWorkflow], tools=[PackageTools, FlowTools])
    assert app.tool_modules == []
    others = App(workflows=[ClockWorkflow], tools=[PackageTools, _Sibling]).tool_modules
    assert others == [__name__]


class _Sibling:
    """A tools class in a module that holds no workflow (this one)."""
