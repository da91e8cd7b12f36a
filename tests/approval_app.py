"""A test application for approvals: pay an amount, optionally changing it mid-approval."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ap.bank import Payment, PaymentTools
    from pydantic import BaseModel

    from tether.activities.payloads import ToolCall
    from tether.workflows.agent import AgentWorkflow
    from tether.workflows.errors import ActionDenied, ActionHalted, ActionRejected


class PayAmountInput(BaseModel):
    amount: float
    vendor: str = "globex"
    change_to: float = 0.0
    """When set, the payment's amount is changed while its approval request waits."""
    linger: bool = False
    """When set, the run stays open after the payment until it is signalled `finish`."""


class PayAmountResult(BaseModel):
    status: str
    receipt_id: str = ""
    message: str = ""


@workflow.defn(name="PayAmountTest")
class PayAmountWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"
    _finish = False

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self._finish = True

    @workflow.run
    async def run(self, inp: PayAmountInput) -> PayAmountResult:
        payment = Payment(vendor=inp.vendor, amount=inp.amount, invoice_id="INV-T")
        act = asyncio.ensure_future(
            self.act(
                "payments.pay",
                resource=f"vendor/{inp.vendor}",
                tool=PaymentTools.pay_vendor,
                args=payment,
                context={"amount": inp.amount},
            )
        )
        if inp.change_to:
            await workflow.wait_condition(lambda: self._pending is not None or act.done())
            payment.amount = inp.change_to
        try:
            receipt = await act
        except ActionHalted as exc:
            return PayAmountResult(status="halted", message=exc.message)
        except ActionRejected as exc:
            return PayAmountResult(status="rejected", message=exc.message)
        except ActionDenied as exc:
            return PayAmountResult(status="denied", message=exc.message)
        if inp.linger:
            await workflow.wait_condition(lambda: self._finish)
        return PayAmountResult(status="paid", receipt_id=receipt.receipt_id)


@workflow.defn(name="ToolProbe")
class ToolProbeWorkflow:
    """Calls a tool activity directly, skipping act(): what a hostile workflow would do."""

    @workflow.run
    async def run(self, call: ToolCall) -> None:
        await workflow.execute_activity(
            f"tool.{call.tool}",
            call,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
