"""Outages are waited out: both model endpoints down for longer than the breaker's reset
and the old retry window (five tries, about 15 s) — every run completes once they return.

The accounts-payable example pays through the real gateway over the local test server's
endpoints; the ledger, the `status` query and the `tether.runs.waiting` metric must show
the wait, and the bank must pay each invoice once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from ap.workflows import InvoiceResult
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from tests.conftest import bank_of, start_invoice
from tests.model_server import ModelServer
from tests.outage_kit import events, invoice_answers, private_endpoints
from tether.activities.gateway import Gateway
from tether.core import telemetry
from tether.core.config import Settings
from tether.core.gateway_config import ModelsConfig
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus

RUNS = 6
OUTAGE_SECONDS = 25.0
"""Longer than the breaker's reset (2 s here) and the old retry window (about 15 s)."""


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(stall_seconds=5) as s:
        yield s


@pytest.fixture
def metrics(settings: Settings) -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    tel = telemetry.setup(settings, metric_reader=reader)
    yield reader
    tel.shutdown()


def waiting_runs(reader: InMemoryMetricReader) -> float:
    """The `tether.runs.waiting` sum of model waits."""
    data = reader.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "tether.runs.waiting":
                    continue
                for point in metric.data.data_points:
                    if (
                        isinstance(point, NumberDataPoint)
                        and (point.attributes or {}).get("tether.waiting.kind") == "model"
                    ):
                        total += point.value
    return total


@pytest.fixture
async def app(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    server: ModelServer,
    metrics: InMemoryMetricReader,
) -> AsyncIterator[Worker]:
    gateway = Gateway(
        ModelsConfig.model_validate(
            {
                "endpoints": private_endpoints(server, "a", "b"),
                "breaker_failures": 2,
                "breaker_reset_seconds": 2,
            }
        )
    )
    w = build_worker(client, settings, runtime, model_provider=gateway)
    try:
        async with w:
            yield w
    finally:
        await gateway.aclose()


async def until_waiting(handles: list[WorkflowHandle[Any, InvoiceResult]]) -> list[AgentStatus]:
    """The runs' statuses once every one of them says it waits for a model endpoint."""
    for _ in range(600):
        statuses = [await h.query("status", result_type=AgentStatus) for h in handles]
        if all(s.waiting for s in statuses):
            return statuses
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every run waits: {[s.waiting for s in statuses]}")


async def test_runs_wait_out_an_outage_of_every_endpoint_and_pay_once(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    server: ModelServer,
    app: Worker,
    metrics: InMemoryMetricReader,
) -> None:
    invoices = invoice_answers(server, "INV-OUT", RUNS)
    server.outage("a", "b")
    down_since = time.monotonic()
    handles = [await start_invoice(client, settings, inv, prefix="outage") for inv in invoices]

    statuses = await until_waiting(handles)
    for status in statuses:
        assert status.waiting.startswith("waiting for model endpoint since ")
        assert status.waiting_since is not None
    for handle in handles:
        [began] = events(runtime, handle.id, "model.waiting")
        assert began.outcome == "waiting" and began.action == "model.extract"
        assert set(began.payload["endpoints"]) == {"a", "b"}  # type: ignore[arg-type]
    assert waiting_runs(metrics) == RUNS
    # The breakers open and their probes fail for a while; the runs keep waiting.
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_since)))
    for handle in handles:
        assert (await handle.query("status", result_type=AgentStatus)).waiting
    assert bank_of(runtime).payments() == 0
    server.restore("a", "b")

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
    assert [r.status for r in results] == ["paid"] * RUNS
    bank = bank_of(runtime)
    for invoice in invoices:
        assert bank.payments(invoice) == 1
    for handle in handles:
        waits = events(runtime, handle.id, "model.waiting")
        assert [w.outcome for w in waits] == ["waiting", "resumed"]
        assert int(waits[1].payload["tries"]) >= 1  # type: ignore[arg-type]
        failed = events(runtime, handle.id, "model.failed")
        assert failed and all(f.payload["error"] == "ModelUnavailable" for f in failed)
        assert len(events(runtime, handle.id, "decision")) == 1
        assert len(events(runtime, handle.id, "tool.executed")) == 1
        status = await handle.query("status", result_type=AgentStatus)
        assert status.waiting == "" and status.waiting_since is None
    assert waiting_runs(metrics) == 0
    # Many requests were refused by the breakers without reaching the server at all.
    assert server.requests_to("a") and server.requests_to("b")
    assert runtime.ledger.verify().ok
