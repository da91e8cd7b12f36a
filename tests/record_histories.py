"""Record the example workflows' histories into tests/histories/ (run on purpose, not in CI).

    python -m tests.record_histories            # the example's runs (old code's histories)
    python -m tests.record_histories outages    # a run that waited out an outage; a reset run
    python -m tests.record_histories edits      # a payment approved with an edited amount
    python -m tests.record_histories pydantic-ai  # the pydantic-ai clerk: approve, deny

The replay test replays every stored history against today's code, so a change that
would break in-flight workflows fails the suite. Re-record only when a change is meant to
be incompatible — and then guard it with `workflow.patched()` instead where you can.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
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


async def outages() -> None:
    """`invoice-outage`: both model endpoints down a while, the run waits and pays;
    `invoice-reset`: an auto-tier payment run reset by `temporal workflow reset`."""
    from tests.model_server import ModelServer
    from tests.outage_kit import invoice_answers, private_endpoints
    from tether.activities.gateway import Gateway
    from tether.core.gateway_config import ModelsConfig

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter
    )
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(database_url=f"sqlite:///{tmp / 'rec.db'}", task_queue="record")
    runtime = Runtime.from_settings(settings)
    try:
        async with ModelServer() as server:
            [invoice] = invoice_answers(server, "INV-OUT", 1)
            config = {"endpoints": private_endpoints(server, "a"), "breaker_reset_seconds": 1}
            gateway = Gateway(ModelsConfig.model_validate(config))
            async with build_worker(env.client, settings, runtime, model_provider=gateway):
                server.outage("a")
                handle = await start_task(
                    env.client,
                    "PayInvoice",
                    InvoiceInput(invoice_id=invoice, text=f"Invoice {invoice}"),
                    workflow_id=f"invoice-outage-{uuid.uuid4().hex[:6]}",
                    task_queue=settings.task_queue,
                    started_by="user:bob",
                    result_type=InvoiceResult,
                )
                await asyncio.sleep(8)
                server.restore("a")
                await handle.result()
                history = await handle.fetch_history()
                (HERE / "invoice-outage.json").write_text(history.to_json())
            await gateway.aclose()
        async with build_worker(env.client, settings, runtime):
            handle = await start_task(
                env.client,
                "PayInvoice",
                InvoiceInput(invoice_id="INV-1001", text="Invoice INV-1001"),
                workflow_id=f"invoice-reset-{uuid.uuid4().hex[:6]}",
                task_queue=settings.task_queue,
                started_by="user:bob",
                result_type=InvoiceResult,
            )
            await handle.result()
            address = env.client.service_client.config.target_host
            await asyncio.to_thread(
                subprocess.run,
                [temporal_cli(), "workflow", "reset", "--address", address, "-w", handle.id,
                 "-r", str(handle.result_run_id), "--type", "FirstWorkflowTask",
                 "--reason", "recorded"],
                check=True,
            )  # fmt: skip
            latest = env.client.get_workflow_handle(handle.id, result_type=InvoiceResult)
            for _ in range(100):
                if (await latest.describe()).run_id != handle.result_run_id:
                    break
                await asyncio.sleep(0.05)
            await latest.result()
            (HERE / "invoice-reset.json").write_text((await latest.fetch_history()).to_json())
    finally:
        await env.shutdown()
    print("recorded invoice-outage, invoice-reset")


async def edits() -> None:
    """`invoice-approve-edited`: an approver lowers the amount; the edit is decided anew
    (same rule) and the edited amount is paid (the `approval-edits` patch)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter
    )
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(database_url=f"sqlite:///{tmp / 'rec.db'}", task_queue="record")
    runtime = Runtime.from_settings(settings)
    try:
        async with build_worker(env.client, settings, runtime):
            handle = await start_task(
                env.client,
                "PayInvoice",
                InvoiceInput(invoice_id="INV-1003", text="Invoice INV-1003"),
                # The replay test names a history's workflow by its file: the request id
                # (a digest of workflow, run and step) must come out the same there.
                workflow_id="invoice-approve-edited",
                task_queue=settings.task_queue,
                started_by="user:bob",
                result_type=InvoiceResult,
            )
            while not (pending := runtime.approvals.list(ApprovalStatus.PENDING)):
                await asyncio.sleep(0.05)
            await decide_request(
                env.client,
                runtime.approvals,
                runtime.ledger,
                pending[0].request_id,
                approver="user:alice",
                approve=True,
                comment="credit note applied",
                key=signing_key(settings),
                edits={"amount": 24000.0},
            )
            await handle.result()
            history = await handle.fetch_history()
            (HERE / "invoice-approve-edited.json").write_text(history.to_json())
    finally:
        await env.shutdown()
    print("recorded invoice-approve-edited")


async def pydantic_ai() -> None:
    """`pydantic-ai-approve`, `pydantic-ai-deny`: the accounts-payable clerk written as a
    pydantic-ai agent (`ap.pyai_workflows`), a $25,000 payment approved by alice and a bank
    change denied. Workflow ids are the file names (the replay test names them so)."""
    from ap.pyai_workflows import PayInvoicePydanticAIWorkflow

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), data_converter=pydantic_data_converter
    )
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(database_url=f"sqlite:///{tmp / 'rec.db'}", task_queue="record")
    runtime = Runtime.from_settings(settings)
    workflows = [PayInvoicePydanticAIWorkflow]
    try:
        async with build_worker(env.client, settings, runtime, extra_workflows=workflows):
            for name, invoice, text in (
                ("pydantic-ai-approve", "INV-1003", "Invoice INV-1003: Globex, $25,000.00"),
                ("pydantic-ai-deny", "INV-1004", "Invoice INV-1004: Initech, new bank account"),
            ):
                handle = await start_task(
                    env.client,
                    "PayInvoicePydanticAI",
                    InvoiceInput(invoice_id=invoice, text=text),
                    workflow_id=name,
                    task_queue=settings.task_queue,
                    started_by="user:bob",
                    result_type=InvoiceResult,
                )
                if invoice == "INV-1003":
                    while not (pending := runtime.approvals.list(ApprovalStatus.PENDING)):
                        await asyncio.sleep(0.05)
                    await decide_request(
                        env.client,
                        runtime.approvals,
                        runtime.ledger,
                        pending[0].request_id,
                        approver="user:alice",
                        approve=True,
                        comment="recorded",
                        key=signing_key(settings),
                    )
                await handle.result()
                (HERE / f"{name}.json").write_text((await handle.fetch_history()).to_json())
                print(f"recorded {name}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    modes = {"outages": outages, "edits": edits, "pydantic-ai": pydantic_ai}
    asyncio.run(modes[sys.argv[1]]() if sys.argv[1:] else main())
