"""A tools entry of `[app]` may name a module-level `@tool` function, not only a class:
the worker binds it, the sandbox passes its module through, and a workflow's `act()`
runs it governed, as it runs a method."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from tether.activities.tools import REGISTRY
from tether.core.config import AppConfig
from tether.errors import AppError
from tether.runtime.app import load_app
from tether.testing import project_settings, running_kit

TOOLS = """
from pydantic import BaseModel
from tether import tool


class Lookup(BaseModel):
    order_id: str


class Found(BaseModel):
    order_id: str
    status: str


@tool(action="orders.read", resource="order/{order_id}")
async def fn_read_order(args: Lookup) -> Found:
    return Found(order_id=args.order_id, status="shipped")


def not_a_tool(args: Lookup) -> Found:
    return Found(order_id=args.order_id, status="?")
"""
FLOWS = """
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from fn_tools import Found, Lookup, fn_read_order
    from tether import AgentWorkflow


@workflow.defn(name="FnLookup")
class FnLookupWorkflow(AgentWorkflow):
    agent = "agent:fn-clerk"

    @workflow.run
    async def run(self, inp: Lookup) -> Found:
        return await self.act(
            "orders.read", resource=f"order/{inp.order_id}", tool=fn_read_order, args=inp
        )
"""
POLICY = """p, role:fn-clerk, order/:id, orders.read, True, auto, fn-read, -, -
g, agent:fn-clerk, role:fn-clerk
"""
CONFIG = """policy_path = "policy.csv"

[app]
workflows = ["fn_flows:FnLookupWorkflow"]
tools = ["fn_tools:fn_read_order"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Any:
    """A project with one tool function, importable while the test runs, forgotten after."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name, text in {
        "fn_tools.py": TOOLS,
        "fn_flows.py": FLOWS,
        "policy.csv": POLICY,
        "tether.toml": CONFIG,
    }.items():
        (folder / name).write_text(text)
    saved = dict(REGISTRY)
    yield folder
    for name in ("fn_tools", "fn_flows"):
        sys.modules.pop(name, None)
    REGISTRY.clear()
    REGISTRY.update(saved)
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    importlib.invalidate_caches()


def test_a_tool_function_is_an_app_tool(project: Path) -> None:
    app = load_app(AppConfig(path=[project], tools=["fn_tools:fn_read_order"]))
    [tool_function] = app.tools
    assert tool_function.__name__ == "fn_read_order"
    assert app.tool_modules == ["fn_tools"]  # passed through the sandbox
    with pytest.raises(AppError, match="'fn_tools:not_a_tool' declares no @tool"):
        load_app(AppConfig(path=[project], tools=["fn_tools:not_a_tool"]))


async def test_a_workflow_runs_a_tool_function(
    project: Path, tmp_path: Path, tether_env: WorkflowEnvironment
) -> None:
    settings = project_settings(tether_env.client, tmp_path / "run", project / "tether.toml")
    workflow_id = f"fn-lookup-{uuid.uuid4().hex[:8]}"
    async with running_kit(tether_env.client, settings) as kit:
        result = await kit.run(
            "FnLookup", _lookup("A-1"), as_user="user:dana", workflow_id=workflow_id
        )
        assert result == {"order_id": "A-1", "status": "shipped"}
        [executed] = kit.events(workflow_id, "tool.executed")
        assert (executed.action, executed.resource) == ("orders.read", "order/A-1")


def _lookup(order_id: str) -> Any:
    return importlib.import_module("fn_tools").Lookup(order_id=order_id)
