"""What a long `AgentLoop` carries into its next run when it continues as new.

A run continues as new after `continue_every_turns` turns, or once its history holds
`continue_at_history_events` events, or when Temporal suggests it: each run's history
stays bounded however many turns the agent takes. The next run gets an `AgentCarry`: the
turns so far, the usage (budgets keep counting), what influenced the last steps, the MCP
tool declarations (not listed again), a summary of the conversation and its last lines.
The step count rides in the memo (`AgentWorkflow.continue_as_new`), so step numbers and
idempotency keys go on. The hand-over is the ledger event `run.continued` (on the old
run, carrying the summary's digest and the next run's first turn). Deterministic.

Transcript lines keep at most `LINE_LIMIT` characters of a tool's result: the rest is in
the ledger's content store under the digest the line names (prompts stay small, and so
does history).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, JsonValue

from tether.mcp.payloads import McpCatalog
from tether.verification.events import digest
from tether.workflows.agent import Usage

CONTINUE_PATCH = "agent-loop-continue-as-new"
LINE_LIMIT = 2_000
DEFAULT_HISTORY_EVENTS = 10_000
"""Temporal warns at 10,240 events and stops a run at 51,200."""


class AgentCarry(BaseModel):
    """The state one run of `AgentLoop` hands to the next."""

    turn: int
    """Turns taken so far, over every run."""
    runs: int = 1
    """Runs so far, this hand-over's included."""
    usage: Usage = Field(default_factory=Usage)
    inputs: list[str] = Field(default_factory=list)
    """The last inputs (model call ids, tool result digests) the next step may cite."""
    tally: dict[str, int] = Field(default_factory=dict)
    """Tool calls so far by outcome, e.g. {'pay_vendor ok': 3, 'pay_vendor denied': 1}."""
    summary: str = ""
    recent: list[str] = Field(default_factory=list)
    mcp: McpCatalog | None = None


def clip(line: str, full: JsonValue) -> str:
    """`line` cut at `LINE_LIMIT`, naming the digest of `full` in the content store."""
    if len(line) <= LINE_LIMIT:
        return line
    return f"{line[:LINE_LIMIT]}… (cut; whole result {digest(full)})"


def summarize(turn: int, tally: dict[str, int], recent: list[str]) -> str:
    """A deterministic summary of the conversation up to `turn`."""
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())) or "no tool calls"
    last = recent[-1][:300] if recent else "nothing yet"
    return f"after {turn} turns; tool calls so far ({counts}); last: {last}"
