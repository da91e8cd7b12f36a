"""`python -m bench adapters`: what governing a framework's agent costs per tool call.

The subject is a pydantic-ai agent in an `AgentWorkflow` whose tool calls Tether governs
(`AdapterGoverned`: each call decided by policy in a local activity that records the
decision, the tool activity recording its outcome, each model request recorded as a
`model.call`); the peer is the same agent — the same `FunctionModel`, asking for the same
no-op tool `TOOL_CALLS` times — on pydantic-ai's Temporal integration alone
(`TemporalDurability`, the tool a pydantic-ai activity: `AdapterPlain`). Both run on one
real dev server, one worker, one fresh SQLite ledger, at the same concurrency, in
alternating rounds after a warm-up. The figure is the added p50 latency of a run divided
by its tool calls: what the adapter adds per governed tool call (target ≤ 5 ms).
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import JsonValue
from temporalio.client import Client

from bench.adapter_agents import TOOL_CALLS
from bench.adapter_workflows import AdapterGovernedWorkflow, AdapterPlainWorkflow
from bench.workflow import dev_server, percentile
from tether.core.config import Settings
from tether.worker import Runtime, build_worker

TARGET_ADDED_MS = 5.0
"""The adapter may add at most this much p50 latency per governed tool call."""


async def _round(client: Client, queue: str, workflow: str, runs: int, slots: int) -> list[float]:
    gate = asyncio.Semaphore(slots)

    async def one() -> float:
        async with gate:
            began = time.perf_counter()
            await client.execute_workflow(
                workflow,
                "pay",
                id=f"{workflow}-{uuid.uuid4().hex[:10]}",
                task_queue=queue,
                result_type=str,
            )
            return time.perf_counter() - began

    return list(await asyncio.gather(*(one() for _ in range(runs))))


def _figures(latencies: list[float]) -> dict[str, JsonValue]:
    return {
        "runs": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
    }


async def measure(client: Client, runs: int, concurrency: int, rounds: int) -> dict[str, JsonValue]:
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        settings = Settings(
            temporal_address=client.service_client.config.target_host,
            namespace=client.namespace,
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            task_queue=f"bench-{uuid.uuid4().hex[:12]}",
            state_dir=Path(tmp) / "state",
        )
        runtime = Runtime.from_settings(settings)
        queue = settings.task_queue
        flows = [AdapterGovernedWorkflow, AdapterPlainWorkflow]
        measured: dict[str, list[float]] = {"AdapterGoverned": [], "AdapterPlain": []}
        try:
            async with build_worker(client, settings, runtime, extra_workflows=flows):
                for name in measured:  # warm-up: imports, sandbox, connections
                    await _round(client, queue, name, max(2, concurrency), concurrency)
                per_round = max(1, runs // rounds)
                for r in range(rounds):
                    order = list(measured) if r % 2 == 0 else list(reversed(measured))
                    for name in order:
                        measured[name] += await _round(client, queue, name, per_round, concurrency)
        finally:
            runtime.ledger.engine.dispose()
    governed, plain = measured["AdapterGoverned"], measured["AdapterPlain"]
    added = (percentile(governed, 50) - percentile(plain, 50)) * 1000 / TOOL_CALLS
    return {
        "benchmark": "adapters",
        "framework": "pydantic-ai",
        "tool_calls_per_run": TOOL_CALLS,
        "concurrency": concurrency,
        "rounds": rounds,
        "governed": _figures(governed),
        "plain_temporal": _figures(plain),
        "added_p50_ms_per_tool_call": round(added, 3),
        "target_added_p50_ms": TARGET_ADDED_MS,
        "machine": {"cpus": os.cpu_count() or 0, "python": platform.python_version()},
    }


async def run_adapters(
    runs: int = 100, concurrency: int = 1, rounds: int = 4, client: Client | None = None
) -> dict[str, JsonValue]:
    """The benchmark on `client`, or on a dev server of its own."""
    if client is None:
        async with dev_server() as own:
            return await measure(own, runs, concurrency, rounds)
    return await measure(client, runs, concurrency, rounds)
