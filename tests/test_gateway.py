"""The model gateway against a real OpenAI-compatible server on loopback, fault by fault.

Each test starts its own `ModelServer` (tests/model_server.py) and a `Gateway` over a
few logical endpoints of it; faults are planned per endpoint and the server's request
log shows what each endpoint actually received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ValidationError

from tests.model_server import ModelServer
from tether.activities.breaker import BreakerState, EndpointHealth
from tether.activities.gateway import Gateway, build_provider
from tether.activities.models import GatewayFailure, Pricing, ScriptedProvider
from tether.activities.openai_http import ClientShards, retry_after_seconds
from tether.activities.payloads import ModelCallInput, ModelTool, StepRef
from tether.core import telemetry
from tether.core.config import Settings
from tether.core.gateway_config import EndpointConfig, ModelsConfig


class Echo(BaseModel):
    echo: str
    endpoint: str


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(stall_seconds=10) as s:
        yield s


def endpoint(server: ModelServer, name: str, **kw: object) -> EndpointConfig:
    fields: dict[str, object] = {
        "name": name,
        "base_url": server.base_url(name),
        "model": f"model-{name}",
        "timeout_seconds": 2.0,
    }
    fields.update(kw)
    return EndpointConfig.model_validate(fields)


def gateway(*endpoints: EndpointConfig, **kw: object) -> Gateway:
    return Gateway(ModelsConfig.model_validate({"endpoints": endpoints, **kw}))


def call(prompt: str = "hello", sensitivity: str = "internal", **kw: object) -> ModelCallInput:
    return ModelCallInput.model_validate(
        {
            "ref": StepRef(workflow_id="wf", run_id="run", step=1, agent="agent:t"),
            "task": "extract",
            "prompt": prompt,
            "sensitivity": sensitivity,
            "schema_name": "Echo",
            "json_schema": Echo.model_json_schema(),
            "max_output_tokens": 200,
            **kw,
        }
    )


# -- a healthy call -------------------------------------------------------------------


async def test_a_call_returns_validated_text_usage_cost_and_its_attempt(
    server: ModelServer,
) -> None:
    gw = gateway(endpoint(server, "a", input_usd_per_million=2.0, output_usd_per_million=4.0))
    result = await gw.complete(call("hello there"))
    await gw.aclose()
    assert Echo.model_validate_json(result.text) == Echo(echo="hello there", endpoint="a")
    assert (result.endpoint, result.model, result.finish_reason) == ("a", "model-a", "stop")
    assert not result.tokens_estimated and result.input_tokens > 0 and result.output_tokens > 0
    expected = (result.input_tokens * 2.0 + result.output_tokens * 4.0) / 1_000_000
    assert result.cost_usd == pytest.approx(expected)
    [attempt] = result.attempts
    assert (attempt.endpoint, attempt.outcome, attempt.status) == ("a", "ok", 200)
    [logged] = server.log
    body = logged.body
    assert body["model"] == "model-a" and body["max_tokens"] == 200
    assert body["response_format"]["json_schema"]["name"] == "Echo"
    assert body["response_format"]["json_schema"]["schema"] == Echo.model_json_schema()


async def test_usage_is_estimated_and_marked_when_the_provider_omits_it(
    server: ModelServer,
) -> None:
    server.plan("a", "no_usage")
    gw = gateway(endpoint(server, "a"))
    result = await gw.complete(call("x" * 400))
    await gw.aclose()
    assert result.tokens_estimated and result.input_tokens >= 100


async def test_the_api_key_is_sent_only_in_the_header(
    server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MODEL_KEY", "sk-very-secret")
    gw = gateway(endpoint(server, "a", api_key_env="TEST_MODEL_KEY"), max_attempts=1)
    ok = await gw.complete(call())
    server.plan("a", "500")
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    await gw.aclose()
    assert "sk-very-secret" not in ok.model_dump_json()
    assert "sk-very-secret" not in str(failed.value)
    assert "sk-very-secret" not in json.dumps([a.model_dump() for a in failed.value.attempts])
    assert "sk-very-secret" not in repr(gw.endpoints[0].client)
    assert "sk-very-secret" not in json.dumps(server.log[0].body)


async def test_streamed_answers_are_assembled(server: ModelServer) -> None:
    gw = gateway(endpoint(server, "a", stream=True))
    result = await gw.complete(call("a streamed prompt"))
    await gw.aclose()
    assert Echo.model_validate_json(result.text).echo == "a streamed prompt"
    assert not result.tokens_estimated and result.finish_reason == "stop"
    assert server.log[0].body["stream"] is True


# -- failover, fault by fault ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome", "status"),
    [
        ("500", "server_error", 500),
        ("502", "server_error", 502),
        ("503", "server_error", 503),
        ("429", "rate_limited", 429),
        ("reset", "reset", 0),
        ("stall", "stalled", 0),
        ("invalid_json", "invalid_response", 0),
        ("empty_choices", "empty_choices", 0),
        ("unknown_tool", "unknown_tool", 0),
        ("huge", "oversized", 200),
        ("401", "auth", 401),
        ("403", "auth", 403),
    ],
)
async def test_each_fault_fails_over_to_the_next_endpoint(
    server: ModelServer, fault: str, outcome: str, status: int
) -> None:
    server.plan("first", fault)
    gw = gateway(
        endpoint(server, "first", timeout_seconds=0.5, max_response_bytes=1 << 20, priority=0),
        endpoint(server, "second", priority=1),
    )
    tools = [ModelTool(name="lookup")] if fault == "unknown_tool" else []
    result = await gw.complete(call("keep going", tools=tools))
    await gw.aclose()
    assert result.endpoint == "second"
    assert Echo.model_validate_json(result.text).endpoint == "second"
    failed, ok = result.attempts
    assert (failed.endpoint, failed.outcome, failed.status) == ("first", outcome, status)
    assert ok.endpoint == "second" and ok.outcome == "ok"
    assert ok.reason.startswith(f"failover after first {outcome}")
    assert [r.endpoint for r in server.log] == ["first", "second"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stalled_stream_is_abandoned(server: ModelServer, stream: bool) -> None:
    server.plan("a", "stall")
    gw = gateway(endpoint(server, "a", stream=stream, timeout_seconds=0.4), max_attempts=1)
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    await gw.aclose()
    assert failed.value.kind == "ModelUnavailable" and failed.value.retryable
    assert [a.outcome for a in failed.value.attempts] == ["stalled"]


@pytest.mark.parametrize("fault", ["400"])
async def test_a_bad_request_is_neither_retried_nor_failed_over(
    server: ModelServer, fault: str
) -> None:
    server.plan("first", fault)
    gw = gateway(endpoint(server, "first"), endpoint(server, "second", priority=1))
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    await gw.aclose()
    assert failed.value.kind == "ModelRequestRejected" and not failed.value.retryable
    assert [r.endpoint for r in server.log] == ["first"]
    assert [(a.outcome, a.status) for a in failed.value.attempts] == [("client_error", 400)]


async def test_retry_after_is_honoured_when_no_other_endpoint_is_eligible(
    server: ModelServer,
) -> None:
    server.plan("only", "429:1")
    gw = gateway(endpoint(server, "only"))
    result = await gw.complete(call())
    await gw.aclose()
    limited, ok = result.attempts
    assert (limited.outcome, limited.retry_after_s) == ("rate_limited", 1.0)
    assert ok.outcome == "ok" and ok.endpoint == "only"
    # It waited out the Retry-After instead of hammering the endpoint: two requests only.
    assert len(server.log) == 2


async def test_a_long_retry_after_fails_the_call_for_temporal_to_retry(
    server: ModelServer,
) -> None:
    server.plan("only", "429:60")
    gw = gateway(endpoint(server, "only"), max_retry_after_seconds=2)
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    # The endpoint stays cooling: a second call does not even reach it.
    with pytest.raises(GatewayFailure) as again:
        await gw.complete(call())
    await gw.aclose()
    assert failed.value.retryable and failed.value.kind == "ModelUnavailable"
    assert [a.outcome for a in again.value.attempts] == ["cooling_down"]
    assert len(server.log) == 1


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) == 0.0
    assert retry_after_seconds("soon") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("Fri, 01 Jan 2100 00:00:00 GMT") > 0


# -- circuit breakers -----------------------------------------------------------------


async def test_the_breaker_opens_on_repeated_failure_and_half_opens_to_probe(
    server: ModelServer,
) -> None:
    server.plan("flaky", "500", "500", "500")
    gw = gateway(
        endpoint(server, "flaky"),
        endpoint(server, "steady", priority=1),
        breaker_failures=3,
        breaker_reset_seconds=0.3,
    )
    for _ in range(3):
        assert (await gw.complete(call())).endpoint == "steady"
    flaky = gw.by_name["flaky"].health
    assert _state(flaky) is BreakerState.OPEN
    skipped = await gw.complete(call())
    assert skipped.attempts[0].outcome == "breaker_open" and skipped.endpoint == "steady"
    assert len(server.requests_to("flaky")) == 3  # an open breaker sends nothing
    # After the reset time one probe goes through; it succeeds and closes the breaker.
    flaky.opened_at -= 1.0
    probed = await gw.complete(call())
    await gw.aclose()
    assert probed.endpoint == "flaky" and _state(flaky) is BreakerState.CLOSED
    assert len(server.requests_to("flaky")) == 4


def _state(health: EndpointHealth) -> BreakerState:
    return health.state


def test_breaker_states_with_a_moving_clock() -> None:
    now = [0.0]
    health = EndpointHealth(failures_to_open=2, reset_seconds=10, clock=lambda: now[0])
    health.failed()
    assert _state(health) is BreakerState.CLOSED and health.refusal() == ""
    health.failed()
    assert _state(health) is BreakerState.OPEN and health.refusal() == "breaker_open"
    now[0] = 10.0
    assert health.refusal() == "" and _state(health) is BreakerState.HALF_OPEN
    assert health.refusal() == "breaker_open"  # one probe at a time
    health.failed()  # the probe failed: open again, for another reset period
    assert _state(health) is BreakerState.OPEN and health.refusal() == "breaker_open"
    now[0] = 20.0
    assert health.refusal() == ""
    health.succeeded(5.0)
    assert _state(health) is BreakerState.CLOSED and health.latency_ms == 5.0
    health.failed(retry_after=3)
    assert health.refusal() == "cooling_down"
    now[0] = 23.5
    assert health.refusal() == ""


async def test_auth_failures_open_the_breaker_at_once(server: ModelServer) -> None:
    server.plan("badkey", "401")
    gw = gateway(endpoint(server, "badkey"), endpoint(server, "good", priority=1))
    await gw.complete(call())
    await gw.aclose()
    assert gw.by_name["badkey"].health.state is BreakerState.OPEN


# -- routing --------------------------------------------------------------------------


async def test_confidential_data_never_reaches_a_public_endpoint_even_in_failover(
    server: ModelServer,
) -> None:
    server.plan("onprem", "503")
    gw = gateway(
        endpoint(server, "cloud"),
        endpoint(
            server,
            "onprem",
            private=True,
            data_classes=["internal", "confidential"],
            input_usd_per_million=5.0,
        ),
    )
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call("CONFIDENTIAL payroll", sensitivity="confidential"))
    ok = await gw.complete(call("CONFIDENTIAL payroll", sensitivity="confidential"))
    public = await gw.complete(call("a public question"))
    await gw.aclose()
    assert failed.value.kind == "ModelUnavailable"
    assert {a.endpoint for a in failed.value.attempts} == {"onprem"}
    assert ok.endpoint == "onprem"
    assert public.endpoint == "cloud"  # cheaper, and allowed for internal data
    assert not any("CONFIDENTIAL" in r.prompt for r in server.requests_to("cloud"))


async def test_no_eligible_endpoint_fails_clearly(server: ModelServer) -> None:
    gw = gateway(endpoint(server, "cloud"))
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call(sensitivity="confidential"))
    await gw.aclose()
    assert failed.value.kind == "NoEligibleEndpoint" and not failed.value.retryable
    assert "'confidential'" in failed.value.message and server.log == []


def test_a_public_endpoint_may_not_list_confidential_data() -> None:
    with pytest.raises(ValueError, match="'cloud' is not private but lists data class"):
        EndpointConfig(
            name="cloud", base_url="https://x/v1", model="m", data_classes=["confidential"]
        )
    with pytest.raises(ValueError, match="api_key_env 'sk-123"):
        EndpointConfig(name="c", base_url="https://x/v1", model="m", api_key_env="sk-123 abc")
    with pytest.raises(ValueError, match="two endpoints are named 'a'"):
        ModelsConfig.model_validate(
            {"endpoints": [{"name": "a", "base_url": "http://x", "model": "m"}] * 2}
        )


async def test_routing_by_task_cost_latency_and_preference(server: ModelServer) -> None:
    gw = gateway(
        endpoint(server, "coder", tasks=["code"]),
        endpoint(server, "dear", input_usd_per_million=10.0),
        endpoint(server, "cheap", input_usd_per_million=1.0),
    )
    assert (await gw.complete(call())).endpoint == "cheap"
    assert (await gw.complete(call(task="code"))).endpoint == "coder"
    assert (await gw.complete(call(prefer_endpoint="dear"))).endpoint == "dear"
    assert (await gw.complete(call(exclude_endpoints=["cheap"]))).endpoint == "dear"
    # A latency target demotes an endpoint measured slower than it.
    gw.by_name["cheap"].health.latency_ms = 900.0
    assert (await gw.complete(call(latency_target_ms=100))).endpoint == "dear"
    await gw.aclose()
    assert gw.worst_case_pricing(call()) == Pricing.per_million(10.0, 0.0)


# -- configuration --------------------------------------------------------------------


async def test_endpoints_come_from_tether_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tether.toml").write_text(
        "[models]\n"
        "latency_target_ms = 800\n"
        "[[models.endpoints]]\n"
        'name = "onprem"\n'
        'base_url = "http://127.0.0.1:8000/v1/"\n'
        'model = "qwen"\n'
        "private = true\n"
        'data_classes = ["internal", "confidential"]\n'
        "[[models.endpoints]]\n"
        'name = "cloud"\n'
        'base_url = "https://api.example.com/v1"\n'
        'model = "gpt"\n'
        'api_key_env = "CLOUD_KEY"\n'
        "input_usd_per_million = 0.15\n"
        "output_usd_per_million = 0.6\n"
        "max_concurrency = 4\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TETHER_CONFIG")  # the tether.toml of the working directory
    settings = Settings()
    assert settings.models.latency_target_ms == 800
    onprem, cloud = settings.models.endpoints
    assert onprem.base_url == "http://127.0.0.1:8000/v1" and onprem.private
    assert (cloud.api_key_env, cloud.max_concurrency) == ("CLOUD_KEY", 4)
    # The worker does not start with a key variable that is unset or empty.
    monkeypatch.delenv("CLOUD_KEY", raising=False)
    with pytest.raises(ValueError, match=r"endpoint 'cloud'.*'CLOUD_KEY'.*unset or empty"):
        build_provider(settings)
    monkeypatch.setenv("CLOUD_KEY", "")
    with pytest.raises(ValueError, match="'CLOUD_KEY'"):
        build_provider(settings)
    monkeypatch.setenv("CLOUD_KEY", "sk-test")
    provider = build_provider(settings)
    assert isinstance(provider, Gateway)
    assert provider.worst_case_pricing(call()) == Pricing.per_million(0.15, 0.6)
    await provider.aclose()
    # No endpoint configured: the scripted provider stays the embedded default.
    (tmp_path / "tether.toml").write_text("")
    assert isinstance(build_provider(Settings()), ScriptedProvider)
    (tmp_path / "tether.toml").write_text(
        '[[models.endpoints]]\nname = "x"\nbase_url = "ftp://x"\nmodel = "m"\n'
    )
    with pytest.raises(ValidationError, match="base_url 'ftp://x' is not an http"):
        Settings()


# -- review fixes (issue #5) ----------------------------------------------------------


async def test_a_server_that_gzips_when_allowed_is_read(server: ModelServer) -> None:
    # The body is read raw (the size cap counts wire bytes), so none may be compressed.
    server.plan("a", "gzip")
    gw = gateway(endpoint(server, "a"), max_attempts=1)
    result = await gw.complete(call("squeeze me"))
    await gw.aclose()
    assert Echo.model_validate_json(result.text) == Echo(echo="squeeze me", endpoint="a")


def test_retry_after_is_finite_and_capped() -> None:
    assert retry_after_seconds("inf", 30.0) == 30.0
    assert retry_after_seconds("nan", 30.0) == 30.0
    assert retry_after_seconds("1e308", 30.0) == 30.0
    assert retry_after_seconds("-inf", 30.0) == 0.0
    assert retry_after_seconds("Fri, 01 Jan 9999 00:00:00 GMT", 30.0) == 30.0
    assert retry_after_seconds("12", 30.0) == 12.0


async def test_an_endless_retry_after_cools_the_endpoint_only_until_the_breaker_reset(
    server: ModelServer,
) -> None:
    server.plan("only", "429:inf")
    gw = gateway(endpoint(server, "only"), breaker_reset_seconds=7, max_retry_after_seconds=1)
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    remaining = gw.endpoints[0].health.cooling_remaining()
    await gw.aclose()
    assert [(a.outcome, a.retry_after_s) for a in failed.value.attempts] == [("rate_limited", 7.0)]
    assert 0 < remaining <= 7


async def test_any_other_transport_error_fails_over(server: ModelServer) -> None:
    class Broken(httpx.AsyncHTTPTransport):
        """Endpoint `first` fails the way a bad proxy or header does; the rest are real."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if "/ep/first/" in request.url.path:
                raise httpx.LocalProtocolError("illegal header value")
            return await super().handle_async_request(request)

    client = httpx.AsyncClient(transport=Broken())
    gw = Gateway(
        ModelsConfig(endpoints=[endpoint(server, "first"), endpoint(server, "second", priority=1)]),
        client,
    )
    result = await gw.complete(call())
    await gw.aclose()
    assert result.endpoint == "second"
    assert [(a.endpoint, a.outcome) for a in result.attempts] == [
        ("first", "connect"),
        ("second", "ok"),
    ]
    assert "LocalProtocolError" in result.attempts[0].detail


async def test_a_rejected_request_does_not_count_against_the_endpoint(
    server: ModelServer,
) -> None:
    server.plan("a", "400", "400")
    gw = gateway(endpoint(server, "a"), breaker_failures=1)
    for _ in range(2):
        with pytest.raises(GatewayFailure, match="refused"):
            await gw.complete(call())
    health = gw.endpoints[0].health
    state = health.state
    result = await gw.complete(call())
    await gw.aclose()
    assert state is BreakerState.CLOSED and result.endpoint == "a"
    # Half-open: a rejected probe gives the probe slot back instead of failing it.
    probe = EndpointHealth(1, 5.0, clock=lambda: 100.0)
    probe.state, probe.opened_at = BreakerState.HALF_OPEN, 0.0
    assert probe.refusal() == "" and probe.refusal() == "breaker_open"
    probe.release_probe()
    assert probe.refusal() == ""


async def test_a_call_ends_at_its_deadline_even_mid_attempt(server: ModelServer) -> None:
    server.plan("a", "stall", "stall")
    gw = gateway(endpoint(server, "a", timeout_seconds=20), call_timeout_seconds=0.5)
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    await gw.aclose()
    [attempt] = failed.value.attempts
    assert attempt.outcome == "timeout" and "deadline of 0.5s" in attempt.detail


async def test_the_deadline_bounds_the_wait_for_a_slot(server: ModelServer) -> None:
    server.plan("a", "stall")
    gw = gateway(
        endpoint(server, "a", timeout_seconds=20, max_concurrency=1),
        call_timeout_seconds=0.5,
        breaker_failures=1,
    )
    stuck, waiting = await asyncio.gather(
        gw.complete(call("first")), gw.complete(call("second")), return_exceptions=True
    )
    await gw.aclose()
    assert isinstance(stuck, GatewayFailure) and isinstance(waiting, GatewayFailure)
    details = sorted(a.detail for f in (stuck, waiting) for a in f.attempts)
    assert any("during the attempt" in d for d in details)
    assert any("waiting for a free slot" in d for d in details)
    assert len(server.log) == 1


async def test_a_retry_after_beyond_the_deadline_is_not_waited_out(server: ModelServer) -> None:
    server.plan("only", "429:1")
    gw = gateway(endpoint(server, "only"), call_timeout_seconds=0.5)
    with pytest.raises(GatewayFailure) as failed:
        await gw.complete(call())
    await gw.aclose()
    assert [a.outcome for a in failed.value.attempts] == ["rate_limited"]
    assert len(server.log) == 1


def test_the_call_deadline_must_end_inside_the_activity() -> None:
    with pytest.raises(ValidationError, match=r"call_timeout_seconds = 60\.0 .* 60 s"):
        ModelsConfig(call_timeout_seconds=60)
    assert ModelsConfig(call_timeout_seconds=55).call_timeout_seconds == 55


@pytest.mark.parametrize("data_class", ["Internal", "secret", "PUBLIC"])
def test_data_classes_come_from_a_fixed_set(data_class: str) -> None:
    with pytest.raises(ValidationError, match=rf"'{data_class}'.*public, internal, confidential"):
        EndpointConfig(name="c", base_url="https://x/v1", model="m", data_classes=[data_class])


async def test_confidential_content_never_goes_into_spans(
    server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spans = InMemorySpanExporter()
    tel = telemetry.setup(Settings(telemetry_capture_content=True), span_exporter=spans)
    gw = gateway(endpoint(server, "vault", private=True, data_classes=["internal", "confidential"]))
    try:
        await gw.complete(call("SECRET salary", sensitivity="confidential"))
        await gw.complete(call("open prompt", sensitivity="internal"))
    finally:
        await gw.aclose()
        tel.shutdown()
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    secret, open_ = (dict(s.attributes or {}) for s in chats)
    assert "gen_ai.input.messages" not in secret and "gen_ai.output.messages" not in secret
    assert "SECRET" not in json.dumps({k: str(v) for k, v in secret.items()})
    assert "open prompt" in str(open_["gen_ai.input.messages"])
    assert "open prompt" in str(open_["gen_ai.output.messages"])


def test_connections_are_split_over_small_clients() -> None:
    # One httpx client walks all its connections on every request: the gateway keeps
    # each client small and their connections add up to the endpoints' concurrency.
    for connections, sizes in [(1, [1]), (16, [16]), (20, [10, 10]), (256, [16] * 16)]:
        shards = ClientShards.for_connections(connections)
        assert [c._transport._pool._max_connections for c in shards.clients] == sizes  # type: ignore[attr-defined]
    shards = ClientShards.for_connections(40)
    leased = [shards.lease() for _ in range(7)]
    assert sorted(shards.busy) == [2, 2, 3] and sorted(leased) == [0, 0, 0, 1, 1, 2, 2]
    shards.release(leased[0])
    assert shards.lease() == leased[0]  # the least busy again


async def test_concurrent_calls_spread_over_the_clients_and_give_them_back(
    server: ModelServer,
) -> None:
    server.plan("a", *["latency:200"] * 30, "400")
    gw = gateway(endpoint(server, "a", max_concurrency=40))
    assert len(gw.http.clients) == 3
    calls = [asyncio.create_task(gw.complete(call(f"c{i}"))) for i in range(30)]
    async with asyncio.timeout(10):
        while sum(gw.http.busy) < 30:  # every call has leased a client and is waiting
            await asyncio.sleep(0.01)
    in_flight = list(gw.http.busy)
    results = await asyncio.gather(*calls)
    with pytest.raises(GatewayFailure):  # a failed call gives its client back too
        await gw.complete(call("last"))
    after = list(gw.http.busy)
    await gw.aclose()
    assert sorted(in_flight) == [10, 10, 10] and after == [0, 0, 0]
    assert sorted(json.loads(r.text)["echo"] for r in results) == sorted(f"c{i}" for i in range(30))


async def test_an_endpoints_query_parameters_go_with_every_call(server: ModelServer) -> None:
    # Azure OpenAI takes its API version as a query parameter.
    gw = gateway(endpoint(server, "azure", query={"api-version": "2024-06-01"}))
    for _ in range(2):
        assert (await gw.complete(call())).endpoint == "azure"
    await gw.aclose()
    assert [r.query for r in server.requests_to("azure")] == ["api-version=2024-06-01"] * 2
