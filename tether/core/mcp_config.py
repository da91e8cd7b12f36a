"""`[mcp.servers.<name>]` in `tether.toml`: the MCP servers whose tools become governed.

    [mcp.servers.bank]
    command = "python"                 # stdio: the worker starts this process per call
    args = ["-m", "bank_mcp"]
    # url = "http://bank:8000/mcp"     # or streamable HTTP

    [mcp.servers.bank.tools.pay_vendor]
    action = "payments.pay"            # default: mcp.bank.pay_vendor
    resource = "vendor/{vendor}"       # a template over the tool's arguments
    idempotent = true                  # honours the idempotency key in `_meta`

A server names exactly one of `command` (stdio) and `url` (streamable HTTP). Plain data:
no I/O, no MCP SDK.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

SERVER_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class McpToolConfig(BaseModel):
    """How one tool of a server is governed; unset fields keep their defaults."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field("", description="The policy action; empty: mcp.<server>.<tool>.")
    resource: str = Field(
        "",
        description="The resource, a template over the arguments (e.g. 'vendor/{vendor}'); "
        "empty: the server's default_resource.",
    )
    idempotent: bool | None = Field(
        None,
        description="The tool honours the idempotency key Tether sends in `_meta`, so a "
        "retry cannot repeat its effect; unset: the tool's idempotentHint annotation.",
    )
    timeout_seconds: float = Field(60.0, gt=0, description="One call's time limit.")


class McpServerConfig(BaseModel):
    """One MCP server (`[mcp.servers.<name>]`)."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field("", description="Executable of a stdio server.")
    args: list[str] = Field(default_factory=list, description="Its arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Its extra environment.")
    cwd: str = Field("", description="Its working directory; empty: the worker's.")
    url: str = Field("", description="Endpoint of a streamable HTTP server.")
    tools: dict[str, McpToolConfig] = Field(
        default_factory=dict, description="Per-tool action renames and resource templates."
    )
    only: list[str] = Field(
        default_factory=list, description="Offer only these tools; empty: every tool listed."
    )
    default_resource: str = Field(
        "mcp/{server}/{tool}",
        description="Resource of a tool without its own template ({server}, {tool} filled).",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if bool(self.command) == bool(self.url):
            raise ValueError(
                "an [mcp.servers.<name>] entry names exactly one of command (stdio) and url "
                f"(streamable HTTP); it has command={self.command!r}, url={self.url!r}"
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"MCP server url {self.url!r} is not an http(s) URL")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "streamable-http"


class McpConfig(BaseModel):
    """`[mcp]`: the servers, by name (lower case letters, digits, '-' and '_')."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, McpServerConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> McpConfig:
        for name in self.servers:
            if not SERVER_NAME.match(name):
                raise ValueError(
                    f"MCP server name {name!r} is not a plain lower-case name; rename "
                    "[mcp.servers.<name>] to e.g. 'bank' or 'crm-prod'"
                )
        return self
