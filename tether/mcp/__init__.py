"""MCP tools as governed tools (the `tether[mcp]` extra): declare servers in
`[mcp.servers.<name>]`, offer their tools to `AgentLoop` (`mcp_servers=[...]`) or call them
from any workflow or adapter with `list_mcp_tools` and `call_mcp_tool` (docs/mcp.md)."""

from tether.mcp.payloads import McpArguments, McpCatalog, McpToolDecl, McpToolResult
from tether.mcp.steps import call_mcp_tool, list_mcp_tools
from tether.mcp.templates import McpArgumentsInvalid

__all__ = [
    "McpArguments",
    "McpArgumentsInvalid",
    "McpCatalog",
    "McpToolDecl",
    "McpToolResult",
    "call_mcp_tool",
    "list_mcp_tools",
]
