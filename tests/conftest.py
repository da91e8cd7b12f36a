"""Fixtures: one real Temporal dev server per session, a fresh database and task queue per test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tether.binaries import temporal_cli
from tether.config import Settings
from worker import Runtime, build_worker


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


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


ROOT = Path(__file__).resolve().parent.parent


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
