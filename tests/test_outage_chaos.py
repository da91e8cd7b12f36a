"""Real worker processes against a faulty model server: heartbeats and chaos, scaled for CI.

- A worker SIGKILLed while its model call is in flight: the call's heartbeat stops, so
  Temporal retries it on the next worker after the heartbeat timeout (seconds), not the
  call's 60 s start-to-close timeout.
- Twenty accounts-payable runs while 30% of the model calls fail, both endpoints go down
  for longer than the breakers' reset, and a worker is killed: every run completes, every
  invoice is paid once, the waits are in the ledger, and the ledger verifies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client

from tests.conftest import bank_of, spawn_worker, start_invoice
from tests.model_server import ModelServer
from tests.outage_kit import events, invoice_answers, private_endpoints
from tether.core.config import Settings
from tether.worker import Runtime

RUNS = 20
CHAOS = (
    "429",
    "429:1",
    "500",
    "502",
    "503",
    "reset",
    "stall",
    "invalid_json",
    "empty_choices",
    "schema",
    "latency:200",
)


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    async with ModelServer(stall_seconds=5) as s:
        yield s


def models_env(endpoints: list[dict[str, Any]], **extra: Any) -> dict[str, str]:
    """`TETHER_MODELS` for a worker process: these endpoints, short breaker resets."""
    config = {"endpoints": endpoints, "breaker_reset_seconds": 2, **extra}
    return {"TETHER_MODELS": json.dumps(config)}


async def until(check: Callable[[], bool], what: str, log: Path, tries: int = 600) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never saw {what}:\n{log.read_text()[-4000:]}")


def stop(worker: subprocess.Popen[bytes], how: signal.Signals) -> None:
    worker.send_signal(how)
    worker.wait(timeout=40)


async def test_a_worker_killed_mid_model_call_is_retried_on_its_heartbeat_timeout(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, tmp_path: Path
) -> None:
    [invoice] = invoice_answers(server, "INV-BEAT", 1)
    server.plan("vault", "latency:40000")  # the first call hangs while its worker dies
    env = models_env(private_endpoints(server, "vault", timeout_seconds=45))
    log = tmp_path / "worker.log"
    first = spawn_worker(settings, log, **env)
    try:
        handle = await start_invoice(client, settings, invoice, prefix="beat")
        await until(lambda: bool(server.requests_to("vault")), "the model call", log)
    finally:
        stop(first, signal.SIGKILL)
    second = spawn_worker(settings, log, **env)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        stop(second, signal.SIGINT)
    assert result.status == "paid"
    assert bank_of(runtime).payments(invoice) == 1
    assert len(server.requests_to("vault")) == 2
    # The retried try says why it was retried: the dead worker's heartbeat timed out.
    history = await handle.fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    [started] = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "call_model"
    ]
    assert started.attempt == 2
    timeout = started.last_failure.timeout_failure_info.timeout_type
    assert timeout == TimeoutType.TIMEOUT_TYPE_HEARTBEAT


async def test_chaos_with_an_outage_and_a_killed_worker_pays_every_invoice_once(
    client: Client, settings: Settings, runtime: Runtime, server: ModelServer, tmp_path: Path
) -> None:
    names = ("vault-1", "vault-2")
    for seed, name in enumerate(names):
        server.set_chaos(name, 0.3, CHAOS, seed=seed)
    invoices = invoice_answers(server, "INV-CHAOS", RUNS)
    env = models_env(private_endpoints(server, *names), max_retry_after_seconds=1.5)
    log = tmp_path / "workers.log"
    workers = [spawn_worker(settings, log, **env) for _ in range(2)]
    try:
        handles = [
            await start_invoice(client, settings, inv, prefix="chaos")
            for inv in invoices[: RUNS // 2]
        ]
        # Both endpoints go down; the second half starts into the outage and waits.
        server.outage(*names)
        handles += [
            await start_invoice(client, settings, inv, prefix="chaos")
            for inv in invoices[RUNS // 2 :]
        ]
        await until(
            lambda: len(runtime.ledger.events_of_kind("model.waiting")) >= RUNS // 2,
            "the runs waiting",
            log,
        )
        await asyncio.sleep(4)  # past the breakers' reset: their probes fail too
        server.restore(*names)
        # A worker dies while the runs resume; another takes its place.
        stop(workers[0], signal.SIGKILL)
        workers[0] = spawn_worker(settings, log, **env)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240)
    finally:
        for worker in workers:
            if worker.poll() is None:
                stop(worker, signal.SIGINT)
    assert [r.status for r in results] == ["paid"] * RUNS, log.read_text()[-4000:]
    bank = bank_of(runtime)
    assert bank.payments() == RUNS
    for invoice in invoices:
        assert bank.payments(invoice) == 1
    for handle in handles:
        assert len(events(runtime, handle.id, "tool.executed")) == 1
    waits = runtime.ledger.events_of_kind("model.waiting")
    assert {w.outcome for w in waits} == {"waiting", "resumed"}
    assert sum(w.outcome == "waiting" for w in waits) == sum(w.outcome == "resumed" for w in waits)
    # The chaos really happened, in many forms, beside the outage.
    injected = {r.fault for r in server.log if r.fault not in ("ok", "503")}
    assert len(injected) >= 5, injected
    assert runtime.ledger.verify().ok
