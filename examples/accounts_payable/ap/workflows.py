"""`PayInvoice`: the accounts-payable agent of the demo.

Extract the invoice's fields with a model (confidential data), refuse — through policy —
any bank-detail change the invoice asks for, and pay the vendor under the tier policy
gives the amount. Deterministic; every step governed and recorded.
"""

from __future__ import annotations

from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from ap.bank import BankChange, Payment, PaymentTools
    from tether import ActionDenied, ActionHalted, ActionRejected, AgentWorkflow


class InvoiceInput(BaseModel):
    invoice_id: str
    text: str


class InvoiceFields(BaseModel):
    invoice_id: str
    vendor: str
    amount: float
    currency: str = "USD"
    new_bank_account: str | None = None
    """Set when the invoice asks to change the vendor's bank details."""


class InvoiceResult(BaseModel):
    invoice_id: str
    vendor: str
    amount: float
    status: Literal["paid", "denied", "rejected", "halted"]
    receipt_id: str | None = None
    message: str = ""


@workflow.defn(name="PayInvoice")
class PayInvoiceWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"

    @workflow.run
    async def run(self, inp: InvoiceInput) -> InvoiceResult:
        fields = await self.ask(
            InvoiceFields,
            task="extract",
            prompt=f"Extract the invoice fields as JSON.\n\n{inp.text}",
            sensitivity="confidential",
        )
        result = InvoiceResult(
            invoice_id=fields.invoice_id, vendor=fields.vendor, amount=fields.amount, status="paid"
        )
        try:
            # The tool's declaration and the arguments give the action, the resource and
            # the policy context (here the amount): nothing to restate, nothing to get wrong.
            if fields.new_bank_account:
                await self.act(
                    PaymentTools.update_bank_details,
                    BankChange(vendor=fields.vendor, new_account=fields.new_bank_account),
                )
            payment = Payment(
                vendor=fields.vendor,
                amount=fields.amount,
                invoice_id=fields.invoice_id,
                currency=fields.currency,
            )
            receipt = await self.act(PaymentTools.pay_vendor, payment)
        except ActionDenied as exc:
            return result.model_copy(update={"status": "denied", "message": exc.message})
        except ActionHalted as exc:  # a kill switch, not a person, stopped the payment
            return result.model_copy(update={"status": "halted", "message": exc.message})
        except ActionRejected as exc:
            return result.model_copy(update={"status": "rejected", "message": exc.message})
        return result.model_copy(update={"receipt_id": receipt.receipt_id})
