"""Adapters: Tether governing agents written with other frameworks.

- `tether.adapters.pydantic_ai` (extra `tether[pydantic-ai]`): a pydantic-ai `Agent` run
  durably inside an `AgentWorkflow`, every tool call a governed step.

Each adapter module imports its framework at import time, so import it only where the
extra is installed. `worker_plugins` (used by `build_worker` and the replayer) imports an
adapter only when a workflow asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.plugin import SimplePlugin

PYDANTIC_AI_AGENTS = "__pydantic_ai_agents__"
"""The class attribute pydantic-ai's Temporal plugin reads: the agents a workflow runs."""


def worker_plugins(workflows: Sequence[type]) -> list[SimplePlugin]:
    """The frameworks' own Temporal plugins the given workflows need (sandbox
    passthrough, their agents' activities): pydantic-ai's when a workflow declares
    `__pydantic_ai_agents__`."""
    if not any(getattr(cls, PYDANTIC_AI_AGENTS, None) for cls in workflows):
        return []
    from pydantic_ai.durable_exec.temporal import PydanticAIPlugin

    return [PydanticAIPlugin()]


__all__ = ["PYDANTIC_AI_AGENTS", "worker_plugins"]
