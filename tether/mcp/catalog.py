"""Declarations of MCP tools: a server's `tools/list` under `[mcp.servers.<name>]`.

The action is `mcp.<server>.<tool>` unless renamed; the resource the tool's template, else
the server's `default_resource`; a tool is idempotent (retried by Temporal) when it is
read-only, or its config or its `idempotentHint` says it honours the idempotency key.
"""

from __future__ import annotations

from tether.core.mcp_config import McpToolConfig
from tether.mcp.client import ListedTool, McpClients
from tether.mcp.payloads import McpCatalog, McpToolDecl, qualified_name


def declare(clients: McpClients, server: str, listed: ListedTool) -> McpToolDecl:
    """The declaration of a listed tool under `[mcp.servers.<server>]`."""
    config = clients.server(server)
    own = config.tools.get(listed.name, McpToolConfig())
    default = config.default_resource.replace("{server}", server)
    keyed = own.idempotent if own.idempotent is not None else listed.idempotent is True
    return McpToolDecl(
        server=server,
        tool=listed.name,
        description=listed.description,
        title=listed.title,
        input_schema=listed.input_schema,
        action=own.action or qualified_name(server, listed.name),
        resource=own.resource or default.replace("{tool}", listed.name),
        read_only=listed.read_only,
        destructive=listed.destructive,
        idempotent_hint=listed.idempotent,
        open_world=listed.open_world,
        idempotent=listed.read_only is True or keyed,
        timeout_seconds=own.timeout_seconds,
    )


async def read_catalog(clients: McpClients, servers: list[str]) -> McpCatalog:
    """The declarations of every tool the named servers offer now (connecting to each)."""
    tools: list[McpToolDecl] = []
    for server in servers:
        config = clients.server(server)
        for listed in await clients.list_tools(server):
            if not config.only or listed.name in config.only:
                tools.append(declare(clients, server, listed))
    return McpCatalog(tools=tools)
