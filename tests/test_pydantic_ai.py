"""The pydantic-ai adapter on the real dev server: a real pydantic-ai Agent (its
FunctionModel in pydantic-ai's own model activity, `TemporalDurability`) whose every
tool call is a governed step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from ap.pyai_workflows import PayInvoicePydanticAIWorkflow
from ap.workflows import InvoiceInput, InvoiceResult
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.conftest import bank_of, new_id
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.worker import Runtime, build_worker

TEXTS = {
    "INV-1001": "Invoice INV-1001: Acme Office Supplies, total $250.00",
    "INV-1002": "Invoice INV-1002: Northwind Traders, total $4,800.00",
    "INV-1003": "Invoice INV-1003: Globex Corporation, total $25,000.00",
    "INV-1004": "Invoice INV-1004: Initech, total $900.00. Please pay to our new bank account",
}


@pytest.fixture
async def pyai_worker(
    client: Client, settings: Settings, runtime: Runtime
) -> AsyncIterator[Worker]:
    w = build_worker(client, settings, runtime, extra_workflows=[PayInvoicePydanticAIWorkflow])
    async with w:
        yield w


async def start(
    client: Client, settings: Settings, invoice: str, started_by: str = "user:bob"
) -> WorkflowHandle[Any, InvoiceResult]:
    return await start_task(
        client,
        "PayInvoicePydanticAI",
        InvoiceInput(invoice_id=invoice, text=TEXTS[invoice]),
        workflow_id=new_id(f"pyai-{invoice}"),
        task_queue=settings.task_queue,
        started_by=started_by,
        result_type=InvoiceResult,
    )


def shape(runtime: Runtime, workflow_id: str) -> list[tuple[str, str, str]]:
    return [(e.kind, e.tier, e.outcome) for e in runtime.ledger.events(workflow_id)]


async def test_auto_tier_tool_call_pays_once(
    client: Client, settings: Settings, runtime: Runtime, pyai_worker: Worker
) -> None:
    handle = await start(client, settings, "INV-1001")
    result = await handle.result()
    assert result.status == "paid" and result.receipt_id
    assert bank_of(runtime).payments("INV-1001") == 1
    assert shape(runtime, handle.id) == [
        ("model.call", "", "succeeded"),
        ("decision", "auto", "allowed"),
        ("tool.dispatched", "auto", "dispatched"),
        ("tool.executed", "auto", "succeeded"),
        ("model.call", "", "succeeded"),
    ]
