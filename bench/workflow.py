"""`python -m bench workflow`: what governance costs a workflow, against plain Temporal.

Measures the throughput (workflows per second) and the per-workflow latency (p50, p99:
from starting the workflow to its result, as a client sees it) of `GovernedSteps` — three
tool steps, each decided by policy in a local activity that records the decision, then
executed by a tool activity that records its outcome — and of `UngovernedSteps`, the same
three steps with governance off. Both run on one real Temporal dev server, against one
worker and one fresh SQLite ledger, at the same concurrency. After a warm-up of both, the
variants alternate in rounds (which goes first alternates too), so drift on the machine
hits both alike. The ratio of governed to ungoverned throughput is what policy costs
inside Tether's step path.

The peer a user would otherwise choose is plain Temporal: `PlainSteps` (`bench.plain`) runs
the same three no-op activities in a plain sandboxed workflow, on a client and worker of
its own in the same process (pydantic converter, Temporal's default sandbox, no plugin),
against the same dev server, in the same alternating rounds. `vs_plain.ratio` is governed
throughput over plain throughput. `history` reads the histories of finished runs of both:
events and bytes per step are what a step adds over a run of no steps (so a 1,000-step run
holds about a thousand times that), beside the events and bytes of a whole measured run.

A third variant runs `GovernedSteps` with telemetry on — Temporal's tracing interceptor on
the starting client and on a second worker of its own, spans batched to an exporter that
counts them, every metric recorded — against the governed variant with telemetry off, in
the same rounds. Its ratio is what observability costs. A fourth runs `GovernedSteps` with
sealed payloads (`bench.sealed`: every payload encrypted by Tether's codec) on a client
and worker of its own; its ratio against the governed variant is what sealing costs.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from pydantic import JsonValue
from rich.console import Group, RenderableType
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.plain import PLAIN, PlainStepsWorkflow, plain_touch
from bench.sealed import CODEC_TARGET_RATIO, sealed_client
from bench.workflows import GovernedStepsWorkflow, StepsInput, UngovernedStepsWorkflow
from tether.core import telemetry
from tether.core.binaries import temporal_cli
from tether.core.config import Settings
from tether.runtime.client import start_task
from tether.runtime.plugin import TetherPlugin
from tether.worker import Runtime, build_worker

BENCH_WORKFLOWS = [GovernedStepsWorkflow, UngovernedStepsWorkflow]
GOVERNED = "GovernedSteps"
UNGOVERNED = "UngovernedSteps"
TARGET_RATIO = 0.6
"""Governed throughput must be at least this share of ungoverned throughput."""
DESIGN_GOAL_RATIO = 0.85
"""The share governance is designed to keep."""
TELEMETRY_TARGET_RATIO = 0.95
"""Governed throughput with tracing and metrics on must be at least this share of off."""
PLAIN_TARGET_RATIO = 0.8
"""Governed throughput must be at least this share of plain Temporal's."""
HISTORY_SAMPLE = 10
"""Finished runs per variant whose histories are read."""
STEPS = StepsInput().steps


class BenchError(RuntimeError):
    """A workflow under measurement did not return what it should."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100] of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Variant:
    """One workflow type's measured runs."""

    workflow: str
    seconds: float = 0.0
    """Wall-clock time of its measured batches, summed over rounds."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from start to result, one per workflow."""
    results: list[int] = field(default_factory=list)
    """What each workflow returned (the number of steps it ran)."""
    traced: bool = False
    """Runs with telemetry on: its own worker and client, both tracing."""
    plain: bool = False
    """Plain Temporal: its own plain client and worker, no Tether."""
    sealed: bool = False
    """Sealed payloads: its own client and worker, with the payload codec."""
    workflow_ids: list[str] = field(default_factory=list)
    """The measured runs, in the order they finished."""

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def figures(self) -> dict[str, JsonValue]:
        return {
            "workflows": len(self.latencies),
            "throughput_per_s": round(self.throughput, 2),
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 2),
        }


@dataclass
class HistoryCost:
    """What a variant's runs leave in Temporal history."""

    events_per_run: float
    bytes_per_run: float
    """Mean over the sampled measured runs (`STEPS` steps each)."""
    empty_events: int
    empty_bytes: int
    """A run of the same workflow with no steps."""

    @property
    def events_per_step(self) -> float:
        return (self.events_per_run - self.empty_events) / STEPS

    @property
    def bytes_per_step(self) -> float:
        return (self.bytes_per_run - self.empty_bytes) / STEPS

    def figures(self) -> dict[str, JsonValue]:
        return {
            "events_per_step": round(self.events_per_step, 2),
            "bytes_per_step": round(self.bytes_per_step, 1),
            "events_per_run": round(self.events_per_run, 2),
            "bytes_per_run": round(self.bytes_per_run, 1),
        }


@dataclass
class WorkflowBench:
    """Both variants, measured in the same run."""

    workflows: int
    concurrency: int
    rounds: int
    governed: Variant
    ungoverned: Variant
    traced: Variant
    plain: Variant
    governed_history: HistoryCost
    plain_history: HistoryCost
    sealed: Variant = field(default_factory=lambda: Variant(GOVERNED, sealed=True))
    spans: int = 0
    """Spans the traced variant exported."""

    @property
    def ratio(self) -> float:
        u = self.ungoverned.throughput
        return self.governed.throughput / u if u else 0.0

    @property
    def telemetry_ratio(self) -> float:
        g = self.governed.throughput
        return self.traced.throughput / g if g else 0.0

    @property
    def codec_ratio(self) -> float:
        g = self.governed.throughput
        return self.sealed.throughput / g if g else 0.0

    @property
    def plain_ratio(self) -> float:
        p = self.plain.throughput
        return self.governed.throughput / p if p else 0.0

    def figures(self) -> dict[str, JsonValue]:
        return {
            "benchmark": "workflow",
            "workflows": self.workflows,
            "concurrency": self.concurrency,
            "rounds": self.rounds,
            "governed": self.governed.figures(),
            "ungoverned": self.ungoverned.figures(),
            "ratio": round(self.ratio, 3),
            "target_ratio": TARGET_RATIO,
            "design_goal_ratio": DESIGN_GOAL_RATIO,
            "vs_plain": {
                "plain": self.plain.figures(),
                "governed": self.governed.figures(),
                "ratio": round(self.plain_ratio, 3),
                "target_ratio": PLAIN_TARGET_RATIO,
            },
            "history": {
                "steps": STEPS,
                "runs_read": HISTORY_SAMPLE,
                "governed": self.governed_history.figures(),
                "plain": self.plain_history.figures(),
            },
            "telemetry": {
                "governed_traced": self.traced.figures(),
                "spans_exported": self.spans,
                "ratio": round(self.telemetry_ratio, 3),
                "target_ratio": TELEMETRY_TARGET_RATIO,
            },
            "payload_codec": {
                "governed_sealed": self.sealed.figures(),
                "ratio": round(self.codec_ratio, 3),
                "target_ratio": CODEC_TARGET_RATIO,
            },
            "machine": {"cpus": os.cpu_count() or 0, "python": platform.python_version()},
        }

    def verdict(self) -> str:
        if self.ratio >= DESIGN_GOAL_RATIO:
            return "meets the design goal"
        return "meets the target" if self.ratio >= TARGET_RATIO else "BELOW THE TARGET"

    def table(self) -> RenderableType:
        table = Table(
            title="Workflow benchmark: governed vs plain Temporal and ungoverned",
            caption=(
                f"{self.workflows} workflows per variant, {self.concurrency} in flight, "
                f"{self.rounds} rounds; {os.cpu_count() or 0} CPUs, Python "
                f"{platform.python_version()}"
            ),
        )
        table.add_column("variant")
        table.add_column("workflows/s", justify="right")
        table.add_column("p50 ms", justify="right")
        table.add_column("p99 ms", justify="right")
        for name, variant in (
            ("plain Temporal", self.plain),
            ("ungoverned", self.ungoverned),
            ("governed", self.governed),
            ("governed, telemetry on", self.traced),
            ("governed, sealed payloads", self.sealed),
        ):
            table.add_row(
                name,
                f"{variant.throughput:.1f}",
                f"{percentile(variant.latencies, 50) * 1000:.1f}",
                f"{percentile(variant.latencies, 99) * 1000:.1f}",
            )
        g, p = self.governed_history, self.plain_history
        summary = Text(
            f"ratio governed/plain Temporal {self.plain_ratio:.3f}: "
            f"{'meets' if self.plain_ratio >= PLAIN_TARGET_RATIO else 'BELOW'} the target "
            f"{PLAIN_TARGET_RATIO}\n"
            f"history per step: governed {g.events_per_step:.1f} events, "
            f"{g.bytes_per_step:.0f} bytes; plain {p.events_per_step:.1f} events, "
            f"{p.bytes_per_step:.0f} bytes\n"
            f"ratio governed/ungoverned {self.ratio:.3f}: {self.verdict()} "
            f"(target {TARGET_RATIO}, design goal {DESIGN_GOAL_RATIO})\n"
            f"ratio telemetry on/off {self.telemetry_ratio:.3f}: "
            f"{'meets' if self.telemetry_ratio >= TELEMETRY_TARGET_RATIO else 'BELOW'} "
            f"the target {TELEMETRY_TARGET_RATIO} ({self.spans} spans exported)\n"
            f"ratio sealed payloads on/off {self.codec_ratio:.3f}: "
            f"{'meets' if self.codec_ratio >= CODEC_TARGET_RATIO else 'BELOW'} "
            f"the target {CODEC_TARGET_RATIO}"
        )
        return Group(table, summary)


Run = tuple[float, int, str]
"""One measured workflow: (latency in seconds, its result, its workflow id)."""


async def _one(
    client: Client, workflow: str, task_queue: str, inp: StepsInput | None = None
) -> Run:
    """Start one workflow and wait for its result. Tether's variants start as an author's
    code does (`tether.start_task`), the plain one with the client's own call."""
    start = time.perf_counter()
    workflow_id = f"bench-{workflow}-{uuid.uuid4().hex[:12]}"
    if workflow == PLAIN:
        result = await client.execute_workflow(
            PlainStepsWorkflow.run, inp or StepsInput(), id=workflow_id, task_queue=task_queue
        )
        return time.perf_counter() - start, result, workflow_id
    handle = await start_task(
        client,
        workflow,
        inp or StepsInput(),
        workflow_id=workflow_id,
        task_queue=task_queue,
        started_by="bench",
        result_type=int,
    )
    result = await handle.result()
    return time.perf_counter() - start, result, workflow_id


async def _batch(
    client: Client,
    variant: Variant,
    task_queue: str,
    count: int,
    concurrency: int,
    progress: tuple[Progress, TaskID] | None,
) -> tuple[float, list[Run]]:
    """Run `count` workflows, `concurrency` at a time: (wall-clock seconds, runs)."""
    gate = asyncio.Semaphore(concurrency)

    async def run() -> Run:
        async with gate:
            measured = await _one(client, variant.workflow, task_queue)
        if progress is not None:
            progress[0].advance(progress[1])
        return measured

    start = time.perf_counter()
    runs = await asyncio.gather(*(run() for _ in range(count)))
    return time.perf_counter() - start, list(runs)


async def history_size(client: Client, workflow_id: str) -> tuple[int, int]:
    """(events, bytes) of a finished run's history, bytes as Temporal stores each event."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events), sum(event.ByteSize() for event in history.events)


async def history_cost(
    client: Client, variant: Variant, task_queue: str, sample: int = HISTORY_SAMPLE
) -> HistoryCost:
    """The histories of `variant`'s last `sample` measured runs, and of one run of no steps."""
    ids = variant.workflow_ids[-sample:]
    sizes = [await history_size(client, workflow_id) for workflow_id in ids]
    _, result, empty_id = await _one(client, variant.workflow, task_queue, StepsInput(steps=0))
    if result != 0:
        raise BenchError(f"a {variant.workflow} run of no steps returned {result}, expected 0")
    empty_events, empty_bytes = await history_size(client, empty_id)
    return HistoryCost(
        events_per_run=sum(e for e, _ in sizes) / len(sizes),
        bytes_per_run=sum(b for _, b in sizes) / len(sizes),
        empty_events=empty_events,
        empty_bytes=empty_bytes,
    )


def round_sizes(workflows: int, rounds: int) -> list[int]:
    """`workflows` split over `rounds` as evenly as possible (empty rounds dropped)."""
    sizes = [workflows // rounds + (1 if r < workflows % rounds else 0) for r in range(rounds)]
    return [s for s in sizes if s]


class _CountingExporter(SpanExporter):
    """Receives batched spans like a real exporter and keeps only their number."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


async def measure(
    client: Client,
    settings: Settings,
    workflows: int = 200,
    concurrency: int = 20,
    *,
    rounds: int = 4,
    warmup: int | None = None,
    progress: Progress | None = None,
) -> WorkflowBench:
    """The four variants on `client`, with in-process workers built from `settings` (and
    a plain Temporal client and worker for `PlainSteps`), then their histories.

    `warmup` workflows of each variant run first, unmeasured (default: `concurrency`).
    Raises BenchError if any workflow returns anything but its step count.
    """
    if workflows < 1 or concurrency < 1 or rounds < 1:
        raise ValueError("workflows, concurrency and rounds must be at least 1")
    runtime = Runtime.from_settings(settings)
    governed, ungoverned = Variant(GOVERNED), Variant(UNGOVERNED)
    traced = Variant(GOVERNED, traced=True)
    plain = Variant(PLAIN, plain=True)
    sealed = Variant(GOVERNED, sealed=True)
    variants = (plain, ungoverned, governed, traced, sealed)
    sizes = round_sizes(workflows, rounds)
    warm = concurrency if warmup is None else warmup
    exporter = _CountingExporter()
    tel = telemetry.setup(
        settings, span_exporter=exporter, metric_reader=InMemoryMetricReader(), batch=True
    )
    traced_queue = f"{settings.task_queue}-traced"
    plain_queue = f"{settings.task_queue}-plain"
    sealed_queue = f"{settings.task_queue}-sealed"
    sealing = sealed_client(client, settings, settings.state_dir / "keys")
    plain_client = Client(
        client.service_client, namespace=client.namespace, data_converter=pydantic_data_converter
    )
    try:
        interceptor = tel.interceptor()
        assert interceptor is not None
        config = client.config()
        config["interceptors"] = [interceptor]
        traced_client = Client(**config)
        async with build_worker(
            client, settings, runtime, task_queue=traced_queue, extra_workflows=BENCH_WORKFLOWS
        ):
            telemetry.activate(None)
            async with (
                build_worker(client, settings, runtime, extra_workflows=BENCH_WORKFLOWS),
                build_worker(
                    sealing,
                    settings,
                    runtime,
                    task_queue=sealed_queue,
                    extra_workflows=BENCH_WORKFLOWS,
                ),
                Worker(
                    plain_client,
                    task_queue=plain_queue,
                    workflows=[PlainStepsWorkflow],
                    activities=[plain_touch],
                ),
            ):

                def where(variant: Variant) -> tuple[Client, str]:
                    if variant.plain:
                        return plain_client, plain_queue
                    if variant.traced:
                        return traced_client, traced_queue
                    if variant.sealed:
                        return sealing, sealed_queue
                    return client, settings.task_queue

                async def run_batch(
                    variant: Variant, count: int, bar: tuple[Progress, TaskID] | None
                ) -> tuple[float, list[Run]]:
                    telemetry.activate(tel if variant.traced else None)
                    try:
                        on, queue = where(variant)
                        return await _batch(on, variant, queue, count, concurrency, bar)
                    finally:
                        telemetry.activate(None)

                task = None
                if progress is not None:
                    task = progress.add_task("warm-up", total=len(variants) * warm)
                for variant in variants:
                    if warm:
                        await run_batch(
                            variant,
                            warm,
                            None if progress is None or task is None else (progress, task),
                        )
                if progress is not None:
                    if task is not None:
                        progress.remove_task(task)
                    task = progress.add_task("measuring", total=len(variants) * workflows)
                for r, size in enumerate(sizes):
                    # Each variant goes first, second, third and last in turn.
                    n = r % len(variants)
                    order = variants[n:] + variants[:n]
                    for variant in order if r % 2 == 0 else tuple(reversed(order)):
                        if progress is not None and task is not None:
                            progress.update(
                                task,
                                description=f"round {r + 1}/{len(sizes)} {variant.workflow}"
                                + (" (telemetry on)" if variant.traced else ""),
                            )
                        seconds, runs = await run_batch(
                            variant,
                            size,
                            None if progress is None or task is None else (progress, task),
                        )
                        variant.seconds += seconds
                        variant.latencies.extend(latency for latency, _, _ in runs)
                        variant.results.extend(result for _, result, _ in runs)
                        variant.workflow_ids.extend(workflow_id for _, _, workflow_id in runs)
                if progress is not None and task is not None:
                    progress.update(task, description="reading histories")
                governed_history = await history_cost(client, governed, settings.task_queue)
                plain_history = await history_cost(plain_client, plain, plain_queue)
        tel.flush()
    finally:
        tel.shutdown()
        runtime.ledger.engine.dispose()
    for variant in variants:
        wrong = [r for r in variant.results if r != STEPS]
        if wrong:
            raise BenchError(
                f"{len(wrong)} {variant.workflow} workflows returned {wrong[0]}, expected {STEPS}"
            )
    return WorkflowBench(
        workflows,
        concurrency,
        len(sizes),
        governed,
        ungoverned,
        traced,
        plain,
        governed_history,
        plain_history,
        sealed,
        exporter.count,
    )


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr meanwhile: a child started now prints there.

    The dev server prints its banner to the stdout it inherits; stdout is for the figures.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@asynccontextmanager
async def dev_server() -> AsyncIterator[Client]:
    """A real Temporal dev server (in memory) for the run, and a client of it."""
    with _stdout_to_stderr():
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            plugins=[TetherPlugin()],
            dev_server_log_level="error",
        )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def run_workflow(
    workflows: int = 200,
    concurrency: int = 20,
    *,
    rounds: int = 4,
    client: Client | None = None,
    progress: Progress | None = None,
) -> WorkflowBench:
    """The benchmark on `client`, or on a dev server of its own; fresh ledger and queue."""
    if client is None:
        async with dev_server() as own:
            return await run_workflow(
                workflows, concurrency, rounds=rounds, client=own, progress=progress
            )
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        settings = Settings(
            temporal_address=client.service_client.config.target_host,
            namespace=client.namespace,
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            task_queue=f"bench-{uuid.uuid4().hex[:12]}",
            state_dir=Path(tmp) / "state",
        )
        return await measure(
            client, settings, workflows, concurrency, rounds=rounds, progress=progress
        )
