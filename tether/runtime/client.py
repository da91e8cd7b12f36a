"""Connecting to Temporal and starting governed tasks, shared by worker, CLI and tests."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from tether.core.config import Settings
from tether.errors import ConnectError, TetherError
from tether.governance.names import canonical_identity
from tether.runtime.app import App
from tether.runtime.codec import payload_codec
from tether.runtime.plugin import TetherPlugin

T = TypeVar("T")


async def connect(settings: Settings, app: App | None = None) -> Client:
    """A client of `settings`' Temporal, configured by `TetherPlugin` (pydantic payloads,
    sealed when `payload_codec` is on; for a worker built on it, the sandbox passing
    `app`'s tool modules through). The plugin registers no workflows: `build_worker`
    registers Tether's and the app's."""
    codec = payload_codec(settings)
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            plugins=[TetherPlugin(app, workflows=False, payload_codec=codec)],
        )
    except (RPCError, RuntimeError, OSError) as exc:
        raise ConnectError(
            f"cannot reach Temporal at {settings.temporal_address!r} ({exc}); start it with "
            "'tether dev' or set TETHER_TEMPORAL_ADDRESS"
        ) from None


async def start_task(
    client: Client,
    workflow: str,
    arg: BaseModel | None = None,
    *,
    workflow_id: str,
    task_queue: str,
    started_by: str,
    result_type: type[T],
    tenant: str = "default",
) -> WorkflowHandle[Any, T]:
    """Start a governed workflow, recording the human who started it and its tenant;
    `arg` None starts a workflow whose `run` takes no input."""
    # The requester is named one way (`user:Bob` is `user:bob`), so separation of duties
    # compares one spelling; a name with whitespace or control characters is refused.
    started_by = canonical_identity(started_by, "started_by")
    if not tenant.strip():
        raise TetherError(f"tenant {tenant!r} is empty; name one, e.g. 'acme', or leave it out")
    args = [] if arg is None else [arg]
    return await client.start_workflow(
        workflow,
        args=args,
        id=workflow_id,
        task_queue=task_queue,
        memo={"started_by": started_by, "tenant": tenant.strip()},
        result_type=result_type,
    )


def run_client(main: Coroutine[Any, Any, object]) -> NoReturn:
    """Run a short client script's `main()` and end the process with its outcome: exit 0,
    or 1 after printing the traceback of an exception it raised.

    The Temporal SDK's native threads may call into Python while the interpreter shuts
    down, which aborts a finishing process now and then (rc 134, 'PyGILState_Release',
    temporalio/sdk-python#300). This ends the process without that shutdown, after
    flushing output, as Tether's own CLI and worker do:

        async def main() -> None:
            client = await tether.connect(tether.load_settings())
            ...

        tether.run_client(main())
    """
    code = 0
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the script's own failure: shown, then exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
