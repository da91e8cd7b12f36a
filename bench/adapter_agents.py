"""The agents of `python -m bench adapters`: one pydantic-ai agent governed by Tether, its
peer the same agent and tool on pydantic-ai's Temporal integration alone. Built once at
import (outside any workflow), as pydantic-ai requires; the workflows in
`bench.adapter_workflows` run them."""

from __future__ import annotations

from ap.bank import PaymentTools
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from tether.adapters.pydantic_ai import TetherGovernance, governed_toolset

TOOL_CALLS = 5
"""Tool calls per run: the model asks for `touch` this many times, one per request."""


def caller(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    done = sum(
        isinstance(p, ToolReturnPart)
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
    )
    if done < TOOL_CALLS:
        args = {"vendor": "acme", "new_account": str(done)}
        return ModelResponse(parts=[ToolCallPart("touch", args)])
    return ModelResponse(parts=[TextPart("done")])


async def touch(vendor: str, new_account: str) -> dict[str, object]:
    """The peer's no-op tool (what `PaymentTools.touch` does), a pydantic-ai activity."""
    return {"vendor": vendor, "changed": False}


governed = Agent(
    FunctionModel(caller, model_name="bench-caller"),
    name="bench_governed",
    toolsets=[governed_toolset(PaymentTools.touch)],
    capabilities=[TetherGovernance(), TemporalDurability()],
)
plain = Agent(
    FunctionModel(caller, model_name="bench-caller"),
    name="bench_plain",
    toolsets=[FunctionToolset([touch], id="bench_plain_tools")],
    capabilities=[TemporalDurability()],
)
