"""MCP tools inside a workflow: the library API the agent loop and adapters call.

    catalog = await list_mcp_tools(["bank"])            # in history: replay sees the same
    decl = catalog.get("mcp.bank.pay_vendor")
    result = await call_mcp_tool(self, decl, {"vendor": "acme", "amount": 250.0})

`call_mcp_tool` is a governed step exactly like `AgentWorkflow.act`: the action and the
resource come from the tool's declaration (`[mcp.servers]` over `tools/list`) and the
arguments, never from the model; the policy context is the arguments; decision,
approval, notify and the ledger apply; the call runs as the `call_mcp_tool` activity with
the step's idempotency key. Arguments that do not fit the tool's input schema raise
`McpArgumentsInvalid` before anything is decided. Deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, JsonValue

    from tether.activities.tools import ToolSpec
    from tether.mcp.payloads import (
        McpArguments,
        McpCatalog,
        McpListInput,
        McpToolDecl,
        McpToolResult,
    )
    from tether.mcp.templates import McpArgumentsInvalid, render_resource

if TYPE_CHECKING:
    from tether.workflows.agent import AgentWorkflow

LIST_TIMEOUT = timedelta(seconds=60)
LIST_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


@dataclass(frozen=True)
class McpToolSpec(ToolSpec):
    """A `ToolSpec` whose calls run as the one `call_mcp_tool` activity."""

    @property
    def activity_name(self) -> str:
        return "call_mcp_tool"


def spec_for(decl: McpToolDecl) -> McpToolSpec:
    """The tool declaration `act` governs an MCP tool by."""
    return McpToolSpec(
        name=decl.name,
        action=decl.action,
        resource=decl.resource,
        args_type=McpArguments,
        result_type=McpToolResult,
        side_effect=decl.side_effect,
        idempotent=decl.idempotent,
        timeout=timedelta(seconds=decl.timeout_seconds),
        heartbeat=timedelta(seconds=max(5.0, min(30.0, decl.timeout_seconds))),
        title=decl.title,
    )


class _Declared:
    """Stands in for a tool function: `act` reads the declaration, never calls it."""

    def __init__(self, spec: ToolSpec) -> None:
        self.__tether_tool__ = spec

    async def __call__(self, args: BaseModel) -> McpToolResult:  # never called
        raise NotImplementedError


async def list_mcp_tools(servers: list[str]) -> McpCatalog:
    """The tools the named servers offer, as declared (the `list_mcp_tools` activity)."""
    if not servers:
        return McpCatalog()
    catalog: McpCatalog = await workflow.execute_activity(
        "list_mcp_tools",
        McpListInput(servers=servers),
        result_type=McpCatalog,
        start_to_close_timeout=LIST_TIMEOUT,
        retry_policy=LIST_RETRY,
    )
    return catalog


def check_arguments(decl: McpToolDecl, args: dict[str, JsonValue]) -> str:
    """The resource for these arguments; McpArgumentsInvalid when they do not fit the
    tool's input schema (the first problem, named) or its resource template."""
    with workflow.unsafe.imports_passed_through():
        import jsonschema  # type: ignore[import-untyped]

    validator = jsonschema.Draft202012Validator(decl.input_schema)
    problem = next(iter(sorted(validator.iter_errors(args), key=str)), None)
    if problem is not None:
        where = ".".join(str(p) for p in problem.absolute_path) or "arguments"
        raise McpArgumentsInvalid(f"{where}: {problem.message}")
    return render_resource(decl.resource, args)


async def call_mcp_tool(
    agent: AgentWorkflow, decl: McpToolDecl, args: dict[str, JsonValue]
) -> McpToolResult:
    """Call `decl` with `args` as a governed step of `agent` (see the module)."""
    resource = check_arguments(decl, args)
    result: McpToolResult = await agent.act(
        decl.action,
        resource=resource,
        tool=_Declared(spec_for(decl)),
        args=McpArguments.model_validate(args),
        context=dict(args),
    )
    return result


__all__ = ["McpArgumentsInvalid", "call_mcp_tool", "check_arguments", "list_mcp_tools"]
