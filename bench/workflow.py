"""`python -m bench workflow`: governed throughput against the same workflow ungoverned.

One real Temporal dev server, one worker, one SQLite ledger. `GovernedSteps` runs three
tool steps, each decided by policy (a local activity that also records the decision) and
executed by a tool activity that records its outcome; `UngovernedSteps` runs the same
three tool activities with no decision and no records. The variants alternate in rounds
so drift on the machine hits both alike. Reports throughput and latency percentiles of
each and the ratio governed/ungoverned.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import JsonValue
from rich.progress import Progress
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tether.binaries import temporal_cli
from tether.client import start_task
from tether.config import Settings
from worker import Runtime, build_worker
from workflows import StepsInput


async def _one(client: Client, workflow: str, task_queue: str) -> float:
    start = time.perf_counter()
    handle = await start_task(
        client,
        workflow,
        StepsInput(),
        workflow_id=f"bench-{workflow}-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        started_by="bench",
        result_type=int,
    )
    steps = await handle.result()
    if steps != 3:
        raise RuntimeError(f"{workflow} returned {steps}, expected 3")
    return time.perf_counter() - start


async def _batch(
    client: Client, workflow: str, task_queue: str, count: int, concurrency: int, advance: object
) -> tuple[float, list[float]]:
    gate = asyncio.Semaphore(concurrency)

    async def run() -> float:
        async with gate:
            latency = await _one(client, workflow, task_queue)
            if callable(advance):
                advance()
            return latency

    start = time.perf_counter()
    latencies = await asyncio.gather(*(run() for _ in range(count)))
    return time.perf_counter() - start, list(latencies)


def _summary(seconds: float, latencies: list[float]) -> dict[str, JsonValue]:
    ordered = sorted(latencies)
    return {
        "workflows": len(ordered),
        "throughput_per_s": round(len(ordered) / seconds, 2),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def measure(
    client: Client, settings: Settings, workflows: int, concurrency: int, rounds: int = 4
) -> tuple[dict[str, JsonValue], dict[str, list[float]]]:
    """Run both variants on `client` with one in-process worker: figures and latencies (s)."""
    runtime = Runtime.from_settings(settings)
    per_round = max(1, workflows // rounds)
    spent = {"GovernedSteps": 0.0, "UngovernedSteps": 0.0}
    latencies: dict[str, list[float]] = {"GovernedSteps": [], "UngovernedSteps": []}
    try:
        async with build_worker(client, settings, runtime):
            await _batch(
                client, "GovernedSteps", settings.task_queue, concurrency, concurrency, None
            )
            await _batch(
                client, "UngovernedSteps", settings.task_queue, concurrency, concurrency, None
            )
            with Progress(transient=True) as progress:
                task = progress.add_task("workflows", total=2 * per_round * rounds)
                for r in range(rounds):
                    order = ["GovernedSteps", "UngovernedSteps"]
                    for name in order if r % 2 == 0 else order[::-1]:
                        seconds, lat = await _batch(
                            client,
                            name,
                            settings.task_queue,
                            per_round,
                            concurrency,
                            lambda: progress.advance(task),
                        )
                        spent[name] += seconds
                        latencies[name].extend(lat)
    finally:
        runtime.ledger.engine.dispose()
    governed = _summary(spent["GovernedSteps"], latencies["GovernedSteps"])
    ungoverned = _summary(spent["UngovernedSteps"], latencies["UngovernedSteps"])
    g, u = governed["throughput_per_s"], ungoverned["throughput_per_s"]
    assert isinstance(g, float) and isinstance(u, float)
    figures: dict[str, JsonValue] = {
        "benchmark": "workflow",
        "workflows_per_variant": per_round * rounds,
        "concurrency": concurrency,
        "governed": governed,
        "ungoverned": ungoverned,
        "ratio": round(g / u, 3),
        "target_ratio": 0.6,
        "design_goal_ratio": 0.85,
        "machine": {"cpus": os.cpu_count() or 0},
    }
    return figures, latencies


async def run_workflow(
    workflows: int = 200, concurrency: int = 20
) -> tuple[dict[str, JsonValue], dict[str, list[float]]]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                temporal_address=env.client.service_client.config.target_host,
                database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
                task_queue=f"bench-{uuid.uuid4().hex[:8]}",
            )
            return await measure(env.client, settings, workflows, concurrency)
    finally:
        await env.shutdown()
