"""`AdapterGoverned` and `AdapterPlain`: the same pydantic-ai agent run on Temporal, with
every tool call governed by Tether, and on pydantic-ai's Temporal integration alone."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.adapter_agents import governed, plain
    from tether.workflows.agent import AgentWorkflow


@workflow.defn(name="AdapterGoverned")
class AdapterGovernedWorkflow(AgentWorkflow):
    agent = "agent:bench"
    __pydantic_ai_agents__ = (governed,)

    @workflow.run
    async def run(self, prompt: str) -> str:
        return (await governed.run(prompt)).output


@workflow.defn(name="AdapterPlain")
class AdapterPlainWorkflow:
    __pydantic_ai_agents__ = (plain,)

    @workflow.run
    async def run(self, prompt: str) -> str:
        return (await plain.run(prompt)).output
