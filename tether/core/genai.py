"""Model-call telemetry for the gateway: one span per attempt with the OpenTelemetry GenAI
attributes, and the model metrics (latency by endpoint and model, tokens, cost,
failovers, circuit-breaker state).

    with genai.model_call(endpoint=..., system="openai", request_model=...) as call:
        response = await http.post(...)          # the httpx span is the call's child
        call.succeeded(response_model=..., input_tokens=..., output_tokens=...,
                       finish_reasons=[...], cost_usd=...)

Feeds the active `tether.telemetry.Telemetry`; without one, spans are no-ops and nothing
is recorded. Prompts (`messages`) and the output go into the span only when
`telemetry_capture_content` is on. Activity code only, never workflow code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tether.core.telemetry import Instruments, active

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""Circuit-breaker state as the gauge's value (`activities.breaker.BreakerState`)."""


@dataclass
class ModelCall:
    """One attempt at one endpoint; the gateway fills in what the response said."""

    span: Span
    endpoint: str
    system: str
    request_model: str
    capture_content: bool
    response_model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error_type: str = ""

    def succeeded(
        self,
        *,
        response_model: str,
        input_tokens: int,
        output_tokens: int,
        finish_reasons: Sequence[str] = (),
        cost_usd: float = 0.0,
        response_id: str = "",
        output: str | None = None,
    ) -> None:
        self.response_model = response_model or self.request_model
        self.input_tokens, self.output_tokens, self.cost_usd = input_tokens, output_tokens, cost_usd
        if not self.span.is_recording():
            return
        self.span.set_attributes(
            {
                "gen_ai.response.model": self.response_model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": output_tokens,
                "gen_ai.response.finish_reasons": list(finish_reasons),
                "tether.model.cost_usd": cost_usd,
            }
        )
        if response_id:
            self.span.set_attribute("gen_ai.response.id", response_id)
        if self.capture_content and output is not None:
            self.span.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": output}]}]),
            )

    def failed(self, error_type: str) -> None:
        """The attempt failed (the gateway may fail over): `error_type` names why."""
        self.error_type = error_type
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, error_type))


def capturing() -> bool:
    """Whether prompts and outputs go into spans (`telemetry_capture_content`)."""
    t = active()
    return t is not None and t.capture_content


@contextmanager
def model_call(
    *,
    endpoint: str,
    system: str,
    request_model: str,
    server_address: str = "",
    messages: Sequence[Mapping[str, str]] = (),
    operation: str = "chat",
) -> Iterator[ModelCall]:
    """Span one model attempt (`chat {model}`, GenAI conventions) and record its metrics.

    The httpx request made inside is the span's child. Call `succeeded(...)` or
    `failed(...)` on the yielded object; an exception escaping marks the attempt failed.
    `messages` (role/content) go into the span only when content capture is on.
    """
    t = active()
    tracer = t.tracer if t is not None else trace.NoOpTracer()
    capture = t is not None and t.capture_content
    attributes: dict[str, str] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
        "gen_ai.request.model": request_model,
        "tether.endpoint": endpoint,
    }
    if server_address:
        attributes["server.address"] = server_address
    if capture and messages:
        attributes["gen_ai.input.messages"] = json.dumps(
            [
                {"role": m.get("role", ""), "parts": [{"type": "text", "content": m["content"]}]}
                for m in messages
            ]
        )
    start = time.perf_counter()
    with tracer.start_as_current_span(
        f"{operation} {request_model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        call = ModelCall(span, endpoint, system, request_model, capture)
        try:
            yield call
        except Exception as exc:
            if not call.error_type:
                call.failed(type(exc).__name__)
            raise
        finally:
            if t is not None and t.instruments is not None:
                _record_model_metrics(t.instruments, call, time.perf_counter() - start)


def _record_model_metrics(m: Instruments, call: ModelCall, seconds: float) -> None:
    labels = {
        "gen_ai.system": call.system,
        "gen_ai.request.model": call.request_model,
        "tether.endpoint": call.endpoint,
    }
    m.model_duration.record(
        seconds,
        {**labels, "error.type": call.error_type} if call.error_type else labels,
    )
    if call.input_tokens:
        m.model_tokens.add(call.input_tokens, {**labels, "gen_ai.token.type": "input"})
    if call.output_tokens:
        m.model_tokens.add(call.output_tokens, {**labels, "gen_ai.token.type": "output"})
    if call.cost_usd:
        m.model_cost.add(call.cost_usd, labels)


def record_failover(from_endpoint: str, reason: str) -> None:
    """A call left `from_endpoint` for the next one (timeout, 429, 5xx, connection)."""
    t = active()
    if t is not None and t.instruments is not None:
        t.instruments.failovers.add(1, {"tether.endpoint": from_endpoint, "tether.reason": reason})


def record_breaker_state(endpoint: str, state: str) -> None:
    """The circuit breaker of `endpoint` is now `state` (closed, half_open, open)."""
    t = active()
    if t is None or t.instruments is None:
        return
    if state not in BREAKER_STATES:
        raise ValueError(f"breaker state {state!r} is not one of {', '.join(BREAKER_STATES)}")
    t.instruments.breaker_state.set(BREAKER_STATES[state], {"tether.endpoint": endpoint})
