"""Connecting to Temporal and starting governed tasks, shared by worker, CLI and tests."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from tether.core.config import Settings
from tether.errors import ConnectError, TetherError
from tether.runtime.app import App
from tether.runtime.plugin import TetherPlugin

T = TypeVar("T")


async def connect(settings: Settings, app: App | None = None) -> Client:
    """A client of `settings`' Temporal, configured by `TetherPlugin` (pydantic payloads;
    a worker built on it registers Tether's workflows and `app`'s)."""
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            plugins=[TetherPlugin(app)],
        )
    except (RPCError, RuntimeError, OSError) as exc:
        raise ConnectError(
            f"cannot reach Temporal at {settings.temporal_address!r} ({exc}); start it with "
            "'tether dev' or set TETHER_TEMPORAL_ADDRESS"
        ) from None


async def start_task(
    client: Client,
    workflow: str,
    arg: BaseModel,
    *,
    workflow_id: str,
    task_queue: str,
    started_by: str,
    result_type: type[T],
    tenant: str = "default",
) -> WorkflowHandle[Any, T]:
    """Start a governed workflow, recording the human who started it and its tenant."""
    if not tenant.strip():
        raise TetherError(f"tenant {tenant!r} is empty; name one, e.g. 'acme', or leave it out")
    return await client.start_workflow(
        workflow,
        arg,
        id=workflow_id,
        task_queue=task_queue,
        memo={"started_by": started_by, "tenant": tenant.strip()},
        result_type=result_type,
    )
