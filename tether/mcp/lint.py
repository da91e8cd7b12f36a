"""Policy lint over the tools the declared MCP servers offer now (`tether policy lint`).

Connects to every server in `[mcp.servers]` (the worker's `McpClients`), reads its tools
and their annotations, and runs `governance.mcp_lint` over them.
"""

from __future__ import annotations

from tether.core.mcp_config import McpConfig
from tether.governance.lint import Finding
from tether.governance.mcp_lint import McpToolFacts, lint_mcp_tools
from tether.governance.policy import PolicyEngine
from tether.mcp.payloads import McpToolDecl
from tether.mcp.templates import pattern_of


def facts_of(decl: McpToolDecl) -> McpToolFacts:
    return McpToolFacts(
        name=decl.name,
        action=decl.action,
        resource_pattern=pattern_of(decl.resource),
        read_only=decl.read_only,
        destructive=decl.destructive,
    )


async def lint_servers(engine: PolicyEngine, config: McpConfig) -> list[Finding]:
    """Findings for every tool of every declared server (connecting to each)."""
    from tether.mcp.catalog import read_catalog
    from tether.mcp.client import McpClients

    if not config.servers:
        return []
    catalog = await read_catalog(McpClients(config), sorted(config.servers))
    return lint_mcp_tools(engine, [facts_of(t) for t in catalog.tools])
