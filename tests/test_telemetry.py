"""OpenTelemetry: one trace per agent task across workflow → activities, governed-step
attributes, metric values after real runs on the dev server, and the model-call helper."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from temporalio.client import Client

from tests.conftest import new_id, pending_status
from tests.gateway_app import GatewayAskInput, GatewayAskResult, GatewayAskWorkflow
from tests.model_server import ModelServer
from tests.test_invoice_flow import _start
from tether.activities.gateway import Gateway
from tether.core import genai, telemetry
from tether.core.config import Settings
from tether.core.gateway_config import ModelsConfig
from tether.governance.approvals import ApprovalDecision, ApprovalOutcome, ApprovalStatus
from tether.governance.signing import sign_decision
from tether.governance.types import Decision, Tier
from tether.runtime.approvals import signing_key
from tether.runtime.client import start_task
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus


class Captured:
    def __init__(self, settings: Settings) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.tel = telemetry.setup(settings, span_exporter=self.spans, metric_reader=self.metrics)

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: str) -> float:
        return sum(  # type: ignore[no-any-return]
            p.value
            for p in self.points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def captured(settings: Settings) -> Iterator[Captured]:
    c = Captured(settings)
    yield c
    c.tel.shutdown()
    assert telemetry.active() is None


def _trace_of(spans: tuple[ReadableSpan, ...], workflow_id: str) -> list[ReadableSpan]:
    """Every span in the trace(s) of `workflow_id`'s start and run.

    A client's queries and updates are requests of their own (their own traces); the
    workflow's handling of an update belongs to the task's trace.
    """
    ids = {
        s.context.trace_id
        for s in spans
        if s.context
        and s.name.startswith(("StartWorkflow:", "RunWorkflow:", "CompleteWorkflow:"))
        and (s.attributes or {}).get("temporalWorkflowID") == workflow_id
    }
    assert len(ids) == 1, f"workflow {workflow_id} spans {len(ids)} traces"
    return [s for s in spans if s.context and s.context.trace_id in ids]


async def test_agent_tasks_are_traced_and_measured(
    client: Client, settings: Settings, runtime: Runtime, captured: Captured
) -> None:
    interceptor = captured.tel.interceptor()
    assert interceptor is not None
    config = client.config()
    config["interceptors"] = [interceptor]
    traced = Client(**config)
    captured.tel.watch_kill_switches(lambda: [r.kind.value for r in runtime.kills.status()])
    async with build_worker(client, settings, runtime):
        paid = await (await _start(traced, settings, "INV-1001")).result()
        denied_handle = await _start(traced, settings, "INV-1004")
        denied = await denied_handle.result()
        # Started by a client that does not trace (the CLI, a schedule): still one trace.
        untraced = await _start(client, settings, "INV-1002")
        await untraced.result()
        waiting = await _start(traced, settings, "INV-1003")
        status: AgentStatus = await pending_status(waiting, tries=200)
        assert status.pending is not None
        decision = ApprovalDecision.for_request(
            status.pending, "user:alice", True, "ok", nonce=uuid.uuid4().hex
        )
        signed = sign_decision(decision, signing_key(settings))
        outcome = await waiting.execute_update("decide", signed, result_type=ApprovalOutcome)
        assert outcome.status is ApprovalStatus.APPROVED
        assert (await waiting.result()).status == "paid"
    assert (paid.status, denied.status) == ("paid", "denied")

    spans = captured.spans.get_finished_spans()
    trace = _trace_of(spans, denied_handle.id)
    names = {s.name for s in trace}
    assert {"StartWorkflow:PayInvoice", "RunWorkflow:PayInvoice"} <= names
    assert {"RunActivity:call_model", "RunActivity:decide_step"} <= names
    (decide,) = [s for s in trace if s.name == "RunActivity:decide_step"]
    attrs = dict(decide.attributes or {})
    recorded = [e for e in runtime.ledger.events(denied_handle.id) if e.kind == "decision"][-1]
    assert {k: attrs[f"tether.{k}"] for k in ("agent", "action", "resource", "tier", "rule")} == {
        "agent": recorded.agent,
        "action": recorded.action,
        "resource": recorded.resource,
        "tier": "deny",
        "rule": "ap-no-bank-changes",
    }
    assert attrs["tether.policy_version"] == recorded.policy_version == runtime.policy.version
    # The workflow → activity path is one tree: every span's parent is in the trace.
    in_trace = {s.context.span_id for s in trace if s.context}
    roots = [s for s in trace if s.parent is None or s.parent.span_id not in in_trace]
    assert [r.name for r in roots] == ["StartWorkflow:PayInvoice"]
    for workflow_id in (untraced.id, waiting.id):
        tools = {s.name for s in _trace_of(spans, workflow_id)}
        assert "RunActivity:tool.pay_vendor" in tools and "RunActivity:decide_step" in tools
    assert "HandleUpdate:decide" in {s.name for s in _trace_of(spans, waiting.id)}
    # Prompts (the invoice text) and outputs stay out of spans by default.
    for span in spans:
        for value in (span.attributes or {}).values():
            assert "from a vendor" not in str(value)

    # Metrics, against what the ledger recorded.
    decisions = [e for e in runtime.ledger.events() if e.kind == "decision"]
    for tier in ("auto", "notify", "approve", "deny"):
        expected = sum(1 for e in decisions if e.tier == tier)
        assert captured.total("tether.decisions", **{"tether.tier": tier}) == expected
    assert captured.total("tether.denials", **{"tether.rule": "ap-no-bank-changes"}) == 1
    (wait,) = captured.points("tether.approval.wait")
    assert isinstance(wait, HistogramDataPoint)
    assert (
        wait.count == 1 and (wait.attributes or {})["tether.outcome"] == "approved" and wait.sum > 0
    )
    (append,) = captured.points("tether.ledger.append.duration")
    assert append.count >= len(runtime.ledger.events()) - 1  # all but the policy.loaded
    assert captured.total("tether.kill_switches.engaged") == 0
    runtime.kills.engage("agent", "agent:ap-clerk", reason="test", engaged_by="user:ops")
    assert captured.total("tether.kill_switches.engaged", **{"tether.kill.scope": "agent"}) == 1


@pytest.fixture
def httpx_traced(captured: Captured) -> Captured:
    """Telemetry on; the gateway traces its own client (and `_call` its own)."""
    return captured


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A loopback model endpoint: one fixed chat completion per connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    body = json.dumps({"model": "m-2024", "choices": [{"finish_reason": "stop"}]}).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def _call(endpoint: str, output: str) -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient() as http:
        telemetry.instrument_httpx(http)
        with genai.model_call(
            endpoint=endpoint,
            system="openai",
            request_model="m",
            server_address="127.0.0.1",
            messages=[{"role": "user", "content": "secret prompt"}],
        ) as call:
            response = await http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m"}
            )
            call.succeeded(
                response_model=response.json()["model"],
                input_tokens=12,
                output_tokens=5,
                finish_reasons=["stop"],
                cost_usd=0.25,
                output=output,
            )


async def test_model_calls_carry_genai_attributes_and_metrics(httpx_traced: Captured) -> None:
    c = httpx_traced
    await _call("primary", "secret answer")
    with (
        pytest.raises(httpx.ConnectError),
        genai.model_call(endpoint="backup", system="openai", request_model="m"),
    ):
        raise httpx.ConnectError("refused")
    genai.record_failover("backup", "connection")
    genai.record_breaker_state("backup", "open")

    spans = c.spans.get_finished_spans()
    chat = [s for s in spans if s.name == "chat m"]
    assert len(chat) == 2
    ok = dict(chat[0].attributes or {})
    assert ok["gen_ai.system"] == "openai" and ok["gen_ai.request.model"] == "m"
    assert ok["gen_ai.response.model"] == "m-2024"
    assert (ok["gen_ai.usage.input_tokens"], ok["gen_ai.usage.output_tokens"]) == (12, 5)
    assert list(ok["gen_ai.response.finish_reasons"]) == ["stop"]  # type: ignore[arg-type]
    http_spans = [s for s in spans if s.name == "POST"]
    assert len(http_spans) == 1 and http_spans[0].parent is not None
    # A client nobody instrumented (a webhook's) leaves no span, so no URL either.
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    async with server, httpx.AsyncClient() as plain:
        await plain.post(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook/TOKEN")
    assert not any(
        "TOKEN" in str(v)
        for s in c.spans.get_finished_spans()
        for v in (s.attributes or {}).values()
    )
    assert len([s for s in c.spans.get_finished_spans() if s.name == "POST"]) == 1
    assert chat[0].context is not None
    assert http_spans[0].parent.span_id == chat[0].context.span_id
    assert all("secret" not in str(v) for s in spans for v in (s.attributes or {}).values())
    assert (chat[1].attributes or {})["error.type"] == "ConnectError"

    assert c.total("tether.model.tokens", **{"gen_ai.token.type": "input"}) == 12
    assert c.total("tether.model.tokens", **{"gen_ai.token.type": "output"}) == 5
    assert c.total("tether.model.cost", **{"tether.endpoint": "primary"}) == 0.25
    durations = {
        p.attributes["tether.endpoint"]: p for p in c.points("gen_ai.client.operation.duration")
    }
    assert durations["primary"].count == 1 and "error.type" not in durations["primary"].attributes
    assert durations["backup"].attributes["error.type"] == "ConnectError"
    assert c.total("tether.model.failovers", **{"tether.reason": "connection"}) == 1
    assert c.total("tether.model.breaker.state", **{"tether.endpoint": "backup"}) == 2
    with pytest.raises(ValueError, match="'ajar' is not one of closed, half_open, open"):
        genai.record_breaker_state("backup", "ajar")


async def test_content_goes_into_spans_only_when_configured(settings: Settings) -> None:
    c = Captured(settings.model_copy(update={"telemetry_capture_content": True}))
    try:
        await _call("primary", "the answer")
    finally:
        c.tel.shutdown()
    (chat,) = [s for s in c.spans.get_finished_spans() if s.name == "chat m"]
    attrs = dict(chat.attributes or {})
    assert "secret prompt" in str(attrs["gen_ai.input.messages"])
    assert "the answer" in str(attrs["gen_ai.output.messages"])


def test_exporters_from_settings(settings: Settings) -> None:
    off = telemetry.setup(settings)
    assert (off.tracer_provider, off.meter_provider, off.interceptor()) == (None, None, None)
    off.shutdown()
    console = telemetry.setup(settings.model_copy(update={"telemetry_exporter": "console"}))
    try:
        assert console.tracer_provider is not None and console.meter_provider is not None
        assert console.interceptor() is not None
        assert telemetry.active() is console
    finally:
        console.shutdown()
    assert telemetry.active() is None
    with pytest.raises(ValidationError, match="telemetry_exporter"):
        Settings(telemetry_exporter="jaeger")
    with pytest.raises(ValidationError, match="'collector:4318' is not an http"):
        Settings(telemetry_exporter="otlp", telemetry_otlp_endpoint="collector:4318")


async def test_a_model_call_over_http_is_in_the_tasks_trace(
    client: Client, settings: Settings, runtime: Runtime, httpx_traced: Captured
) -> None:
    """workflow → call_model activity → the gateway's HTTP request, in one trace."""
    interceptor = httpx_traced.tel.interceptor()
    assert interceptor is not None
    config = client.config()
    config["interceptors"] = [interceptor]
    traced = Client(**config)
    async with ModelServer() as server:
        server.plan("a", "500")  # the first attempt fails over to b
        endpoints = [
            {"name": "a", "base_url": server.base_url("a"), "model": "m-a"},
            {"name": "b", "base_url": server.base_url("b"), "model": "m-b", "priority": 1},
        ]
        models = ModelsConfig.model_validate({"endpoints": endpoints})
        s = settings.model_copy(update={"models": models})
        gateway = Gateway(models)  # telemetry is on: the gateway traces its client
        worker = build_worker(
            client, s, runtime, extra_workflows=[GatewayAskWorkflow], model_provider=gateway
        )
        async with worker, contextlib.aclosing(gateway):
            handle = await start_task(
                traced,
                "GatewayTestAsk",
                GatewayAskInput(prompt="confidential figures"),
                workflow_id=new_id("gw"),
                task_queue=s.task_queue,
                started_by="user:carol",
                result_type=GatewayAskResult,
            )
            assert (await handle.result()).outcome == "ok"
    spans = httpx_traced.spans.get_finished_spans()
    trace = _trace_of(spans, handle.id)
    by_id = {s.context.span_id: s for s in trace if s.context}
    posts = [s for s in trace if s.name == "POST"]
    assert len(posts) == 2  # the failed attempt at a, then b
    for post, model in zip(posts, ("m-a", "m-b"), strict=True):
        chain = []
        node: ReadableSpan | None = post
        while node is not None:
            chain.append(node.name)
            node = by_id.get(node.parent.span_id) if node.parent else None
        assert chain == [
            "POST",
            f"chat {model}",
            "RunActivity:call_model",
            "StartActivity:call_model",
            "StartWorkflow:GatewayTestAsk",
        ]
    failed, answered = ({**(s.attributes or {})} for s in trace if s.name.startswith("chat "))
    assert (failed["tether.endpoint"], failed["error.type"]) == ("a", "server_error")
    assert (answered["gen_ai.system"], answered["gen_ai.response.model"]) == ("openai", "m-b")
    assert answered["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
    assert answered["server.address"] == "127.0.0.1" and "error.type" not in answered
    c = httpx_traced
    assert c.total("tether.model.failovers", **{"tether.endpoint": "a"}) == 1
    durations = {
        p.attributes["tether.endpoint"]: p for p in c.points("gen_ai.client.operation.duration")
    }
    assert durations["b"].count == 1 and durations["a"].attributes["error.type"] == "server_error"
    assert c.total("tether.model.breaker.state", **{"tether.endpoint": "b"}) == 0
    assert "RunWorkflow:GatewayTestAsk" in {s.name for s in trace}
    assert all(
        "confidential figures" not in str(v) for s in spans for v in (s.attributes or {}).values()
    )


class _Collector(BaseHTTPRequestHandler):
    """Records OTLP/HTTP requests like a collector would receive them."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_otlp_exporter_sends_traces_and_metrics_to_the_collector(settings: Settings) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tel = telemetry.setup(
            settings.model_copy(
                update={
                    "telemetry_exporter": "otlp",
                    "telemetry_otlp_endpoint": f"http://127.0.0.1:{server.server_port}/",
                }
            )
        )
        with tel.tracer.start_as_current_span("governed step"):
            telemetry.record_decision(
                "agent:ap-clerk",
                "payments.pay",
                "vendor/acme",
                Decision(tier=Tier.DENY, rule="r1", policy_version="v1", reason="no"),
            )
        tel.shutdown()  # flushes both
    finally:
        server.shutdown()
        server.server_close()
    paths = {path: (kind, body) for path, kind, body in _Collector.received}
    assert set(paths) == {"/v1/traces", "/v1/metrics"}
    assert all(kind == "application/x-protobuf" for kind, _ in paths.values())
    traces = ExportTraceServiceRequest.FromString(paths["/v1/traces"][1])
    (span,) = traces.resource_spans[0].scope_spans[0].spans
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert span.name == "governed step" and attributes["tether.tier"] == "deny"
    metrics = ExportMetricsServiceRequest.FromString(paths["/v1/metrics"][1])
    names = {
        m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"tether.decisions", "tether.denials"} <= names
