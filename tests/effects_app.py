"""Test workflows: one pays every month and continues as new between months; one calls a
tool whose target is down for a while."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ap.bank import Payment, PaymentTools
    from pydantic import BaseModel

    from tether.activities.tools import tool
    from tether.workflows.agent import AgentWorkflow


class RecurringPayInput(BaseModel):
    invoice: str
    months: int
    month: int = 1
    carry: bool = True
    """Continue with `AgentWorkflow.continue_as_new` (steps numbered on), else plainly."""


@workflow.defn(name="TestRecurringPay")
class RecurringPayWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"

    @workflow.run
    async def run(self, inp: RecurringPayInput) -> str:
        receipt = await self.act(
            "payments.pay",
            resource="vendor/acme-office",
            tool=PaymentTools.pay_vendor,
            args=Payment(vendor="acme-office", amount=100.0, invoice_id=inp.invoice),
            context={"amount": 100.0},
        )
        if inp.month < inp.months:
            following = inp.model_copy(update={"month": inp.month + 1})
            if inp.carry:
                await self.continue_as_new(following)
            workflow.continue_as_new(following)
        return receipt.receipt_id


class Touch(BaseModel):
    vendor: str


class Touched(BaseModel):
    vendor: str
    calls: int


class FlakyTools:
    """A tool whose target is unreachable for its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    @tool(action="bench.touch", resource="vendor/{vendor}", name="flaky_touch")
    async def flaky_touch(self, args: Touch) -> Touched:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError(f"{args.vendor} is down (call {self.calls})")
        return Touched(vendor=args.vendor, calls=self.calls)


@workflow.defn(name="TestFlakyTool")
class FlakyToolWorkflow(AgentWorkflow):
    agent = "agent:bench"

    @workflow.run
    async def run(self, inp: Touch) -> Touched:
        return await self.act(
            "bench.touch",
            resource=f"vendor/{inp.vendor}",
            tool=FlakyTools.flaky_touch,
            args=inp,
        )
