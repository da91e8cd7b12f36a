"""A test application: a wire transfer through a bank that honours no idempotency key."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from tether.activities.tools import tool
    from tether.workflows.agent import AgentWorkflow


class Transfer(BaseModel):
    account: str
    amount: float


class TransferDone(BaseModel):
    reference: str


class WireTools:
    """A bank without idempotency keys: its transfer must never be retried blindly."""

    @tool(
        action="payments.pay",
        resource="vendor/{account}",
        side_effect=True,
        timeout=timedelta(seconds=2),
    )
    async def wire(self, args: Transfer) -> TransferDone:
        await asyncio.sleep(30)  # the bank never answers in time
        return TransferDone(reference="never")


@workflow.defn(name="WireTest")
class WireWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"

    @workflow.run
    async def run(self, account: str) -> str:
        done = await self.act(
            "payments.pay",
            resource=f"vendor/{account}",
            tool=WireTools.wire,
            args=Transfer(account=account, amount=100.0),
            context={"amount": 100.0},
        )
        return done.reference
