"""Payloads of MCP tools: a tool's declaration as Tether governs it, its arguments and result.

A declaration (`McpToolDecl`) is what the worker read from the server's `tools/list` and
`tether.toml`: the policy action and resource template, the input schema and the MCP
annotations. It lands in workflow history (the `list_mcp_tools` activity's result), so a
replay sees the same tools whatever the server lists today. No I/O, no MCP SDK.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, JsonValue

IDEMPOTENCY_META = "tether/idempotency_key"
"""The `_meta` key of a call's idempotency key (the step's effect key)."""
STEP_META = "tether/step"
"""The `_meta` key naming the step (`workflow_id:run_id:step`)."""
RESULT_LIMIT = 16_000
"""Characters of a result kept in workflow history; the whole result is in the content
store under `content_digest`."""


def qualified_name(server: str, tool: str) -> str:
    """The governed tool's name: `mcp.<server>.<tool>`."""
    return f"mcp.{server}.{tool}"


class McpToolDecl(BaseModel):
    """One MCP tool as Tether governs it."""

    server: str
    tool: str
    description: str = ""
    title: str = ""
    input_schema: dict[str, JsonValue] = Field(default_factory=dict)
    action: str
    resource: str
    """A `str.format` template over the arguments, e.g. 'vendor/{vendor}'."""
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent_hint: bool | None = None
    open_world: bool | None = None
    idempotent: bool = False
    """Tether may retry the call: it is read-only or honours the idempotency key."""
    timeout_seconds: float = 60.0

    @property
    def name(self) -> str:
        return qualified_name(self.server, self.tool)

    @property
    def side_effect(self) -> bool:
        """MCP's default: a tool not marked read-only may change its world."""
        return self.read_only is not True

    @property
    def function_name(self) -> str:
        """A name frameworks accept for a function tool (letters, digits, `_`, `-`)."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.server}__{self.tool}")


class McpListInput(BaseModel):
    servers: list[str]


class McpCatalog(BaseModel):
    tools: list[McpToolDecl] = Field(default_factory=list)

    def get(self, name: str) -> McpToolDecl | None:
        return next((t for t in self.tools if t.name == name), None)


class McpArguments(BaseModel):
    """A tool's arguments as the model gave them (checked against its input schema)."""

    model_config = ConfigDict(extra="allow")


class McpToolResult(BaseModel):
    """What the server answered, as much of it as history keeps."""

    server: str
    tool: str
    is_error: bool = False
    text: str = ""
    """The text content blocks, joined (cut at `RESULT_LIMIT`)."""
    structured: dict[str, JsonValue] | None = None
    """The structured content, when it fits in `RESULT_LIMIT`."""
    truncated: bool = False
    content_digest: str = ""
    """Digest of the whole result in the ledger's content store."""
