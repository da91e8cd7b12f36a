"""`PayInvoicePydanticAI`: the accounts-payable scenario with a pydantic-ai agent.

The same invoices, tools, policy and tiers as `PayInvoice`; the model (`ap.pyai_agent`)
chooses the tool calls and Tether governs each one through `act()`. The result is read
from the tools' answers: a receipt is `paid`, a denial `denied`, a rejection `rejected`.
Deterministic.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart

    from ap.bank import Receipt
    from ap.pyai_agent import clerk
    from ap.workflows import InvoiceInput, InvoiceResult
    from tether import ActionHalted, AgentWorkflow


def outcome(inp: InvoiceInput, messages: list[ModelMessage], answer: str) -> InvoiceResult:
    """What the agent's tool calls came to, by their answers."""
    result = InvoiceResult(
        invoice_id=inp.invoice_id, vendor="", amount=0.0, status="denied", message=answer
    )
    for message in messages:
        if not isinstance(message, ModelRequest):
            for call in message.tool_calls:  # who and how much the agent meant to pay
                args = call.args_as_dict()
                update: dict[str, Any] = {k: args[k] for k in ("vendor", "amount") if k in args}
                result = result.model_copy(update=update)
            continue
        for part in message.parts:
            if not isinstance(part, ToolReturnPart):
                continue
            content = part.content
            if isinstance(content, str):
                status = "rejected" if " rejected: " in content else "denied"
                result = result.model_copy(update={"status": status, "message": content})
            elif part.tool_name == "pay_vendor" and isinstance(content, dict):
                receipt = Receipt.model_validate(content)
                result = result.model_copy(
                    update={
                        "status": "paid",
                        "receipt_id": receipt.receipt_id,
                        "vendor": receipt.vendor,
                        "amount": receipt.amount,
                    }
                )
    return result


@workflow.defn(name="PayInvoicePydanticAI")
class PayInvoicePydanticAIWorkflow(AgentWorkflow):
    agent = "agent:ap-clerk"
    __pydantic_ai_agents__ = (clerk,)

    @workflow.run
    async def run(self, inp: InvoiceInput) -> InvoiceResult:
        try:
            run = await clerk.run(inp.text)
        except ActionHalted as exc:  # a kill switch, not a person, stopped the payment
            return InvoiceResult(
                invoice_id=inp.invoice_id,
                vendor="",
                amount=0.0,
                status="halted",
                message=exc.message,
            )
        return outcome(inp, run.all_messages(), run.output)
