"""Test workflows for kill switches and budgets: one waits for a go signal, one asks once."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ap.bank import Payment, PaymentTools
    from pydantic import BaseModel

    from tether.workflows.agent import AgentWorkflow
    from tether.workflows.errors import ActionDenied


class Note(BaseModel):
    note: str


class GatedInput(BaseModel):
    invoice_id: str


class AskInput(BaseModel):
    agent: str
    prompt: str
    max_output_tokens: int = 100


@workflow.defn(name="KillTestGated")
class GatedWorkflow(AgentWorkflow):
    """Pays a small invoice once signalled `go`: a run that is in flight when a switch engages."""

    agent = "agent:ap-clerk"

    def __init__(self) -> None:
        super().__init__()
        self._go = False

    @workflow.signal(name="go")
    def go(self) -> None:
        self._go = True

    @workflow.query(name="waiting")
    def waiting(self) -> bool:
        return not self._go

    @workflow.run
    async def run(self, inp: GatedInput) -> str:
        await workflow.wait_condition(lambda: self._go)
        try:
            receipt = await self.act(
                "payments.pay",
                resource="vendor/acme-office",
                tool=PaymentTools.pay_vendor,
                args=Payment(vendor="acme-office", amount=10.0, invoice_id=inp.invoice_id),
                context={"amount": 10.0},
            )
        except ActionDenied as exc:
            return f"denied: {exc.rule}"
        return f"paid: {receipt.receipt_id}"


@workflow.defn(name="KillTestAsk")
class AskOnceWorkflow(AgentWorkflow):
    """One model call as `inp.agent`."""

    @workflow.run
    async def run(self, inp: AskInput) -> str:
        self._agent = inp.agent
        out = await self.ask(
            Note, task="note", prompt=inp.prompt, max_output_tokens=inp.max_output_tokens
        )
        return out.note
