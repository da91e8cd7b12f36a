"""`AgentLoop`: a model-driven agent. The model picks tools; every tool call is governed.

Each turn asks the model for an `AgentTurn` (structured output): call one tool with
arguments, or answer. A tool call goes through `act` like any scripted step, so policy,
approvals and the ledger apply. Unknown tools and invalid arguments are never executed:
the model is told and tries again. Denials and rejections (with the approver's reason)
are fed back to the model. The loop ends when the model answers or a budget (steps,
tokens, cost) is spent. Deterministic.
"""

from __future__ import annotations

from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field, JsonValue, ValidationError

    from tether.activities.tools import REGISTRY
    from tether.workflows.agent import AgentWorkflow, Budget, Usage
    from tether.workflows.errors import ActionDenied, ActionRejected, BudgetExceeded


class AgentLoopInput(BaseModel):
    goal: str
    agent: str
    tools: list[str]
    budget: Budget = Field(default_factory=lambda: Budget(max_steps=20))


class AgentTurn(BaseModel):
    kind: Literal["tool", "answer"]
    tool: str = ""
    args: dict[str, JsonValue] = Field(default_factory=dict)
    answer: str = ""


class AgentLoopResult(BaseModel):
    status: Literal["answered", "budget_exhausted"]
    answer: str = ""
    transcript: list[str] = Field(default_factory=list)
    usage: Usage


@workflow.defn(name="AgentLoop")
class AgentLoopWorkflow(AgentWorkflow):
    @workflow.run
    async def run(self, inp: AgentLoopInput) -> AgentLoopResult:
        self._agent = inp.agent
        self._budget = inp.budget
        transcript = [f"goal: {inp.goal}", f"tools: {', '.join(inp.tools)}"]
        try:
            while True:
                prompt = "\n".join([*transcript, f"[turn {len(transcript) - 1}]"])
                turn = await self.ask(AgentTurn, task="agent", prompt=prompt)
                if turn.kind == "answer":
                    return AgentLoopResult(
                        status="answered",
                        answer=turn.answer,
                        transcript=transcript,
                        usage=self._usage,
                    )
                transcript.append(await self._call(turn, inp.tools))
        except BudgetExceeded as exc:
            transcript.append(f"stopped: {exc.message}")
            return AgentLoopResult(
                status="budget_exhausted", transcript=transcript, usage=self._usage
            )

    async def _call(self, turn: AgentTurn, allowed: list[str]) -> str:
        spec = REGISTRY.get(turn.tool)
        if spec is None or turn.tool not in allowed:
            return f"tool {turn.tool!r} is not available; choose one of {', '.join(allowed)}"
        try:
            args = spec.args_type.model_validate(turn.args)
        except ValidationError as exc:
            return f"arguments for {turn.tool!r} are invalid: {exc.errors()[0]['msg']}"
        try:
            # The tool's declaration and the arguments give action, resource and context.
            result = await self.act(_ByName(spec.name), args)
        except ActionDenied as exc:
            return f"{turn.tool} denied by policy: {exc.message}"
        except ActionRejected as exc:
            return f"{turn.tool} rejected: {exc.reason or exc.message}"
        return f"{turn.tool} -> {result.model_dump_json()}"


class _ByName:
    """Stands in for a tool function when the loop has only the tool's name."""

    def __init__(self, name: str) -> None:
        self.__tether_tool__ = REGISTRY[name]

    async def __call__(self, args: BaseModel) -> BaseModel:  # never called in a workflow
        raise NotImplementedError
