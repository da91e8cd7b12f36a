"""`TetherPlugin`: one Temporal plugin that configures client, worker and replayer alike.

    client = await Client.connect(address, plugins=[TetherPlugin()])
    worker = Worker(client, task_queue=..., plugins=[TetherPlugin(activities=...)])
    replayer = Replayer(workflows=[...], plugins=[TetherPlugin(app=app)])

It sets:
- the data converter (pydantic, so every payload is a pydantic model) on client and
  replayer (a worker uses its client's);
- the workflow sandbox: Tether itself, pydantic and `cryptography` (a native extension
  that cannot be imported twice) pass through, and so do the app's tool modules, so an
  author's workflow module needs no `imports_passed_through()` around them;
- `TetherError` as a workflow failure type: Tether's own errors raised in workflow code
  end the run with a clear message instead of retrying the task forever;
- Tether's own workflows (agent loop, review window) and the app's on worker and
  replayer, and, on a worker, the activities it is given (`tether.worker.build_worker`
  builds them from the runtime).

Give it to the client (`tether.connect` does) or to the worker, not both: a worker also
applies its client's plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tether.errors import TetherError
from tether.runtime.app import App
from tether.workflows import TETHER_WORKFLOWS

PASSTHROUGH = ("tether", "pydantic", "pydantic_core", "cryptography", "annotated_types")
"""Modules every workflow sandbox shares with the worker instead of importing anew."""

PLUGIN_NAME = "tether.TetherPlugin"


def workflow_runner(extra_passthrough: Sequence[str] = ()) -> WorkflowRunner:
    """The sandbox Tether's workers and replayers run workflows in."""
    modules = sorted({*PASSTHROUGH, *extra_passthrough})
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def data_converter() -> DataConverter:
    """The data converter of every Tether client, worker and replayer."""
    return pydantic_data_converter


class TetherPlugin(SimplePlugin):
    """Configures a Temporal client, worker or replayer for Tether (see the module)."""

    def __init__(
        self,
        app: App | None = None,
        *,
        activities: Sequence[Callable[..., Any]] = (),
        workflows: bool = True,
    ) -> None:
        """`app`: the author's workflows (registered) and tool modules (passed through);
        `activities`: a worker's activities; `workflows=False` registers no workflow (a
        client-only plugin still sets the converter)."""
        self.app = app or App()
        registered = [*TETHER_WORKFLOWS, *self.app.workflows] if workflows else []
        super().__init__(
            PLUGIN_NAME,
            data_converter=data_converter(),
            activities=list(activities) or None,
            workflows=_unique(registered) or None,
            workflow_runner=workflow_runner(self.app.tool_modules),
            workflow_failure_exception_types=[TetherError],
        )


def _unique(classes: Sequence[type]) -> list[type]:
    seen: list[type] = []
    for cls in classes:
        if cls not in seen:
            seen.append(cls)
    return seen
