"""The model-driven agent loop and validated model output, on the real dev server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ap.workflows import InvoiceInput, InvoiceResult
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.conftest import ROOT, bank_of, new_id
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.worker import Runtime
from tether.workflows import AgentLoopInput, AgentLoopResult, Budget


async def _loop(client: Client, settings: Settings, budget: Budget) -> AgentLoopResult:
    handle = await start_task(
        client,
        "AgentLoop",
        AgentLoopInput(
            goal="Pay invoice INV-2001 from acme-office",
            agent="agent:ap-clerk",
            tools=["pay_vendor", "update_bank_details"],
            budget=budget,
        ),
        workflow_id=new_id("loop"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=AgentLoopResult,
    )
    return await handle.result()


async def test_agent_loop_governs_every_tool_call(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    result = await _loop(client, settings, Budget(max_steps=20))
    assert result.status == "answered"
    assert result.answer.startswith("Paid INV-2001")
    # turn 1 paid (auto), turn 2 was denied by policy, turn 3 named a tool it may not use
    assert any(line.startswith("pay_vendor -> ") for line in result.transcript)
    assert any(
        "denied by policy" in line and "ap-no-bank-changes" in line for line in result.transcript
    )
    assert any("'delete_everything' is not available" in line for line in result.transcript)
    assert bank_of(runtime).payments("INV-2001") == 1
    decisions = [
        (e.action, e.tier, e.rule)
        for e in runtime.ledger.events()
        if e.kind == "decision" and e.agent == "agent:ap-clerk"
    ]
    assert decisions == [
        ("payments.pay", "auto", "ap-pay-small"),
        ("vendors.update_bank_details", "deny", "ap-no-bank-changes"),
    ]
    assert result.usage.model_calls == 4 and result.usage.input_tokens > 0


async def test_agent_loop_stops_when_the_step_budget_is_spent(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    result = await _loop(client, settings, Budget(max_steps=3))
    assert result.status == "budget_exhausted"
    assert "step budget of 3 steps is spent" in result.transcript[-1]
    # ask (1), pay (2), ask (3): the bank-change call never reached policy
    assert bank_of(runtime).payments("INV-2001") == 1
    assert not any(e.action == "vendors.update_bank_details" for e in runtime.ledger.events())


async def test_agent_loop_stops_when_the_token_budget_is_spent(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    result = await _loop(client, settings, Budget(max_tokens=10))
    assert result.status == "budget_exhausted"
    assert "token budget of 10 is spent" in result.transcript[-1]
    assert bank_of(runtime).payments("INV-2001") == 0


async def _invoice(client: Client, settings: Settings, invoice: str) -> InvoiceResult:
    handle = await start_task(
        client,
        "PayInvoice",
        InvoiceInput(invoice_id=invoice, text=f"Invoice {invoice}"),
        workflow_id=new_id(invoice),
        task_queue=settings.task_queue,
        started_by="user:bob",
        result_type=InvoiceResult,
    )
    return await handle.result()


async def test_invalid_model_output_gets_one_repair_attempt(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    result = await _invoice(client, settings, "INV-BAD")
    assert result.status == "paid" and result.amount == 12.5
    calls = [e for e in runtime.ledger.events() if e.kind == "model.call"]
    assert len(calls) == 2
    assert "amount" in str(calls[1].payload["repair_of_error"])


async def test_garbage_model_output_fails_the_run_clearly(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    with pytest.raises(WorkflowFailureError) as failed:
        await _invoice(client, settings, "INV-GARBAGE")
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "ModelOutputInvalid"
    assert "InvoiceFields" in cause.message
    assert not any(e.kind == "decision" for e in runtime.ledger.events())


async def test_cli_replay_of_an_agent_loop_imports_the_apps_tools(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker, tmp_path: Path
) -> None:
    """`tether audit replay` runs in a process of its own: the agent loop finds its tools
    only because replay imports the app's tool modules ([app] tools). Without them the same
    history would look nondeterministic, which the code is not."""
    handle = await start_task(
        client,
        "AgentLoop",
        AgentLoopInput(
            goal="Pay invoice INV-2001 from acme-office",
            agent="agent:ap-clerk",
            tools=["pay_vendor", "update_bank_details"],
            budget=Budget(max_steps=20),
        ),
        workflow_id=new_id("loop-replay"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=AgentLoopResult,
    )
    await handle.result()
    no_tools = tmp_path / "no-tools.toml"
    example = ROOT / "examples" / "accounts_payable"
    no_tools.write_text(f'policy_path = "{example / "policy.csv"}"\n[app]\npath = ["{example}"]\n')

    def replay(config: Path) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "TETHER_CONFIG": str(config),
            "TETHER_DATABASE_URL": settings.database_url,
            "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        }
        return subprocess.run(
            [sys.executable, "-m", "tether.cli", "audit", "replay", handle.id],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = await asyncio.to_thread(replay, ROOT / "tether.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reproduces" in done.stdout
    # The control: the same history replayed without the app's tools does not reproduce.
    broken = await asyncio.to_thread(replay, no_tools)
    assert broken.returncode == 1 and "replay failed" in broken.stderr
