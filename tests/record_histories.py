"""Record the example workflows' histories into tests/histories/ (run on purpose, not in CI).

    python -m tests.record_histories

The replay test replays every stored history against today's code, so a change that
would break in-flight workflows fails the suite. Re-record only when a change is meant to
be incompatible — and then guard it with `workflow.patched()` instead where you can.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from ap.workflows import InvoiceInput, InvoiceResult
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tether.core.binaries import temporal_cli
from tether.core.config import Settings
from tether.governance.approvals import ApprovalStatus
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.client import start_task
from tether.worker import Runtime, build_worker
from tether.workflows import AgentLoopInput, AgentLoopResult

HERE = Path(__file__).resolve().parent / "histories"


async def _record(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    name: str,
    workflow: str,
    arg: BaseModel,
    result_type: type[BaseModel],
) -> None:
    handle = await start_task(
        client,
        workflow,
        arg,
        workflow_id=f"{name}-{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
        started_by="user:bob",
        result_type=result_type,
    )
    if name == "invoice-approve":
        while not (pending := runtime.approvals.list(ApprovalStatus.PENDING)):
            await asyncio.sleep(0.05)
        await decide_request(
            client,
            runtime.approvals,
            runtime.ledger,
            pending[0].request_id,
            approver="user:alice",
            approve=True,
            comment="recorded",
            key=signing_key(settings),
        )
    await handle.result()
    history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def main() -> None:
    HERE.mkdir(exist_ok=True)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter
    )
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(database_url=f"sqlite:///{tmp / 'rec.db'}", task_queue="record")
    runtime = Runtime.from_settings(settings)
    try:
        async with build_worker(env.client, settings, runtime):
            for name, invoice in (
                ("invoice-auto", "INV-1001"),
                ("invoice-notify", "INV-1002"),
                ("invoice-approve", "INV-1003"),
                ("invoice-deny", "INV-1004"),
            ):
                await _record(
                    env.client,
                    settings,
                    runtime,
                    name,
                    "PayInvoice",
                    InvoiceInput(invoice_id=invoice, text=f"Invoice {invoice}"),
                    InvoiceResult,
                )
            await _record(
                env.client,
                settings,
                runtime,
                "agent-loop",
                "AgentLoop",
                AgentLoopInput(
                    goal="Pay invoice INV-2001",
                    agent="agent:ap-clerk",
                    tools=["pay_vendor", "update_bank_details"],
                ),
                AgentLoopResult,
            )
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
