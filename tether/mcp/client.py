"""The MCP side of the worker: one connection per call to a declared server, stdio or
streamable HTTP, through the `mcp` SDK (the `tether[mcp]` extra).

`McpClients` is built once in the worker from `[mcp.servers]`; `list_tools(server)` reads
the server's tools and `call(server, tool, args, meta)` calls one. Each opens its own
session: a stdio server is a process started for the call (its state lives where the
server keeps it), an HTTP server a session over the worker's connection pool. The SDK's
own retries stay off: Temporal's retry policy is the one retry loop.

Errors: an undeclared server raises `McpServerUnknown`; an SDK that is not installed
raises `McpUnavailable` saying to install `tether[mcp]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import JsonValue

from tether.core.mcp_config import McpConfig, McpServerConfig
from tether.errors import ConfigError

if TYPE_CHECKING:
    from mcp import Client
    from mcp_types import RequestParamsMeta


class McpServerUnknown(ConfigError):
    """A call names a server that `[mcp.servers]` does not declare."""


class McpUnavailable(ConfigError):
    """The `mcp` SDK is not installed."""


@dataclass(frozen=True)
class ListedTool:
    """A tool as the server lists it, before Tether's configuration is applied."""

    name: str
    description: str
    title: str
    input_schema: dict[str, JsonValue]
    read_only: bool | None
    destructive: bool | None
    idempotent: bool | None
    open_world: bool | None


@dataclass(frozen=True)
class CallOutcome:
    is_error: bool
    text: str
    structured: dict[str, JsonValue] | None


class McpClients:
    """Connections to the declared MCP servers (see the module)."""

    def __init__(self, config: McpConfig) -> None:
        self.config = config

    def server(self, name: str) -> McpServerConfig:
        found = self.config.servers.get(name)
        if found is None:
            declared = ", ".join(sorted(self.config.servers)) or "none"
            raise McpServerUnknown(
                f"MCP server {name!r} is not declared (declared: {declared}); add "
                f"[mcp.servers.{name}] with command or url to tether.toml"
            )
        return found

    def _client(self, name: str, timeout: float) -> Client:
        server = self.server(name)
        try:
            from mcp import Client, StdioServerParameters
        except ImportError:
            raise McpUnavailable(
                "the mcp SDK is not installed; install Tether with the mcp extra "
                "(pip install 'tether[mcp]')"
            ) from None
        target: Any
        if server.command:
            target = StdioServerParameters(
                command=server.command,
                args=list(server.args),
                env={**os.environ, **server.env},
                cwd=server.cwd or None,
            )
        else:
            target = server.url
        return Client(target, read_timeout_seconds=timeout, cache=None)

    async def list_tools(self, name: str, read_timeout: float = 30.0) -> list[ListedTool]:
        listed: list[ListedTool] = []
        async with self._client(name, read_timeout) as client:
            cursor: str | None = None
            for _ in range(100):  # a paginator that never ends cannot hang the worker
                page = await client.list_tools(cursor=cursor)
                for t in page.tools:
                    notes = t.annotations
                    listed.append(
                        ListedTool(
                            name=t.name,
                            description=t.description or "",
                            title=t.title or (notes.title if notes and notes.title else ""),
                            input_schema=dict(t.input_schema),
                            read_only=notes.read_only_hint if notes else None,
                            destructive=notes.destructive_hint if notes else None,
                            idempotent=notes.idempotent_hint if notes else None,
                            open_world=notes.open_world_hint if notes else None,
                        )
                    )
                cursor = page.next_cursor
                if cursor is None:
                    break
        return listed

    async def call(
        self,
        name: str,
        tool: str,
        args: Mapping[str, JsonValue],
        meta: dict[str, Any],
        read_timeout: float,
    ) -> CallOutcome:
        async with self._client(name, read_timeout) as client:
            result = await client.call_tool(tool, dict(args), meta=cast("RequestParamsMeta", meta))
        from mcp.types import TextContent

        text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
        structured = result.structured_content
        return CallOutcome(
            is_error=bool(result.is_error),
            text=text,
            structured=dict(structured) if isinstance(structured, dict) else None,
        )
