"""`TetherPlugin`: one Temporal plugin that configures client, worker and replayer alike.

    # A client (what `tether.connect` builds): converter and sandbox, no workflows.
    client = await Client.connect(address, plugins=[TetherPlugin(app, workflows=False)])
    # A worker on that client: `build_worker` adds the workflows and activities.
    worker = build_worker(client, settings, runtime, app=app)
    # Or a worker on a client without the plugin: the worker's plugin does it all.
    worker = Worker(plain_client, task_queue=..., plugins=[TetherPlugin(app, activities=...)])
    replayer = Replayer(workflows=[], plugins=[TetherPlugin(app)])

It sets:
- the data converter on client and replayer (a worker uses its client's): the one they
  were given, with pydantic's payload converter in place of the default one, so every
  payload is a pydantic model while a payload codec or failure converter still applies;
- the workflow sandbox: the runner given (Temporal's default sandbox when none) with
  Tether's non-workflow packages, pydantic and `cryptography` (a native extension that
  cannot be imported twice) passed through, and so are the app's tool modules, so an
  author's workflow module needs no `imports_passed_through()` around them. Workflow
  modules, Tether's own among them, are always imported anew in the sandbox;
- `TetherError` as a workflow failure type: Tether's own errors raised in workflow code
  end the run with a clear message instead of retrying the task forever;
- Tether's own workflows (agent loop, review window) and the app's on worker and
  replayer (unless `workflows=False`), and, on a worker, the activities it is given.

Give it to the client or to the worker, not both: a worker also applies its client's
plugins (and Temporal warns about the same plugin type twice). `build_worker` registers,
by name, the workflows its client's plugin did not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.plugin import SimplePlugin
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from tether.errors import TetherError
from tether.runtime.app import App
from tether.runtime.codec import ChainCodec
from tether.workflows import TETHER_WORKFLOWS

PASSTHROUGH = (
    "tether.errors",
    "tether.core",
    "tether.activities",
    "tether.governance",
    "tether.verification",
    "pydantic",
    "pydantic_core",
    "cryptography",
    "annotated_types",
)
"""Modules every workflow sandbox shares with the worker instead of importing anew: what
workflow code uses of Tether except its workflow modules (`tether.workflows`), which the
sandbox imports anew for each run like any other workflow module."""

PLUGIN_NAME = "tether.TetherPlugin"


def workflow_runner(
    extra_passthrough: Sequence[str] = (), existing: WorkflowRunner | None = None
) -> WorkflowRunner:
    """The sandbox Tether's workers and replayers run workflows in: `existing` (Temporal's
    default sandbox when None) with `PASSTHROUGH` and `extra_passthrough` passed through.
    A runner that is not a sandbox (the author chose to run unsandboxed) is kept as is."""
    modules = sorted({*PASSTHROUGH, *extra_passthrough})
    if existing is None:
        existing = SandboxedWorkflowRunner()
    if not isinstance(existing, SandboxedWorkflowRunner):
        return existing
    return dataclasses.replace(
        existing, restrictions=existing.restrictions.with_passthrough_modules(*modules)
    )


def data_converter(
    existing: DataConverter | None = None, payload_codec: PayloadCodec | None = None
) -> DataConverter:
    """The data converter of every Tether client, worker and replayer: `existing` (the
    default when None) with its payload codec, failure converter and storage, converting
    payloads with pydantic; `payload_codec` is applied after `existing`'s own codec."""
    converter = existing or pydantic_data_converter
    if not issubclass(converter.payload_converter_class, PydanticPayloadConverter):
        converter = dataclasses.replace(converter, payload_converter_class=PydanticPayloadConverter)
    if payload_codec is None or converter.payload_codec is payload_codec:
        return converter
    inner = converter.payload_codec
    failures = converter.failure_converter_class
    return dataclasses.replace(
        converter,
        payload_codec=payload_codec if inner is None else ChainCodec(inner, payload_codec),
        # The default failure converter leaves messages in clear; another one is kept.
        failure_converter_class=(
            DefaultFailureConverterWithEncodedAttributes
            if failures is DefaultFailureConverter
            else failures
        ),
    )


class TetherPlugin(SimplePlugin):
    """Configures a Temporal client, worker or replayer for Tether (see the module)."""

    def __init__(
        self,
        app: App | None = None,
        *,
        activities: Sequence[Callable[..., Any]] = (),
        workflows: bool = True,
        payload_codec: PayloadCodec | None = None,
    ) -> None:
        """`app`: the author's workflows (registered) and tool modules (passed through);
        `activities`: a worker's activities; `workflows=False` registers no workflow (a
        client-only plugin still sets the converter and, for its workers, the sandbox);
        `payload_codec`: a codec every payload passes through (`tether.payload_codec`)."""
        self.payload_codec = payload_codec
        self.app = app or App()
        self.registered: list[type] = (
            _unique([*TETHER_WORKFLOWS, *self.app.workflows]) if workflows else []
        )
        """The workflow classes this plugin registers on a worker or replayer."""
        passthrough = self.app.tool_modules

        def runner(existing: WorkflowRunner | None) -> WorkflowRunner:
            return workflow_runner(passthrough, existing)

        def converter(existing: DataConverter | None) -> DataConverter:
            return data_converter(existing, payload_codec)

        super().__init__(
            PLUGIN_NAME,
            data_converter=converter,
            activities=list(activities) or None,
            workflows=self.registered or None,
            workflow_runner=runner,
            workflow_failure_exception_types=[TetherError],
        )


def _unique(classes: Sequence[type]) -> list[type]:
    seen: list[type] = []
    for cls in classes:
        if cls not in seen:
            seen.append(cls)
    return seen
