"""Policy lint for MCP tools: what a tool's annotations say about the rules it falls under.

An MCP server marks its tools with hints (`readOnlyHint`, `destructiveHint`, ...). A tool
that is destructive, or simply not read-only (MCP's default is "may change its world"),
and that a rule lets run at the `auto` tier changes things with no person told: a
warning, `mcp-auto-destructive` or `mcp-auto-writes`, naming the tool and the rule. The
hints are the server's word, never trusted to relax a rule, only to question one.

`lint_mcp_tools(engine, tools)` takes plain `McpToolFacts` (the worker's declarations,
converted by `tether.mcp.lint`). Pure: no I/O, no temporalio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tether.governance.lint import Finding, constant_value, overlaps
from tether.governance.policy import PolicyEngine
from tether.governance.types import Tier


@dataclass(frozen=True)
class McpToolFacts:
    """What lint needs of one MCP tool."""

    name: str
    """`mcp.<server>.<tool>`."""
    action: str
    resource_pattern: str
    """Its resource template as a keyMatch2 pattern ('vendor/{vendor}' → 'vendor/:vendor')."""
    read_only: bool | None
    destructive: bool | None


def lint_mcp_tools(engine: PolicyEngine, tools: Sequence[McpToolFacts]) -> list[Finding]:
    """A warning per (tool, auto rule) where the tool may write or destroy (see the module)."""
    findings: list[Finding] = []
    for tool in tools:
        if tool.read_only is True:
            continue
        for rule in engine.document.rules:
            if rule.tier is not Tier.AUTO or rule.action != tool.action:
                continue
            if constant_value(rule.condition) is False:
                continue
            if not overlaps(rule.resource, tool.resource_pattern):
                continue
            if tool.destructive is True:
                check, what = "mcp-auto-destructive", "is marked destructive (destructiveHint)"
            elif tool.destructive is None:
                check, what = (
                    "mcp-auto-destructive",
                    "is not marked read-only, and MCP takes such a tool as destructive",
                )
            else:
                check, what = "mcp-auto-writes", "is not marked read-only (readOnlyHint)"
            findings.append(
                Finding(
                    severity="warning",
                    line=0,
                    check=check,
                    rule=rule.rule,
                    message=(
                        f"MCP tool {tool.name!r} {what}, yet rule {rule.rule!r} lets "
                        f"{rule.subject!r} run {tool.action!r} on {rule.resource!r} at the "
                        "auto tier; make the rule notify or approve, or narrow its condition"
                    ),
                )
            )
    return findings
