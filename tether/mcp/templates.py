"""Resource templates of MCP tools: `str.format` fields over the tool's arguments.

Deterministic and pure: the workflow renders a resource before the decision, the
activity renders it again to check the call (`McpActivities.call_mcp_tool`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from pydantic import JsonValue
from temporalio.exceptions import ApplicationError

from tether.errors import ErrorType


class McpArgumentsInvalid(ApplicationError):
    """Arguments that do not fit the tool's input schema or resource template: nothing is
    decided or called; non-retryable (a workflow that does not catch it fails clearly)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type=ErrorType.MCP_ARGUMENTS_INVALID, non_retryable=True)


def template_fields(template: str) -> list[str]:
    """The argument names `template` reads, e.g. ['vendor'] for 'vendor/{vendor}'."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_resource(template: str, args: Mapping[str, JsonValue]) -> str:
    """`template` with the arguments filled in; McpArgumentsInvalid naming a missing one."""
    missing = [f for f in template_fields(template) if f not in args]
    if missing:
        raise McpArgumentsInvalid(
            f"the resource template {template!r} needs argument {missing[0]!r}, which the "
            "call does not give; pass it, or change the tool's resource in [mcp.servers]"
        )
    return template.format_map({f: args[f] for f in template_fields(template)})


def pattern_of(template: str) -> str:
    """The template as a keyMatch2 pattern ('vendor/{vendor}' → 'vendor/:vendor')."""
    out = template
    for name in template_fields(template):
        out = out.replace("{" + name + "}", ":" + name)
    return out
