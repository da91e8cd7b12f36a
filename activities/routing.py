"""Routing of the model gateway: which endpoints may take a call, and in which order.

Eligibility comes first and is never relaxed (data class, task, exclusions, the model a
repair must go to); ranking orders the eligible: the preferred one (a repair), then those
that meet the latency target (live, smoothed latency), then the cheapest for this call,
then `priority`, then the fastest. Pure functions over the gateway's endpoints.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tether.activities.breaker import EndpointHealth
from tether.activities.openai_http import OpenAIEndpoint
from tether.activities.payloads import ModelCallInput
from tether.activities.providers import Pricing, estimate_tokens
from tether.core.gateway_config import EndpointConfig


@dataclass
class Endpoint:
    config: EndpointConfig
    client: OpenAIEndpoint
    health: EndpointHealth
    slots: asyncio.Semaphore
    pricing: Pricing

    @property
    def name(self) -> str:
        return self.config.name


def eligible(endpoints: list[Endpoint], request: ModelCallInput) -> list[Endpoint]:
    """Endpoints that may receive this call at all.

    A repair (`same_model_as`) may only go to endpoints serving the model of the endpoint
    that gave the answer (none, when that endpoint is no longer configured); a call never
    goes to an excluded endpoint or model."""
    model = ""
    if request.same_model_as:
        pinned = [e for e in endpoints if e.name == request.same_model_as]
        if not pinned:
            return []
        model = pinned[0].config.model
    return [
        e
        for e in endpoints
        if request.sensitivity in e.config.data_classes
        and (not e.config.tasks or request.task in e.config.tasks)
        and e.name not in request.exclude_endpoints
        and e.config.model not in request.exclude_models
        and (not model or e.config.model == model)
    ]


def route(
    candidates: list[Endpoint], request: ModelCallInput, default_target_ms: int = 0
) -> list[tuple[Endpoint, str]]:
    """`candidates` (the eligible endpoints), best first, each with why it ranks there."""
    target = request.latency_target_ms or default_target_ms
    prompt = estimate_tokens(request.prompt + request.repair_error)

    def key(item: tuple[int, Endpoint]) -> tuple[bool, bool, float, int, float, int]:
        index, e = item
        latency = e.health.latency_ms or 0.0
        return (
            e.name != request.prefer_endpoint,
            bool(target) and latency > target,
            e.pricing.cost(prompt, request.max_output_tokens),
            e.config.priority,
            latency,
            index,
        )

    if len(candidates) == 1:  # the common case of one endpoint per data class: no ranking
        only = candidates[0]
        return [
            (
                only,
                "preferred (same model)"
                if only.name == request.prefer_endpoint
                else "the only eligible endpoint",
            )
        ]
    ranked = sorted(enumerate(candidates), key=key)
    out: list[tuple[Endpoint, str]] = []
    for rank, (_, e) in enumerate(ranked, 1):
        if e.name == request.prefer_endpoint:
            why = "preferred (same model)"
        else:
            cost = e.pricing.cost(prompt, request.max_output_tokens)
            latency = e.health.latency_ms
            why = f"rank {rank}/{len(ranked)}: worst-case ${cost:.6f}" + (
                f", p50~{latency:.1f}ms" if latency is not None else ""
            )
            if target and latency is not None and latency > target:
                why += f", slower than target {target}ms"
        out.append((e, why))
    return out
