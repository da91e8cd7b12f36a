"""The model gateway: route each call to an eligible endpoint, fail over, report every attempt.

Contract:
- Eligibility comes first and is never relaxed: an endpoint receives a call only when it
  lists the call's data class (sensitivity) and serves its task, and it is not excluded.
  Confidential classes are only ever listed by private endpoints (the configuration
  refuses anything else), so failover can never escalate data: with no eligible endpoint
  healthy, the call fails (`ModelUnavailable`) rather than going elsewhere. A repair
  (`same_model_as`) goes only to endpoints serving the model that gave the answer; an
  `alternate` call never to a model that answered already (`exclude_models`).
- Among eligible endpoints the order is `activities.routing.route`'s. Endpoints whose
  breaker is open, or that asked to wait (Retry-After), are skipped and the skip is
  reported.
- On timeout, stall, connection error or reset, 429, 5xx, a garbage, empty, oversized or
  unknown-tool answer the call fails over to the next endpoint; 401/403/404 open that
  endpoint's breaker and fail over; 400 and other 4xx end the call (non-retryable) and
  count no breaker failure (the request is at fault, not the endpoint).
- `call_timeout_seconds` bounds the whole call: each attempt, the wait for a connection
  slot and any Retry-After wait end when it passes.
  After `max_attempts` HTTP attempts, or when every endpoint failed, the call fails
  with `GatewayFailure` and Temporal's retry policy (the one outer loop) decides; a
  `ModelUnavailable` failure says when the first endpoint takes calls again (its breaker
  half-opens) and the task's outage budget, so the workflow can wait for that moment.
- Every attempt, including skips, is in the result (or the failure) as a `ModelAttempt`.

Usage comes from the provider's `usage`; where absent it is estimated (four characters a
token) and the result says so (`tokens_estimated`).
"""

from __future__ import annotations

import asyncio
import functools
import time

import httpx

from tether.activities.breaker import EndpointHealth
from tether.activities.openai_http import AttemptFailed, ClientShards, OpenAIEndpoint, messages
from tether.activities.payloads import (
    ModelAttempt,
    ModelCallInput,
    ModelCallResult,
    UnavailableDetails,
)
from tether.activities.providers import (
    GatewayFailure,
    ModelProvider,
    Pricing,
    Script,
    ScriptedProvider,
    estimate_tokens,
)
from tether.activities.routing import Endpoint, eligible, route
from tether.core import genai, telemetry
from tether.core.config import Settings
from tether.core.gateway_config import PRIVATE_ONLY, ModelsConfig
from tether.errors import ErrorType


class Gateway:
    """A `ModelProvider` over configured OpenAI-compatible endpoints."""

    name = "gateway"

    def __init__(self, config: ModelsConfig, client: httpx.AsyncClient | None = None) -> None:
        if not config.endpoints:
            raise ValueError("the gateway needs at least one [[models.endpoints]] entry")
        self.config = config
        if client is not None:
            self.http = ClientShards([client])
        else:
            self.http = ClientShards.for_connections(
                sum(e.max_concurrency for e in config.endpoints)
            )
        for shard in self.http.clients:  # these clients only: others' URLs stay out
            telemetry.instrument_httpx(shard)
        self.endpoints = [
            Endpoint(
                config=e,
                client=OpenAIEndpoint(e, self.http, config.breaker_reset_seconds),
                health=EndpointHealth(config.breaker_failures, config.breaker_reset_seconds),
                slots=asyncio.Semaphore(e.max_concurrency),
                pricing=Pricing.per_million(e.input_usd_per_million, e.output_usd_per_million),
            )
            for e in config.endpoints
        ]
        self.by_name = {e.name: e for e in self.endpoints}

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- routing -------------------------------------------------------------------------

    def eligible(self, request: ModelCallInput) -> list[Endpoint]:
        """Endpoints that may receive this call at all (`activities.routing.eligible`)."""
        return eligible(self.endpoints, request)

    def route(self, request: ModelCallInput) -> list[tuple[Endpoint, str]]:
        """Eligible endpoints, best first, each with why it ranks there."""
        return route(self.eligible(request), request, self.config.latency_target_ms)

    def worst_case_pricing(self, request: ModelCallInput) -> Pricing:
        """The priciest eligible endpoint's prices: what a budget must reserve."""
        eligible = self.eligible(request) or self.endpoints
        return max(
            (e.pricing for e in eligible),
            key=lambda p: p.usd_per_1k_input + p.usd_per_1k_output,
        )

    # -- the call ------------------------------------------------------------------------

    async def complete(self, request: ModelCallInput) -> ModelCallResult:
        routes = self.route(request)
        attempts: list[ModelAttempt] = []
        if not routes:
            raise GatewayFailure(
                ErrorType.NO_ELIGIBLE_ENDPOINT,
                f"no endpoint may receive a {request.sensitivity!r} call for task "
                f"{request.task!r}"
                + (
                    f" (excluding {', '.join(request.exclude_endpoints + request.exclude_models)})"
                    if request.exclude_endpoints or request.exclude_models
                    else ""
                )
                + (
                    f" (only the model of {request.same_model_as!r})"
                    if request.same_model_as
                    else ""
                )
                + "; list the data class and task on an allowed endpoint in "
                "[[models.endpoints]]",
                attempts,
                retryable=False,
            )
        budget = self.config.max_attempts
        deadline = time.monotonic() + self.config.call_timeout_seconds
        previous = ""
        for round_ in range(2):
            for endpoint, why in routes:
                if budget <= 0 or time.monotonic() > deadline:
                    break
                if round_ and endpoint.health.cooling_remaining() > 0:
                    continue
                refusal = endpoint.health.refusal()
                reason = f"failover after {previous}; {why}" if previous else why
                if refusal:
                    attempts.append(
                        ModelAttempt(
                            endpoint=endpoint.name,
                            reason=reason,
                            outcome=refusal,
                            retry_after_s=round(endpoint.health.cooling_remaining(), 3),
                        )
                    )
                    continue
                budget -= 1
                result = await self._attempt(endpoint, request, reason, attempts, deadline)
                if result is not None:
                    return result
                previous = f"{endpoint.name} {attempts[-1].outcome}"
            if not await self._wait_for_retry_after(routes, budget, deadline):
                break
        refusals = ("breaker_open", "cooling_down")
        raise GatewayFailure(
            ErrorType.MODEL_UNAVAILABLE,
            f"no eligible endpoint answered the {request.task!r} call "
            f"({', '.join(f'{a.endpoint}: {a.outcome}' for a in attempts)}); "
            "the call is retried until the endpoints answer; check their health",
            attempts,
            retryable=True,
            outage=UnavailableDetails(
                retry_in_s=round(min(e.health.available_in() for e, _ in routes), 3),
                outage_budget_s=self.config.outage_budget(request.task),
                refused_only=all(a.outcome in refusals for a in attempts),
                endpoints=[e.name for e, _ in routes],
            ),
        )

    async def _wait_for_retry_after(
        self, routes: list[tuple[Endpoint, str]], budget: int, deadline: float
    ) -> bool:
        """Once every endpoint failed: wait out the shortest acceptable Retry-After, when
        it ends before the call's deadline."""
        if budget <= 0:
            return False
        waits = [
            e.health.cooling_remaining()
            for e, _ in routes
            if 0 < e.health.cooling_remaining() <= self.config.max_retry_after_seconds
        ]
        if not waits or min(waits) >= deadline - time.monotonic():
            return False
        await asyncio.sleep(min(waits))
        return True

    async def _attempt(
        self,
        endpoint: Endpoint,
        request: ModelCallInput,
        reason: str,
        attempts: list[ModelAttempt],
        deadline: float,
    ) -> ModelCallResult | None:
        start = time.perf_counter()
        # A confidential call's content never goes into a span, captured or not.
        content = genai.capturing() and request.sensitivity not in PRIVATE_ONLY
        slot = False
        with genai.model_call(
            endpoint=endpoint.name,
            system="openai",
            request_model=endpoint.config.model,
            server_address=_host(endpoint.config.base_url),
            messages=messages(request) if content else (),
        ) as call:
            try:
                # The call's deadline bounds the wait for a slot and the attempt itself.
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    async with endpoint.slots:
                        slot = True
                        done = await endpoint.client.complete(request)
            except AttemptFailed as failed:
                call.failed(failed.outcome)
                self._failed(endpoint, request, reason, attempts, failed, start)
                return None
            except TimeoutError:
                late = AttemptFailed(
                    "timeout",
                    f"the call's deadline of {self.config.call_timeout_seconds}s passed "
                    + ("during the attempt" if slot else "waiting for a free slot"),
                )
                call.failed(late.outcome)
                self._failed(endpoint, request, reason, attempts, late, start, counts=slot)
                return None
            except BaseException:
                endpoint.health.release_probe()
                raise
            estimated = not done.usage_reported
            input_tokens = done.input_tokens
            output_tokens = done.output_tokens
            if estimated:
                input_tokens = estimate_tokens(request.prompt + request.repair_error)
                output_tokens = estimate_tokens(done.text) if done.text else 1
            cost = endpoint.pricing.cost(input_tokens, output_tokens)
            call.succeeded(
                response_model=endpoint.config.model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                finish_reasons=[done.finish_reason] if done.finish_reason else [],
                cost_usd=cost,
                output=done.text if content else None,
            )
        latency = (time.perf_counter() - start) * 1000
        endpoint.health.succeeded(latency)
        genai.record_breaker_state(endpoint.name, endpoint.health.state.value)
        attempts.append(
            ModelAttempt(
                endpoint=endpoint.name,
                reason=reason,
                outcome="ok",
                status=done.status,
                latency_ms=round(latency, 3),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        )
        return ModelCallResult(
            call_id="",
            provider=self.name,
            model=endpoint.config.model,
            text=done.text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            tokens_estimated=estimated,
            endpoint=endpoint.name,
            attempts=attempts,
            finish_reason=done.finish_reason,
            truncated=done.finish_reason == "length",
            tool_calls=done.tool_calls,
        )

    def _failed(
        self,
        endpoint: Endpoint,
        request: ModelCallInput,
        reason: str,
        attempts: list[ModelAttempt],
        failed: AttemptFailed,
        start: float,
        counts: bool = True,
    ) -> None:
        """Record a failed attempt; raise when the call must not fail over.

        A rejected request (`client_error`) is the request's fault, not the endpoint's:
        it counts no breaker failure (one bad prompt must not take the endpoint away from
        every workflow), and neither does a wait for a slot that the deadline ended."""
        latency = (time.perf_counter() - start) * 1000
        if counts and failed.failover:
            endpoint.health.failed(
                retry_after=failed.retry_after, open_now=failed.outcome == "auth"
            )
        else:
            endpoint.health.release_probe()
        genai.record_breaker_state(endpoint.name, endpoint.health.state.value)
        attempts.append(
            ModelAttempt(
                endpoint=endpoint.name,
                reason=reason,
                outcome=failed.outcome,
                status=failed.status,
                latency_ms=round(latency, 3),
                retry_after_s=failed.retry_after,
                detail=failed.detail[:300],
            )
        )
        if not failed.failover:
            raise GatewayFailure(
                ErrorType.MODEL_REQUEST_REJECTED,
                f"endpoint {endpoint.name!r} refused the {request.task!r} request: "
                f"{failed.detail[:300]}; fix the request (it is not retried)",
                attempts,
                retryable=False,
            ) from None
        genai.record_failover(endpoint.name, failed.outcome)


@functools.lru_cache(maxsize=256)
def _host(base_url: str) -> str:
    return httpx.URL(base_url).host


def build_provider(settings: Settings) -> ModelProvider:
    """The gateway over the configured endpoints; none configured: the scripted provider."""
    if settings.models.endpoints:
        return Gateway(settings.models)
    if settings.model_script is None:
        return ScriptedProvider(Script())
    return ScriptedProvider.from_file(settings.model_script)
