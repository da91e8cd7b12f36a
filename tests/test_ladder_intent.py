"""The recovery ladder counts rungs by intent, not by endpoint touched.

A repair goes to the model that gave the answer — failing over only to another endpoint
of that model — so a repair that fails over is still the repair; `alternate` then goes
to a model that has not answered yet. Real HTTP to the local test server, real dev server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import new_id, replayer_for
from tests.gateway_app import Echo, GatewayAskInput, GatewayAskResult, GatewayAskWorkflow
from tests.model_server import ModelServer
from tether.activities.gateway import Gateway
from tether.core.config import Settings
from tether.core.gateway_config import ModelsConfig
from tether.runtime.client import start_task
from tether.verification.events import LedgerEvent
from tether.worker import Runtime, build_worker


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(stall_seconds=5) as s:
        yield s


@pytest.fixture
async def app(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer
) -> AsyncIterator[Worker]:
    """`a` and `a2` serve one model (m-a; `a` preferred), `b` another (m-b)."""
    endpoints: list[dict[str, Any]] = [
        {"name": "a", "base_url": server.base_url("a"), "model": "m-a"},
        {"name": "a2", "base_url": server.base_url("a2"), "model": "m-a", "priority": 1},
        {"name": "b", "base_url": server.base_url("b"), "model": "m-b", "priority": 2},
    ]
    gateway = Gateway(ModelsConfig.model_validate({"endpoints": endpoints}))
    w = build_worker(
        client, settings, runtime, extra_workflows=[GatewayAskWorkflow], model_provider=gateway
    )
    try:
        async with w:
            yield w
    finally:
        await gateway.aclose()


async def _ask(client: Client, settings: Settings, prompt: str) -> tuple[str, GatewayAskResult]:
    handle = await start_task(
        client,
        "GatewayTestAsk",
        GatewayAskInput(prompt=prompt),
        workflow_id=new_id("intent"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=GatewayAskResult,
    )
    result = await handle.result()
    replayed = await replayer_for(GatewayAskWorkflow).replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None
    return handle.id, result


def _calls(runtime: Runtime, workflow_id: str) -> list[LedgerEvent]:
    return [e for e in runtime.ledger.events(workflow_id) if e.kind == "model.call"]


def _rungs(runtime: Runtime, workflow_id: str) -> list[tuple[str, str]]:
    return [
        (str(e.payload["rung"]), e.outcome)
        for e in runtime.ledger.events(workflow_id)
        if e.kind == "model.rung"
    ]


def _repairs(server: ModelServer) -> list[str]:
    """Endpoints that were asked to repair an answer."""
    return [r.endpoint for r in server.log if "previous answer was invalid" in r.prompt]


async def test_a_repair_that_fails_over_stays_with_the_model_that_answered(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    # `a` answers invalid, then fails the repair: it fails over to `a2` (same model), not
    # to `b`; a2's repair is invalid too, so the alternate rung asks `b`, fresh.
    server.plan("a", "schema", "503")
    server.plan("a2", "schema")
    wid, result = await _ask(client, settings, "x")
    assert result.output == Echo(echo="x", endpoint="b")
    assert _rungs(runtime, wid) == [
        ("first", "invalid"),
        ("repair", "invalid"),
        ("alternate", "recovered"),
    ]
    assert [e.payload["endpoint"] for e in _calls(runtime, wid)] == ["a", "a2", "b"]
    assert _repairs(server) == ["a", "a2"]  # never `b`: it gave no answer to repair
    [fresh] = server.requests_to("b")
    assert "previous answer was invalid" not in fresh.prompt
    assert result.usage.model_calls == 3


async def test_a_repair_waits_for_its_model_rather_than_asking_another(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    # Both endpoints of m-a fail the repair: the repair is retried on m-a (Temporal's
    # retry), never sent to `b`, and recovers there.
    server.plan("a", "schema", "503")
    server.plan("a2", "503")
    wid, result = await _ask(client, settings, "y")
    assert result.output is not None and result.output.endpoint in ("a", "a2")
    assert _rungs(runtime, wid) == [("first", "invalid"), ("repair", "recovered")]
    assert server.requests_to("b") == []
    [_first, repair] = _calls(runtime, wid)
    assert repair.payload["rung"] == "repair"
    failed = [e for e in runtime.ledger.events(wid) if e.kind == "model.failed"]
    tried: list[list[dict[str, Any]]] = json.loads(
        json.dumps([f.payload["attempts"] for f in failed])
    )
    endpoints = {a["endpoint"] for attempts in tried for a in attempts}
    assert endpoints == {"a", "a2"}  # both endpoints of m-a, never `b`


async def test_the_alternate_skips_every_endpoint_of_a_model_that_answered(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, app: Worker
) -> None:
    # `a` answers invalid twice (first and repair); the alternate must not go to `a2`,
    # which serves the same model, but to `b`.
    server.plan("a", "schema", "schema")
    wid, result = await _ask(client, settings, "z")
    assert result.output == Echo(echo="z", endpoint="b")
    assert [e.payload["endpoint"] for e in _calls(runtime, wid)] == ["a", "a", "b"]
    assert server.requests_to("a2") == []
