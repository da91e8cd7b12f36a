"""`AgentLoop`: a model-driven agent. The model picks tools; every tool call is governed.

Each turn asks the model for an `AgentTurn` (structured output): call one tool with
arguments, or answer. A tool call goes through `act` like any scripted step, so policy,
approvals and the ledger apply. The tools offered are the named `@tool`s and, with
`mcp_servers`, every tool those MCP servers offer (`tether.mcp`: listed once, by the
`list_mcp_tools` activity, and called with `call_mcp_tool`, governed the same way).
Unknown tools and invalid arguments are never executed: the model is told and tries
again. Denials and rejections (with the approver's reason) are fed back to the model.
The loop ends when the model answers or a budget (steps, tokens, cost) is spent.

Long runs continue as new (`workflows.agent_carry`, since the
`agent-loop-continue-as-new` patch): every `continue_every_turns` turns, at
`continue_at_history_events` history events, or when Temporal suggests it, carrying
budget, usage, MCP tools and a summary; the ledger records `run.continued`.
Deterministic.
"""

from __future__ import annotations

from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, Field, JsonValue, ValidationError

    from tether.activities.governance import GovernanceActivities
    from tether.activities.tools import REGISTRY
    from tether.mcp.payloads import McpCatalog
    from tether.mcp.steps import call_mcp_tool, list_mcp_tools
    from tether.mcp.templates import McpArgumentsInvalid
    from tether.verification.events import LedgerEvent, canonical_json, digest
    from tether.workflows.agent import LOCAL, AgentWorkflow, Budget, Usage
    from tether.workflows.errors import ActionDenied, ActionRejected, BudgetExceeded

# Not passed through: it holds the workflow's own `Usage` (the sandbox imports it anew).
from tether.workflows.agent_carry import (
    CONTINUE_PATCH,
    DEFAULT_HISTORY_EVENTS,
    AgentCarry,
    clip,
    summarize,
)


class AgentLoopInput(BaseModel):
    goal: str
    agent: str
    tools: list[str]
    budget: Budget = Field(default_factory=lambda: Budget(max_steps=20))
    mcp_servers: list[str] = Field(default_factory=list)
    """MCP servers (`[mcp.servers.<name>]`) whose tools are offered beside `tools`."""
    continue_every_turns: int = 0
    """Continue as new after this many turns of one run; 0: only by history size."""
    continue_at_history_events: int = DEFAULT_HISTORY_EVENTS
    """Continue as new once the run's history has this many events; 0: never."""
    keep_lines: int = 8
    """Transcript lines carried into the next run beside the summary."""
    carried: AgentCarry | None = None
    """Set by the run this one continues (never by a caller)."""


class AgentTurn(BaseModel):
    kind: Literal["tool", "answer"]
    tool: str = ""
    args: dict[str, JsonValue] = Field(default_factory=dict)
    answer: str = ""


class AgentLoopResult(BaseModel):
    status: Literal["answered", "budget_exhausted"]
    answer: str = ""
    transcript: list[str] = Field(default_factory=list)
    """This run's transcript (after a continuation: the summary and carried lines first)."""
    usage: Usage
    turns: int = 0
    runs: int = 1


@workflow.defn(name="AgentLoop")
class AgentLoopWorkflow(AgentWorkflow):
    @workflow.run
    async def run(self, inp: AgentLoopInput) -> AgentLoopResult:
        self._agent = inp.agent
        self._budget = inp.budget
        carry = inp.carried
        self._mcp = McpCatalog()
        if carry is not None and carry.mcp is not None:
            self._mcp = carry.mcp
        elif inp.mcp_servers:
            self._mcp = await list_mcp_tools(inp.mcp_servers)
        offered = [*inp.tools, *(t.name for t in self._mcp.tools)]
        transcript = [f"goal: {inp.goal}", f"tools: {', '.join(offered)}"]
        transcript += [
            f"tool {t.name}: {t.description} arguments {canonical_json(t.input_schema)}"
            for t in self._mcp.tools
        ]
        turn, tally, runs = 0, dict[str, int](), 1
        if carry is not None:
            self._usage = carry.usage.model_copy()
            self._inputs = list(carry.inputs)
            turn, tally, runs = carry.turn, dict(carry.tally), carry.runs + 1
            transcript += [f"summary: {carry.summary}", *carry.recent]
        first = turn
        try:
            while True:
                reason = self._continue_due(inp, turn - first)
                if reason:
                    await self._hand_over(inp, transcript, turn, tally, runs, reason)
                turn += 1
                prompt = "\n".join([*transcript, f"[turn {turn}]"])
                step = await self.ask(AgentTurn, task="agent", prompt=prompt)
                if step.kind == "answer":
                    return AgentLoopResult(
                        status="answered",
                        answer=step.answer,
                        transcript=transcript,
                        usage=self._usage,
                        turns=turn,
                        runs=runs,
                    )
                line, outcome = await self._call(step, offered)
                tally[outcome] = tally.get(outcome, 0) + 1
                transcript.append(line)
        except BudgetExceeded as exc:
            transcript.append(f"stopped: {exc.message}")
            return AgentLoopResult(
                status="budget_exhausted",
                transcript=transcript,
                usage=self._usage,
                turns=turn,
                runs=runs,
            )

    def _continue_due(self, inp: AgentLoopInput, turns: int) -> str:
        """Why this run should hand over now ('' when it should not)."""
        info = workflow.info()
        if inp.continue_every_turns and turns >= inp.continue_every_turns:
            reason = "turns"
        elif (
            inp.continue_at_history_events
            and info.get_current_history_length() >= inp.continue_at_history_events
        ):
            reason = "history"
        elif info.is_continue_as_new_suggested():
            reason = "suggested"
        else:
            return ""
        return reason if workflow.patched(CONTINUE_PATCH) else ""

    async def _hand_over(
        self,
        inp: AgentLoopInput,
        transcript: list[str],
        turn: int,
        tally: dict[str, int],
        runs: int,
        reason: str,
    ) -> None:
        recent = transcript[-inp.keep_lines :] if inp.keep_lines else []
        summary = summarize(turn, tally, recent)
        carry = AgentCarry(
            turn=turn,
            runs=runs,
            usage=self._usage,
            inputs=self._inputs[-8:],
            tally=tally,
            summary=summary,
            recent=recent,
            mcp=self._mcp if self._mcp.tools else None,
        )
        info = workflow.info()
        await workflow.execute_local_activity_method(
            GovernanceActivities.record_event,
            LedgerEvent(
                idempotency_key=f"{info.workflow_id}:{info.run_id}:run.continued",
                kind="run.continued",
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                step=self._step,
                agent=self._agent,
                actor=self._agent,
                outcome="continued",
                payload={
                    "reason": reason,
                    "turns": turn,
                    "runs": runs,
                    "steps": self._step,
                    "history_events": info.get_current_history_length(),
                    "summary": summary,
                    "summary_digest": digest(summary),
                    "usage": self._usage.model_dump(mode="json"),
                },
            ),
            start_to_close_timeout=LOCAL,
        )
        await self.continue_as_new(inp.model_copy(update={"carried": carry}))

    async def _call(self, turn: AgentTurn, allowed: list[str]) -> tuple[str, str]:
        """The transcript line of one tool call, and its outcome for the tally."""
        if turn.tool not in allowed:
            message = f"tool {turn.tool!r} is not available; choose one of {', '.join(allowed)}"
            return message, "unavailable"
        decl = self._mcp.get(turn.tool)
        try:
            if decl is not None:
                try:
                    result: BaseModel = await call_mcp_tool(self, decl, turn.args)
                except McpArgumentsInvalid as exc:
                    return f"arguments for {turn.tool!r} are invalid: {exc.message}", "invalid"
            else:
                spec = REGISTRY.get(turn.tool)
                if spec is None:
                    message = f"tool {turn.tool!r} is not available; choose one of "
                    return message + ", ".join(allowed), "unavailable"
                try:
                    args = spec.args_type.model_validate(turn.args)
                except ValidationError as exc:
                    error = exc.errors()[0]["msg"]
                    return f"arguments for {turn.tool!r} are invalid: {error}", "invalid"
                # The tool's declaration and the arguments give action, resource and context.
                result = await self.act(_ByName(spec.name), args)
        except ActionDenied as exc:
            return f"{turn.tool} denied by policy: {exc.message}", f"{turn.tool} denied"
        except ActionRejected as exc:
            return f"{turn.tool} rejected: {exc.reason or exc.message}", f"{turn.tool} rejected"
        output: JsonValue = result.model_dump(mode="json")
        return clip(f"{turn.tool} -> {result.model_dump_json()}", output), f"{turn.tool} ok"


class _ByName:
    """Stands in for a tool function when the loop has only the tool's name."""

    def __init__(self, name: str) -> None:
        self.__tether_tool__ = REGISTRY[name]

    async def __call__(self, args: BaseModel) -> BaseModel:  # never called in a workflow
        raise NotImplementedError
