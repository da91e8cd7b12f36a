"""Fixtures: one real Temporal dev server per session, a fresh database and task queue per test."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from ap.bank import Bank
from ap.workflows import InvoiceInput, InvoiceResult
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from tether.adapters import worker_plugins
from tether.core.binaries import temporal_cli
from tether.core.config import Settings
from tether.runtime.app import load_app
from tether.runtime.client import start_task
from tether.runtime.plugin import TetherPlugin
from tether.worker import Runtime, build_worker
from tether.workflows import AgentStatus


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(tmp_path: Path, temporal_env: WorkflowEnvironment) -> Settings:
    target = temporal_env.client.service_client.config.target_host
    return Settings(
        temporal_address=target,
        database_url=f"sqlite:///{tmp_path / 'tether.db'}",
        task_queue=f"tq-{uuid.uuid4().hex[:12]}",
        state_dir=tmp_path / "state",
        approval_key=tmp_path / "keys" / "approval.pem",
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime.from_settings(settings)
    yield rt
    rt.ledger.engine.dispose()


@pytest.fixture
async def worker(client: Client, settings: Settings, runtime: Runtime) -> AsyncIterator[Worker]:
    w = build_worker(client, settings, runtime)
    async with w:
        yield w


def bank_of(runtime: Runtime) -> Bank:
    """The example's demo bank in `runtime`'s database (the worker's tools pay through it)."""
    return Bank(runtime.ledger.engine)


def replayer_for(*workflows: type) -> Replayer:
    """A replayer configured as Tether's workers are (TetherPlugin, and pydantic-ai's
    plugin for the example's pydantic-ai clerk), for the example app of this repository's
    tether.toml, that clerk and `workflows`."""
    from ap.pyai_workflows import PayInvoicePydanticAIWorkflow

    plugin = TetherPlugin(load_app(Settings()).merged([PayInvoicePydanticAIWorkflow, *workflows]))
    return Replayer(workflows=[], plugins=[plugin, *worker_plugins(plugin.registered)])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def start_invoice(
    client: Client,
    settings: Settings,
    invoice: str,
    *,
    started_by: str = "user:bob",
    text: str = "",
    prefix: str = "",
) -> WorkflowHandle[Any, InvoiceResult]:
    """Start the demo's PayInvoice task for `invoice` (its text `Invoice <id>` unless given),
    on `settings`' task queue, as `started_by`; the workflow id is `prefix` (default: the
    invoice) made unique."""
    return await start_task(
        client,
        "PayInvoice",
        InvoiceInput(invoice_id=invoice, text=text or f"Invoice {invoice}"),
        workflow_id=new_id(prefix or invoice),
        task_queue=settings.task_queue,
        started_by=started_by,
        result_type=InvoiceResult,
    )


async def pending_status(handle: WorkflowHandle[Any, Any], tries: int = 400) -> AgentStatus:
    """The run's status once it waits for an approval (its `pending` is set), asked up to
    `tries` times, 50 ms apart."""
    for _ in range(tries):
        status: AgentStatus = await handle.query("status", result_type=AgentStatus)
        if status.pending is not None:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id} never asked for approval")


async def payment_in_flight(runtime: Runtime, invoice: str, log: Path) -> None:
    """Wait until the bank holds the payment of `invoice` (its activity still running when
    the bank settles slowly); `log`, a worker's output, explains a wait that times out."""
    for _ in range(600):
        if bank_of(runtime).payments(invoice) == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no payment of {invoice} began:\n{log.read_text()}")


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "accounts_payable"
"""The accounts-payable example project (its policy, tests and model script)."""

# The tests run this repository's own project (the example app, declared in its
# tether.toml) wherever a test's working directory is, in-process and in subprocesses.
os.environ.setdefault("TETHER_CONFIG", str(ROOT / "tether.toml"))


def free_port() -> int:
    """A loopback TCP port nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_worker(settings: Settings, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`python worker.py` on `settings`' server, task queue and database, with the
    `TETHER_*` variables in `env` on top; its output is appended to `log`."""
    variables = {
        **os.environ,
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
        "TETHER_DATABASE_URL": settings.database_url,
        **env,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
