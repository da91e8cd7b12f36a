"""Effects survive operator actions — `temporal workflow reset` (the CLI), continue-as-new —
and outages of a tool's target.

The idempotency key of a payment is derived from the workflow id, the run the execution
began with, the step, and tool and arguments — not the run id — so a reset run pays
under the original's key and the bank drops the repeat; the ledger links the reset
run's records to the original run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ap.workflows import InvoiceResult
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import bank_of, new_id, replayer_for, start_invoice
from tests.effects_app import (
    FlakyTools,
    FlakyToolWorkflow,
    RecurringPayInput,
    RecurringPayWorkflow,
    Touch,
    Touched,
)
from tether.core.binaries import temporal_cli, temporal_test_server
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.verification.events import LedgerEvent
from tether.worker import Runtime, build_worker


async def reset(client: Client, settings: Settings, workflow_id: str, run_id: str) -> str:
    """`temporal workflow reset` of `run_id` to its first workflow task; the new run id."""
    proc = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "workflow",
        "reset",
        "--address",
        settings.temporal_address,
        "--namespace",
        settings.namespace,
        "--workflow-id",
        workflow_id,
        "--run-id",
        run_id,
        "--type",
        "FirstWorkflowTask",
        "--reason",
        "operator retries the run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    for _ in range(200):
        latest = (await client.get_workflow_handle(workflow_id).describe()).run_id
        if latest and latest != run_id:
            return latest
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new run of {workflow_id} after the reset")


def _of(runtime: Runtime, workflow_id: str, kind: str, action: str = "") -> list[LedgerEvent]:
    return [
        e
        for e in runtime.ledger.events(workflow_id)
        if e.kind == kind and (not action or e.action == action)
    ]


async def test_a_reset_auto_tier_payment_run_pays_once_and_links_to_the_original(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await start_invoice(client, settings, "INV-1001", prefix="reset")
    first = await handle.result()
    assert first.status == "paid"
    original = handle.result_run_id
    assert original is not None

    runs = [original]
    for _ in range(2):  # a reset, then a reset of the reset run
        runs.append(await reset(client, settings, handle.id, runs[-1]))
        again: InvoiceResult = await client.get_workflow_handle(
            handle.id, run_id=runs[-1], result_type=InvoiceResult
        ).result()
        assert again.status == "paid" and again.receipt_id == first.receipt_id
    assert bank_of(runtime).payments("INV-1001") == 1

    decisions = _of(runtime, handle.id, "decision", "payments.pay")
    assert [d.run_id for d in decisions] == runs
    [key] = {str(d.payload["idempotency_key"]) for d in decisions}
    assert key.startswith(f"{handle.id}:{original}:") and not any(r in key for r in runs[1:])
    assert "original_run_id" not in decisions[0].payload
    assert [d.payload["original_run_id"] for d in decisions[1:]] == [original, original]
    executed = _of(runtime, handle.id, "tool.executed")
    assert [e.run_id for e in executed] == runs
    assert all(e.payload.get("original_run_id") == original for e in executed[1:])
    calls = _of(runtime, handle.id, "model.call")
    assert [c.payload.get("original_run_id") for c in calls] == [None, original, original]
    assert runtime.ledger.verify().ok
    # Every run's history replays against today's code.
    replayer = replayer_for()
    for run in runs:
        history = await client.get_workflow_handle(handle.id, run_id=run).fetch_history()
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, run


async def test_continued_runs_pay_anew_and_their_reset_pays_nothing_twice(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    async with build_worker(client, settings, runtime, extra_workflows=[RecurringPayWorkflow]):
        for carry in (True, False):
            invoice = f"SUB-{'carried' if carry else 'plain'}"
            handle = await start_task(
                client,
                "TestRecurringPay",
                RecurringPayInput(invoice=invoice, months=2, carry=carry),
                workflow_id=new_id("monthly"),
                task_queue=settings.task_queue,
                started_by="user:bob",
                result_type=str,
            )
            await handle.result()
            # Month two has its own payment: a continued run never reuses month one's key.
            assert bank_of(runtime).payments(invoice) == 2
            decisions = _of(runtime, handle.id, "decision", "payments.pay")
            assert len({d.payload["idempotency_key"] for d in decisions}) == 2
            assert [d.step for d in decisions] == ([1, 2] if carry else [1, 1])
            latest = (await client.get_workflow_handle(handle.id).describe()).run_id
            assert latest is not None
            rerun = await reset(client, settings, handle.id, latest)
            await client.get_workflow_handle(handle.id, run_id=rerun).result()
            assert bank_of(runtime).payments(invoice) == 2
            decisions = _of(runtime, handle.id, "decision", "payments.pay")
            assert decisions[-1].payload["original_run_id"] == latest
            assert (
                decisions[-1].payload["idempotency_key"] == decisions[-2].payload["idempotency_key"]
            )


async def test_a_tool_outage_is_waited_out_beyond_temporals_retries(tmp_path: Path) -> None:
    """The target is down for 14 calls: Temporal's 10 tries are spent, the run waits
    (`tool.waiting`, durable timers; the test server skips the time) and succeeds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=pydantic_data_converter,
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tether.db'}", task_queue=new_id("flaky")
    )
    runtime = Runtime.from_settings(settings)
    flaky = FlakyTools(failures=14)
    try:
        async with build_worker(
            env.client,
            settings,
            runtime,
            extra_workflows=[FlakyToolWorkflow],
            extra_tools=[flaky],
        ):
            handle = await start_task(
                env.client,
                "TestFlakyTool",
                Touch(vendor="acme-office"),
                workflow_id=new_id("flaky"),
                task_queue=settings.task_queue,
                started_by="user:bob",
                result_type=Touched,
            )
            touched = await handle.result()
    finally:
        await env.shutdown()
    assert touched == Touched(vendor="acme-office", calls=15)
    waits = _of(runtime, handle.id, "tool.waiting")
    assert [w.outcome for w in waits] == ["waiting", "resumed"]
    assert "is down" in str(waits[0].payload["reason"])
    assert waits[0].payload["what"] == "tool 'flaky_touch'"
    assert runtime.ledger.verify().ok
