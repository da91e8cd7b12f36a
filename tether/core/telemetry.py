"""OpenTelemetry for Tether: tracer and meter providers from settings, the instruments,
and the helpers the worker's code calls to feed them.

`setup(settings)` builds a `Telemetry` (providers, exporters, instruments) and makes it
the active one; `shutdown()` flushes and stops it. Every helper here is a no-op while no
telemetry is active (the default: `telemetry_exporter = "none"`), so library code calls
them unconditionally and pays one attribute check when telemetry is off.

Traces: Temporal's `TracingInterceptor` (from `Telemetry.interceptor()`) spans workflow
→ activity; httpx instrumentation spans each HTTP call; `tether.genai.model_call()`
spans one model attempt with the OpenTelemetry GenAI attributes; `record_decision()`
puts a governed step's agent, action, resource, tier, rule and policy version on the
activity's span.
Prompts and outputs go into spans only with `telemetry_capture_content = true`.

Never call these from workflow code: workflows stay deterministic, and the interceptor
makes their spans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, ParamSpec, Protocol, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    Observation,
    UpDownCounter,
    _Gauge,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

if TYPE_CHECKING:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    from tether.core.config import Settings

SCOPE = "tether"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Instruments:
    """Every metric Tether records; names follow OpenTelemetry conventions."""

    model_duration: Histogram
    model_tokens: Counter
    model_cost: Counter
    failovers: Counter
    breaker_state: _Gauge
    decisions: Counter
    denials: Counter
    approval_wait: Histogram
    ledger_append: Histogram
    runs_waiting: UpDownCounter

    @classmethod
    def create(cls, meter: Meter) -> Instruments:
        return cls(
            model_duration=meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="Model call latency, by endpoint and model.",
            ),
            model_tokens=meter.create_counter(
                "tether.model.tokens", unit="{token}", description="Tokens used, by type."
            ),
            model_cost=meter.create_counter(
                "tether.model.cost", unit="USD", description="Model spend (list prices)."
            ),
            failovers=meter.create_counter(
                "tether.model.failovers", description="Calls moved to the next endpoint."
            ),
            breaker_state=meter.create_gauge(
                "tether.model.breaker.state",
                description="Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open.",
            ),
            decisions=meter.create_counter(
                "tether.decisions", description="Policy decisions on governed steps, by tier."
            ),
            denials=meter.create_counter(
                "tether.denials",
                description="Denied steps: attempts outside the agent's autonomy boundary.",
            ),
            approval_wait=meter.create_histogram(
                "tether.approval.wait", unit="s", description="Request to decision, per stage."
            ),
            ledger_append=meter.create_histogram(
                "tether.ledger.append.duration", unit="s", description="One ledger append."
            ),
            runs_waiting=meter.create_up_down_counter(
                "tether.runs.waiting",
                unit="{run}",
                description="Runs waiting out an outage now, by what they wait for "
                "(model, tool); summed over the workers that recorded the waits.",
            ),
        )


@dataclass
class Telemetry:
    """What `setup` built: providers to flush and stop, instruments, switches."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    instruments: Instruments | None
    capture_content: bool = False
    _callbacks: list[Callable[[CallbackOptions], Iterable[Observation]]] = field(
        default_factory=list
    )

    @property
    def tracer(self) -> trace.Tracer:
        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer(SCOPE)

    def interceptor(self) -> TracingInterceptor | None:
        """Temporal's tracing interceptor on this tracer (None when tracing is off).

        Every workflow run gets one trace, even when its starter did not trace (the CLI,
        a schedule): see `tether.tracing`.
        """
        if self.tracer_provider is None:
            return None
        from tether.core.tracing import RunTracingInterceptor

        return RunTracingInterceptor(self.tracer)

    def watch_kill_switches(self, engaged: Callable[[], Iterable[str]]) -> None:
        """Export engaged kill switches (by scope kind) as a gauge, read at each export;
        `engaged` lists the scope kind of each engaged switch."""
        if self.meter_provider is None:
            return

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            counts: dict[str, int] = {"global": 0, "tenant": 0, "agent": 0, "action": 0}
            for kind in engaged():
                counts[kind] = counts.get(kind, 0) + 1
            return [Observation(n, {"tether.kill.scope": kind}) for kind, n in counts.items()]

        self._callbacks.append(observe)
        self.meter_provider.get_meter(SCOPE).create_observable_gauge(
            "tether.kill_switches.engaged",
            callbacks=[observe],
            description="Engaged kill switches, by scope kind.",
        )

    def flush(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def shutdown(self) -> None:
        global _active
        if _active is self:
            _active = None
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


_active: Telemetry | None = None


def active() -> Telemetry | None:
    """The telemetry helpers feed now, if any."""
    return _active


def activate(telemetry: Telemetry | None) -> None:
    """Make `telemetry` the one the helpers feed (None: helpers do nothing)."""
    global _active
    _active = telemetry


def setup(
    settings: Settings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    batch: bool = False,
) -> Telemetry:
    """Providers and instruments from settings, made active.

    `span_exporter` and `metric_reader` (tests, benchmarks) replace the configured
    exporter: spans go out synchronously (in the background with `batch`), metrics when
    the reader is collected.
    """
    resource = Resource.create(
        {"service.name": settings.telemetry_service_name, "service.namespace": "tether"}
    )
    tracer_provider = meter_provider = None
    if span_exporter is not None or settings.telemetry_exporter != "none":
        tracer_provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(settings.telemetry_sample_ratio)),
        )
        if span_exporter is not None:
            processor = BatchSpanProcessor if batch else SimpleSpanProcessor
            tracer_provider.add_span_processor(processor(span_exporter))
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings)))
    if metric_reader is None and settings.telemetry_exporter != "none":
        metric_reader = PeriodicExportingMetricReader(
            _metric_exporter(settings),
            export_interval_millis=settings.telemetry_metric_interval_seconds * 1000,
        )
    if metric_reader is not None:
        meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    telemetry = Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        instruments=(
            Instruments.create(meter_provider.get_meter(SCOPE)) if meter_provider else None
        ),
        capture_content=settings.telemetry_capture_content,
    )
    activate(telemetry)
    return telemetry


def _span_exporter(settings: Settings) -> SpanExporter:
    if settings.telemetry_exporter == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{settings.telemetry_otlp_endpoint.rstrip('/')}/v1/traces")


def _metric_exporter(settings: Settings) -> MetricExporter:
    if settings.telemetry_exporter == "console":
        return ConsoleMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=f"{settings.telemetry_otlp_endpoint.rstrip('/')}/v1/metrics")


def instrument_httpx(client: httpx.AsyncClient | httpx.Client) -> None:
    """Span every request `client` makes (the model gateway's), as a child of the current
    span. Only clients named here are traced: a webhook URL (which may carry a token in
    its path) never reaches a span."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if _active is None or _active.tracer_provider is None:
        return
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=_active.tracer_provider)


# --- governed steps ----------------------------------------------------------------


class DecisionFacts(Protocol):
    """What telemetry reads of a policy decision (`tether.governance.types.Decision`)."""

    @property
    def tier(self) -> StrEnum: ...
    @property
    def rule(self) -> str: ...
    @property
    def policy_version(self) -> str: ...


def record_decision(agent: str, action: str, resource: str, decision: DecisionFacts) -> None:
    """A policy decision: attributes on the current (activity) span, tier and denial counts."""
    t = _active
    if t is None:
        return
    tier = str(decision.tier.value)
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {
                "tether.agent": agent,
                "tether.action": action,
                "tether.resource": resource,
                "tether.tier": tier,
                "tether.rule": decision.rule,
                "tether.policy_version": decision.policy_version,
            }
        )
    if t.instruments is not None:
        t.instruments.decisions.add(1, {"tether.tier": tier, "tether.agent": agent})
        if tier == "deny":
            t.instruments.denials.add(
                1, {"tether.agent": agent, "tether.action": action, "tether.rule": decision.rule}
            )


def approval_wait(seconds: float, outcome: str, agent: str) -> None:
    """How long one approval stage waited for its decision."""
    t = _active
    if t is not None and t.instruments is not None:
        t.instruments.approval_wait.record(
            max(seconds, 0.0), {"tether.outcome": outcome, "tether.agent": agent}
        )


def run_waiting(kind: str, delta: int) -> None:
    """A run began (`delta` 1) or ended (-1) waiting out an outage of a `kind` call."""
    t = _active
    if t is not None and t.instruments is not None:
        t.instruments.runs_waiting.add(delta, {"tether.waiting.kind": kind})


def ledger_appended(seconds: float) -> None:
    """One ledger append took `seconds`: the `Ledger(on_append=...)` hook of the worker."""
    t = _active
    if t is not None and t.instruments is not None:
        t.instruments.ledger_append.record(seconds)


# --- logs --------------------------------------------------------------------------


class _TraceIds(logging.Filter):
    """Adds the current trace and span ids to each record (empty outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True


def configure_logging(level: str, fmt: Literal["text", "json"]) -> None:
    """Root logging: readable lines, or one JSON object per line with trace ids."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{trace_id}{span_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level"},
                timestamp=False,
            )
        )
        handler.addFilter(_TraceIds())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
