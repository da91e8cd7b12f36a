"""The accounts-payable clerk as a pydantic-ai agent, every tool call governed by Tether.

The agent is built here, once, on the worker (pydantic-ai's Temporal integration needs
its activities registered before a workflow runs); `ap.pyai_workflows` runs it. Its model
is a `FunctionModel` that reads the invoice as the scripted provider does
(`script.json`'s `extract` entries) and calls the same tools as the native
`PayInvoice`: change the bank details when the invoice asks, else pay. No network.
Swap it for any pydantic-ai model (`Agent("openai:...")`), or pass `gateway=True` to
`TetherGovernance` to send requests through Tether's gateway.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from ap.bank import PaymentTools
from tether.adapters.pydantic_ai import TetherGovernance, governed_toolset

SCRIPT = Path(__file__).resolve().parent.parent / "script.json"


@cache
def _extracts() -> list[tuple[str, dict[str, Any]]]:
    entries = json.loads(SCRIPT.read_text())["entries"]
    return [
        (e["match"], e["output"])
        for e in entries
        if e["task"] == "extract" and isinstance(e["output"], dict)
    ]


def read_invoice(text: str) -> dict[str, Any]:
    """The invoice's fields, as the scripted provider extracts them."""
    for match, fields in _extracts():
        if match in text:
            return dict(fields)
    raise ValueError(f"no invoice in the script matches {text[:60]!r}; add it to script.json")


def _returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [
        p
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    ]


def clerk_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Decide the next move from the conversation so far (deterministic)."""
    prompts = [
        p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    ]
    fields = read_invoice(prompts[0])
    payment = {
        "vendor": fields["vendor"],
        "amount": fields["amount"],
        "invoice_id": fields["invoice_id"],
        "currency": fields.get("currency", "USD"),
    }
    done = _returns(messages)
    if not done:
        if fields.get("new_bank_account"):
            change = {"vendor": fields["vendor"], "new_account": fields["new_bank_account"]}
            return ModelResponse(parts=[ToolCallPart("update_bank_details", change)])
        return ModelResponse(parts=[ToolCallPart("pay_vendor", payment)])
    last = done[-1]
    if isinstance(last.content, str):  # a denial or a rejection: stop, say why
        return ModelResponse(parts=[TextPart(f"not paid: {last.content}")])
    if last.tool_name == "update_bank_details":
        return ModelResponse(parts=[ToolCallPart("pay_vendor", payment)])
    return ModelResponse(parts=[TextPart(f"paid: {json.dumps(last.content)}")])


tools = governed_toolset(PaymentTools.pay_vendor, PaymentTools.update_bank_details)

clerk = Agent(
    FunctionModel(clerk_model, model_name="ap-clerk-function"),
    name="ap_clerk",
    toolsets=[tools],
    capabilities=[TetherGovernance(task="agent", sensitivity="confidential"), TemporalDurability()],
)
"""The clerk: pydantic-ai's model activity answers, Tether governs each tool call."""
