"""TetherPlugin on a real dev server: it extends the converter and sandbox it is given,
keeps workflow modules in the sandbox, and a worker registers each workflow once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DataConverter, PayloadCodec
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tests.conftest import new_id
from tests.sandbox_app import PackageTools
from tests.sandbox_app.flows import ClockWorkflow, Echo, EchoWorkflow
from tether.activities.tools import REGISTRY
from tether.core.config import Settings
from tether.runtime.app import App, load_app
from tether.runtime.client import connect, start_task
from tether.runtime.plugin import PASSTHROUGH, TetherPlugin, workflow_runner
from tether.worker import Runtime, build_worker
from tether.workflows import AgentLoopInput, AgentLoopResult, Budget

CODEC_ENCODING = b"binary/tether-test-codec"


class MarkingCodec(PayloadCodec):
    """Wraps every payload in one of its own encoding, and counts what it encoded."""

    def __init__(self) -> None:
        self.encoded = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.encoded += len(payloads)
        return [
            Payload(metadata={"encoding": CODEC_ENCODING}, data=p.SerializeToString())
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded: list[Payload] = []
        for p in payloads:
            if p.metadata.get("encoding") == CODEC_ENCODING:
                inner = Payload()
                inner.ParseFromString(p.data)
                decoded.append(inner)
            else:
                decoded.append(p)
        return decoded


def _target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _echo(client: Client, settings: Settings, text: str) -> WorkflowHandle[Any, Echo]:
    handle = await client.start_workflow(
        EchoWorkflow.run, Echo(text=text), id=new_id("echo"), task_queue=settings.task_queue
    )
    assert await asyncio.wait_for(handle.result(), 60) == Echo(text=f"echo: {text}")
    return handle


async def test_a_payload_codec_on_the_client_still_encodes_payloads(
    temporal_env: WorkflowEnvironment, settings: Settings, runtime: Runtime
) -> None:
    codec = MarkingCodec()
    client = await Client.connect(
        _target(temporal_env),
        data_converter=DataConverter(payload_codec=codec),
        plugins=[TetherPlugin(workflows=False)],
    )
    assert client.data_converter.payload_codec is codec
    async with build_worker(client, settings, runtime, app=App(workflows=[EchoWorkflow])):
        handle = await _echo(client, settings, "hi")
    assert codec.encoded >= 2  # the input (client) and the result (worker)
    history = await handle.fetch_history()
    [stored] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert stored.metadata["encoding"] == CODEC_ENCODING
    inner = Payload()
    inner.ParseFromString(stored.data)
    assert json.loads(inner.data) == {"text": "hi"}  # pydantic JSON under the codec
    # A replayer given the codec decodes that history; one without it could not.
    replayer = Replayer(
        workflows=[],
        data_converter=DataConverter(payload_codec=codec),
        plugins=[TetherPlugin(App(workflows=[EchoWorkflow]))],
    )
    assert replayer.config(active_config=True)["data_converter"].payload_codec is codec
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None


def test_the_plugin_extends_the_sandbox_it_is_given() -> None:
    own = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("authors_own_module")
    )
    replayer = Replayer(workflows=[], workflow_runner=own, plugins=[TetherPlugin()])
    runner = replayer.config(active_config=True)["workflow_runner"]
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert {"authors_own_module", *PASSTHROUGH} <= runner.restrictions.passthrough_modules
    unsandboxed = UnsandboxedWorkflowRunner()
    assert workflow_runner(existing=unsandboxed) is unsandboxed


def test_tethers_workflow_modules_are_not_passed_through() -> None:
    runner = workflow_runner()
    assert isinstance(runner, SandboxedWorkflowRunner)
    passed = runner.restrictions.passthrough_modules
    for module in ("tether", "tether.workflows", "tether.workflows.agent_loop"):
        assert not any(module == m or module.startswith(f"{m}.") for m in passed), module
    assert {"tether.errors", "tether.activities", "tether.governance"} <= passed


async def _task_failure(handle: WorkflowHandle[Any, Any]) -> str:
    """The message of the run's first failed workflow task, once there is one."""
    for _ in range(200):
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                raise AssertionError(f"{handle.id} completed: its workflow left the sandbox")
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                return str(event.workflow_task_failed_event_attributes.failure.message)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id}: no workflow task failed")


async def test_a_workflow_below_a_tool_package_stays_in_the_sandbox(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    app = App(workflows=[ClockWorkflow], tools=[PackageTools])
    assert app.tool_modules == []  # its package holds a workflow module: not passed through
    async with build_worker(client, settings, runtime, app=app):
        handle = await client.start_workflow(
            ClockWorkflow.run, id=new_id("clock"), task_queue=settings.task_queue
        )
        message = await _task_failure(handle)
        await handle.terminate()
    assert "Cannot access datetime.datetime.now" in message, message


async def test_tools_of_a_workflow_module_keep_the_workers_registration(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    names = ("sandbox_flow_note", "sandbox_package_note")
    before = {name: REGISTRY[name] for name in names}
    async with build_worker(client, settings, runtime, app=App(workflows=[EchoWorkflow])):
        await _echo(client, settings, "again")  # the sandbox imported both modules anew
    assert {name: REGISTRY[name] for name in names} == before
    assert all(REGISTRY[name] is spec for name, spec in before.items())


async def _agent_loop(client: Client, settings: Settings) -> AgentLoopResult:
    handle = await start_task(
        client,
        "AgentLoop",
        AgentLoopInput(
            goal="Pay invoice INV-2001 from acme-office",
            agent="agent:ap-clerk",
            tools=["pay_vendor"],
            budget=Budget(max_steps=3),
        ),
        workflow_id=new_id("loop"),
        task_queue=settings.task_queue,
        started_by="user:carol",
        result_type=AgentLoopResult,
    )
    return await asyncio.wait_for(handle.result(), 60)


async def test_a_worker_on_a_client_whose_plugin_registers_no_workflows_registers_them(
    temporal_env: WorkflowEnvironment, settings: Settings, runtime: Runtime
) -> None:
    client = await Client.connect(_target(temporal_env), plugins=[TetherPlugin(workflows=False)])
    async with build_worker(client, settings, runtime, extra_workflows=[EchoWorkflow]):
        await _echo(client, settings, "plain")
        assert (await _agent_loop(client, settings)).status == "budget_exhausted"


async def test_connect_leaves_the_workflows_to_the_worker(
    settings: Settings, runtime: Runtime
) -> None:
    client = await connect(settings, App(workflows=[EchoWorkflow]))
    [plugin] = client.config()["plugins"]
    assert isinstance(plugin, TetherPlugin) and plugin.registered == []
    async with build_worker(client, settings, runtime, extra_workflows=[EchoWorkflow]):
        await _echo(client, settings, "connected")


async def test_workflows_a_client_plugin_registered_are_not_registered_again(
    temporal_env: WorkflowEnvironment, settings: Settings, runtime: Runtime
) -> None:
    app = load_app(settings).merged([EchoWorkflow])  # the example app's tools, for the loop
    client = await Client.connect(_target(temporal_env), plugins=[TetherPlugin(app)])
    # Temporal raises on a workflow name registered twice, and warns (an error here) on a
    # second TetherPlugin beside the client's.
    async with build_worker(client, settings, runtime, app=app):
        await _echo(client, settings, "both")
        assert (await _agent_loop(client, settings)).status == "budget_exhausted"
