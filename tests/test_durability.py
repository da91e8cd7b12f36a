"""Durability: a worker killed mid-payment, a deadline that passes, replay of stored histories."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from ap.workflows import InvoiceInput, InvoiceResult
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.conftest import bank_of, new_id, payment_in_flight, spawn_worker, start_invoice
from tether.core.binaries import temporal_test_server
from tether.core.config import Settings
from tether.governance.approvals import ApprovalStatus
from tether.runtime.client import start_task
from tether.worker import Runtime, build_worker


async def test_worker_killed_mid_payment_pays_once(
    client: Client, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    # The bank settles slowly, so the payment row exists while the activity still runs.
    first = spawn_worker(settings, log, TETHER_BANK_SETTLE_SECONDS="30")
    try:
        handle = await start_invoice(client, settings, "INV-1001", prefix="crash")
        await payment_in_flight(runtime, "INV-1001", log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL

    second = spawn_worker(settings, log, TETHER_BANK_SETTLE_SECONDS="0")
    try:
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)
    assert result.status == "paid"
    assert bank_of(runtime).payments("INV-1001") == 1
    events = runtime.ledger.events(handle.id)
    kinds = [e.kind for e in events]
    assert kinds.count("decision") == 1
    assert kinds.count("tool.executed") == 1
    assert len({e.idempotency_key for e in events}) == len(events)
    assert runtime.ledger.verify().ok


async def test_approval_deadline_rejects_by_default(tmp_path: Path) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=pydantic_data_converter,
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tether.db'}", task_queue=new_id("skip")
    )
    runtime = Runtime.from_settings(settings)
    try:
        async with build_worker(env.client, settings, runtime):
            handle = await start_task(
                env.client,
                "PayInvoice",
                InvoiceInput(invoice_id="INV-1003", text="Invoice INV-1003"),
                workflow_id=new_id("deadline"),
                task_queue=settings.task_queue,
                started_by="user:bob",
                result_type=InvoiceResult,
            )
            result = await handle.result()  # the test server skips the 24 h deadline
    finally:
        await env.shutdown()
    assert result.status == "rejected"
    assert "expired" in result.message
    assert bank_of(runtime).payments("INV-1003") == 0
    (request,) = runtime.approvals.list(status=None)
    assert request.status is ApprovalStatus.EXPIRED
    decided = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.decided"]
    assert [(e.actor, e.outcome) for e in decided] == [("deadline", "expired")]
    assert runtime.ledger.verify().ok
