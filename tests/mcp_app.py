"""A workflow that calls one MCP tool through Tether's library API (`tether.mcp`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue
from temporalio import workflow

from tether.mcp import McpArgumentsInvalid, McpToolResult, call_mcp_tool, list_mcp_tools
from tether.workflows import AgentWorkflow
from tether.workflows.errors import ActionDenied, ActionRejected


class McpCallInput(BaseModel):
    servers: list[str]
    tool: str
    """`mcp.<server>.<tool>`."""
    args: dict[str, JsonValue] = Field(default_factory=dict)


class McpCallResult(BaseModel):
    status: Literal["done", "denied", "rejected", "invalid", "unknown"]
    result: McpToolResult | None = None
    message: str = ""
    offered: list[str] = Field(default_factory=list)


@workflow.defn(name="McpCall")
class McpCallWorkflow(AgentWorkflow):
    agent = "agent:mcp-clerk"

    @workflow.run
    async def run(self, inp: McpCallInput) -> McpCallResult:
        catalog = await list_mcp_tools(inp.servers)
        offered = [t.name for t in catalog.tools]
        decl = catalog.get(inp.tool)
        if decl is None:
            return McpCallResult(status="unknown", offered=offered)
        try:
            result = await call_mcp_tool(self, decl, inp.args)
        except ActionDenied as exc:
            return McpCallResult(status="denied", message=exc.message, offered=offered)
        except ActionRejected as exc:
            return McpCallResult(status="rejected", message=exc.message, offered=offered)
        except McpArgumentsInvalid as exc:
            return McpCallResult(status="invalid", message=exc.message, offered=offered)
        return McpCallResult(status="done", result=result, offered=offered)
