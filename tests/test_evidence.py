"""Every governed step answers the five questions, and an unknown outcome is said out loud."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.conftest import new_id, start_invoice
from tests.wire_app import WireTools, WireWorkflow
from tether.core.config import Settings
from tether.verification.events import digest
from tether.worker import Runtime, build_worker


async def test_each_step_links_what_influenced_it(
    client: Client, settings: Settings, runtime: Runtime, worker: Worker
) -> None:
    handle = await start_invoice(client, settings, "INV-1002", prefix="evidence")
    result = await handle.result()
    events = {e.kind: e for e in runtime.ledger.events(handle.id)}
    call, decision, executed = events["model.call"], events["decision"], events["tool.executed"]
    # what was proposed and decided
    assert decision.payload["args_digest"] == executed.payload["args_digest"]
    assert decision.rule == "ap-pay-medium" and decision.policy_version
    # what data influenced it: the model call, whose prompt and output are in the store
    assert decision.payload["inputs"] == [call.payload["call_id"]]
    prompt = runtime.ledger.blob(str(call.payload["prompt_digest"]))
    assert isinstance(prompt, str) and "INV-1002" in prompt
    output = runtime.ledger.blob(str(call.payload["output_digest"]))
    assert isinstance(output, str) and "northwind" in output
    assert call.payload["model"] == "scripted-ap-1"
    # what was dispatched and what came back
    assert events["tool.dispatched"].step == executed.step == decision.step
    receipt = runtime.ledger.blob(str(executed.payload["result_digest"]))
    assert isinstance(receipt, dict) and receipt["receipt_id"] == result.receipt_id
    with pytest.raises(KeyError):
        runtime.ledger.blob(digest("never stored"))


async def test_timeout_after_dispatch_is_ambiguous_and_not_retried(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    async with build_worker(
        client, settings, runtime, extra_workflows=[WireWorkflow], extra_tools=[WireTools()]
    ):
        handle = await client.start_workflow(
            "WireTest", "acme", id=new_id("wire"), task_queue=settings.task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ActionAmbiguous"
    assert "whether it took effect is unknown" in cause.message
    kinds = [(e.kind, e.outcome) for e in runtime.ledger.events(handle.id)]
    assert kinds == [
        ("decision", "allowed"),
        ("tool.dispatched", "dispatched"),
        ("tool.ambiguous", "ambiguous"),
    ]
