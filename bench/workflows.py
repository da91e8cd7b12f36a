"""`GovernedSteps`: three tool steps, governed or not — the benchmark's subject and peer.

The governed variant decides, executes and records each step; the ungoverned variant runs
the same three tool activities with a plain activity call. Same worker, same tool.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ap.bank import BankChange, PaymentTools
    from pydantic import BaseModel

    from tether.workflows.agent import AgentWorkflow


class StepsInput(BaseModel):
    vendor: str = "acme"
    steps: int = 3


@workflow.defn(name="GovernedSteps")
class GovernedStepsWorkflow(AgentWorkflow):
    agent = "agent:bench"

    @workflow.run
    async def run(self, inp: StepsInput) -> int:
        for i in range(inp.steps):
            await self.act(PaymentTools.touch, BankChange(vendor=inp.vendor, new_account=str(i)))
        return inp.steps


@workflow.defn(name="UngovernedSteps")
class UngovernedStepsWorkflow(GovernedStepsWorkflow):
    governed = False

    @workflow.run
    async def run(self, inp: StepsInput) -> int:
        return await super().run(inp)
