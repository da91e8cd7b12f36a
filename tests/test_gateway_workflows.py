"""The gateway inside workflows: failover and the recovery ladder on the real dev server.

A real OpenAI-compatible server on loopback (tests/model_server.py) plays the endpoints;
each rung, attempt and failure must show in the result and in the ledger.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tests.conftest import new_id, replayer_for
from tests.gateway_app import Echo, GatewayAskInput, GatewayAskResult, GatewayAskWorkflow
from tests.model_server import ModelServer
from tether.activities.accounting import usage_report
from tether.activities.gateway import Gateway
from tether.core.config import Settings
from tether.core.gateway_config import ModelsConfig
from tether.governance.approvals import ApprovalStatus
from tether.governance.budget import AgentBudget, OnBreach
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.client import start_task
from tether.verification.events import LedgerEvent
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(stall_seconds=5) as s:
        yield s


def models(server: ModelServer, **extra: Any) -> ModelsConfig:
    """Two internal endpoints (a preferred), one private that may take confidential data."""
    return ModelsConfig.model_validate(
        {
            "endpoints": [
                {
                    "name": "a",
                    "base_url": server.base_url("a"),
                    "model": "m-a",
                    "input_usd_per_million": 1.0,
                    "output_usd_per_million": 2.0,
                },
                {
                    "name": "b",
                    "base_url": server.base_url("b"),
                    "model": "m-b",
                    "priority": 1,
                    "input_usd_per_million": 1.0,
                    "output_usd_per_million": 2.0,
                },
                {
                    "name": "vault",
                    "base_url": server.base_url("vault"),
                    "model": "m-vault",
                    "private": True,
                    "data_classes": ["confidential"],
                },
            ],
            **extra,
        }
    )


@pytest.fixture
async def app(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer
) -> AsyncIterator[Worker]:
    gateway = Gateway(models(server))
    w = build_worker(
        client, settings, runtime, extra_workflows=[GatewayAskWorkflow], model_provider=gateway
    )
    try:
        async with w:
            yield w
    finally:
        await gateway.aclose()


async def _start(
    client: Client, settings: Settings, inp: GatewayAskInput
) -> WorkflowHandle[Any, GatewayAskResult]:
    return await start_task(
        client,
        "GatewayTestAsk",
        inp,
        workflow_id=new_id("gw"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=GatewayAskResult,
    )


async def _ask(client: Client, settings: Settings, inp: GatewayAskInput) -> GatewayAskResult:
    return await (await _start(client, settings, inp)).result()


def _events(runtime: Runtime, kind: str) -> list[LedgerEvent]:
    return [e for e in runtime.ledger.events() if e.kind == kind]


def _attempts(event: LedgerEvent) -> list[dict[str, Any]]:
    attempts: list[dict[str, Any]] = json.loads(json.dumps(event.payload["attempts"]))
    return attempts


def _rungs(runtime: Runtime) -> list[tuple[str, str]]:
    return [(str(e.payload["rung"]), e.outcome) for e in _events(runtime, "model.rung")]


async def test_failover_is_reported_in_the_result_and_the_ledger(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "503")
    result = await _ask(client, settings, GatewayAskInput(prompt="pay the invoice"))
    assert result.output == Echo(echo="pay the invoice", endpoint="b")
    [call] = _events(runtime, "model.call")
    assert [(a["endpoint"], a["outcome"], a["status"]) for a in _attempts(call)] == [
        ("a", "server_error", 503),
        ("b", "ok", 200),
    ]
    assert call.payload["endpoint"] == "b" and not call.payload["tokens_estimated"]
    # Accounting: the run's usage is the provider's figures, priced per million.
    usage = result.usage
    assert usage.model_calls == 1
    assert (usage.input_tokens, usage.output_tokens) == (
        call.payload["input_tokens"],
        call.payload["output_tokens"],
    )
    assert usage.cost_usd == pytest.approx(
        (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1_000_000
    )
    assert "pay the invoice" not in json.dumps(call.payload)  # digests, never text


async def test_ladder_repairs_on_the_same_model_first(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "schema")
    result = await _ask(client, settings, GatewayAskInput(prompt="x"))
    assert result.output == Echo(echo="x", endpoint="a")
    assert _rungs(runtime) == [("first", "invalid"), ("repair", "recovered")]
    repair = server.requests_to("a")[1]
    assert "previous answer was invalid" in repair.prompt and "endpoint" in repair.prompt


async def test_ladder_then_tries_another_model(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "schema", "garbage")
    handle = await _start(client, settings, GatewayAskInput(prompt="x"))
    result = await handle.result()
    assert result.output == Echo(echo="x", endpoint="b")
    # The ladder is deterministic: its history replays against today's code.
    replayer = replayer_for(GatewayAskWorkflow)
    replayed = await replayer.replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None
    assert _rungs(runtime) == [
        ("first", "invalid"),
        ("repair", "invalid"),
        ("alternate", "recovered"),
    ]
    assert [e.payload["endpoint"] for e in _events(runtime, "model.call")] == ["a", "a", "b"]
    assert result.usage.model_calls == 3


async def test_a_declared_check_climbs_the_ladder_too(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    result = await _ask(client, settings, GatewayAskInput(prompt="x", forbid_endpoint="a"))
    assert result.output is not None and result.output.endpoint == "b"
    [first, _repair, _alt] = _events(runtime, "model.rung")
    assert "answers from 'a' are refused" in str(first.payload["error"])


async def test_ladder_falls_back_to_the_declared_output(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "schema", "truncated")
    server.plan("b", "schema")
    fallback = Echo(echo="fallback", endpoint="none")
    result = await _ask(client, settings, GatewayAskInput(prompt="x", fallback=fallback))
    assert result.output == fallback
    assert _rungs(runtime) == [
        ("first", "invalid"),
        ("repair", "invalid"),
        ("alternate", "invalid"),
        ("fallback", "used"),
    ]
    repair_error = _events(runtime, "model.rung")[1].payload["error"]
    assert "cut off" in str(repair_error)  # a truncated answer is never taken


async def test_without_a_fallback_the_run_fails_classified(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "schema", "schema")
    server.plan("b", "schema")
    handle = await _start(client, settings, GatewayAskInput(prompt="x"))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ModelOutputInvalid"
    assert "Echo" in cause.message


async def test_the_approve_tier_lets_a_person_supply_the_output(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    server: ModelServer,
    app: Worker,
    tmp_path: Path,
) -> None:
    server.plan("a", "schema", "schema")
    server.plan("b", "schema")
    handle = await _start(
        client, settings, GatewayAskInput(prompt="x", approver="role:ap-approver")
    )
    pending = None
    for _ in range(400):
        status = await handle.query("status", result_type=AgentStatus)
        pending = status.pending
        if pending is not None:
            break
        await asyncio.sleep(0.05)
    assert pending is not None
    assert (pending.action, pending.resource) == ("model.extract.output", "agent/agent:ap-clerk")
    supplied = Echo(echo="typed by alice", endpoint="human")
    outcome = await decide_request(
        client,
        runtime.approvals,
        runtime.ledger,
        pending.request_id,
        approver="user:alice",
        approve=True,
        key=signing_key(settings),
        comment=supplied.model_dump_json(),
    )
    assert outcome.status is ApprovalStatus.APPROVED
    result = await handle.result()
    assert result.output == supplied
    assert _rungs(runtime)[-1] == ("approve", "supplied")
    kinds = [e.kind for e in runtime.ledger.events(handle.id)]
    assert "approval.requested" in kinds and "approval.decided" in kinds


async def test_confidential_data_with_no_private_endpoint_fails_clearly(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    handle = await _start(
        client, settings, GatewayAskInput(prompt="SECRET salary", sensitivity="restricted")
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "NoEligibleEndpoint"
    assert "'restricted'" in cause.message
    assert server.log == []
    [failure] = _events(runtime, "model.failed")
    assert failure.payload["error"] == "NoEligibleEndpoint"


async def test_when_every_endpoint_fails_temporal_retries_the_call(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("vault", "500", "reset")
    result = await _ask(
        client, settings, GatewayAskInput(prompt="CONFIDENTIAL ledger", sensitivity="confidential")
    )
    assert result.output is not None and result.output.endpoint == "vault"
    failures = _events(runtime, "model.failed")
    assert [f.payload["try"] for f in failures] == [1, 2]
    assert [a["outcome"] for f in failures for a in _attempts(f)] == [
        "server_error",
        "reset",
    ]
    # Failover never escalated the confidential prompt to the internal endpoints.
    assert {r.endpoint for r in server.log} == {"vault"}


async def test_a_rejected_request_is_not_retried(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "400")
    handle = await _start(client, settings, GatewayAskInput(prompt="x"))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ModelRequestRejected"
    assert [r.endpoint for r in server.log] == ["a"]


async def test_usage_per_call_workflow_and_agent_with_estimates_marked(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "no_usage")
    estimated = await _ask(client, settings, GatewayAskInput(prompt="e" * 400))
    reported = await _ask(client, settings, GatewayAskInput(prompt="r" * 400))
    assert estimated.usage.estimated_calls == 1 and reported.usage.estimated_calls == 0
    report = usage_report(runtime.ledger.events())
    assert report.total.calls == 2 and report.total.estimated_calls == 1
    assert report.by_agent["agent:ap-clerk"] == report.total
    assert report.by_endpoint["a"].calls == 2
    for usage, totals in zip(
        (estimated.usage, reported.usage), report.by_workflow.values(), strict=True
    ):
        assert (totals.input_tokens, totals.output_tokens) == (
            usage.input_tokens,
            usage.output_tokens,
        )
        assert totals.cost_usd == pytest.approx(usage.cost_usd)


async def _pending(handle: WorkflowHandle[Any, GatewayAskResult], seen: set[str]) -> Any:
    """The next open approval request of the run other than those in `seen`."""
    for _ in range(600):
        status = await handle.query("status", result_type=AgentStatus)
        if status.pending is not None and status.pending.request_id not in seen:
            return status.pending
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new approval request beyond {sorted(seen)}")


async def test_an_approved_overspend_carries_up_the_ladder_and_the_output_approval_is_its_own(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    server: ModelServer,
    app: Worker,
) -> None:
    runtime.budgets.set(
        AgentBudget(
            subject="agent:ap-clerk",
            window_seconds=3600,
            max_tokens=50,
            on_breach=OnBreach.APPROVE,
            approver_role="role:ap-approver",
        ),
        actor="user:ops",
    )
    server.plan("a", "schema", "schema")
    server.plan("b", "schema")
    handle = await _start(
        client, settings, GatewayAskInput(prompt="x", approver="role:ap-approver")
    )
    budget = await _pending(handle, set())
    assert budget.action == "budget.exceed"
    key = signing_key(settings)
    approved = await decide_request(
        client, runtime.approvals, runtime.ledger, budget.request_id,
        approver="user:alice", approve=True, key=key,
    )  # fmt: skip
    assert approved.status is ApprovalStatus.APPROVED
    # Repair and alternate run on the approved overspend; the approve tier asks anew,
    # as a step of its own (the budget's request is decided already).
    output = await _pending(handle, {budget.request_id})
    assert output.action == "model.extract.output"
    assert output.step == budget.step + 1
    assert "input_value" not in output.args_summary
    supplied = Echo(echo="typed by alice", endpoint="human")
    await decide_request(
        client, runtime.approvals, runtime.ledger, output.request_id,
        approver="user:alice", approve=True, key=key, comment=supplied.model_dump_json(),
    )  # fmt: skip
    result = await handle.result()
    assert result.output == supplied
    assert _rungs(runtime) == [
        ("first", "invalid"),
        ("repair", "invalid"),
        ("alternate", "invalid"),
        ("approve", "supplied"),
    ]
    kinds = [e.kind for e in runtime.ledger.events(handle.id)]
    assert kinds.count("approval.requested") == 2
    assert kinds.count("budget.breach") == 1 and kinds.count("budget.override") == 3


async def test_no_model_output_is_recorded_with_a_validation_error(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    server.plan("a", "schema")
    result = await _ask(client, settings, GatewayAskInput(prompt="x"))
    assert result.output == Echo(echo="x", endpoint="a")
    [invalid, _recovered] = _events(runtime, "model.rung")
    error = str(invalid.payload["error"])
    # Which field, why and the error type; never the answer itself ({"echo": 5}).
    assert "echo: Input should be a valid string [string_type]" in error
    assert "endpoint: Field required [missing]" in error
    assert "input_value" not in error and "5" not in error.replace("Echo", "")


async def test_an_unknown_sensitivity_is_refused_before_any_call(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    handle = await _start(client, settings, GatewayAskInput(prompt="x", sensitivity="Secret"))
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidSensitivity"
    assert "'Secret'" in cause.message and "public, internal, confidential" in cause.message
    assert server.log == []
