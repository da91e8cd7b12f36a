"""`tether run WORKFLOW`: start one of the app's (or Tether's) workflows, and wait for it;
`tether status ID`: what a run is doing now.

The input is JSON validated against the workflow's input type (a pydantic model, or any
type pydantic validates: a dataclass, a `str`). A bad input, an unknown workflow, one that
takes no input, and a taken id are one line each.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from temporalio import workflow as temporal_workflow

from tether.cli.common import _app, _run, _settings, friendly, out
from tether.core.config import Settings
from tether.errors import TetherError

NO_INPUT = "{}"
"""`--input` when it is not given."""
NO_ARGUMENT = object()
"""The input type of a workflow whose `run` takes no argument."""


def workflow_inputs(settings: Settings) -> dict[str, Any]:
    """Each workflow this CLI can start, by name, to its input type (`NO_ARGUMENT`: it
    takes none; `Any`: its argument is not annotated)."""
    from tether.workflows import TETHER_WORKFLOWS

    found: dict[str, Any] = {}
    for cls in [*TETHER_WORKFLOWS, *_app(settings).workflows]:
        defn = temporal_workflow._Definition.must_from_class(cls)
        if defn.name:
            kinds: list[Any] = defn.arg_types or [NO_ARGUMENT]
            found[defn.name] = Any if kinds[0] is None else kinds[0]
    return found


def _argument(workflow: str, kind: Any, text: str) -> Any:
    """The workflow's argument: `--input` validated against its input type."""
    if kind is NO_ARGUMENT:
        if text != NO_INPUT:
            raise TetherError(
                f"workflow {workflow!r} takes no input, but --input {text!r} was given; "
                "leave --input out"
            )
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TetherError(
            f"--input {text!r} is not valid JSON ({exc.msg} at {exc.pos}); quote it for your shell"
        ) from None
    name = getattr(kind, "__name__", str(kind))
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(kind)
        return adapter.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TetherError(
            f"--input does not fit {name}: {first['msg']} at "
            f"{'.'.join(str(p) for p in first['loc']) or 'top level'}"
        ) from None
    except Exception as exc:  # a type pydantic cannot validate: the author's, named
        raise TetherError(
            f"workflow {workflow!r} takes a {name}, which `tether run` cannot build from "
            f"JSON ({type(exc).__name__}); make its input a pydantic model"
        ) from None


@friendly
def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. PayInvoice.")],
    input: Annotated[str, typer.Option("--input", "-i", help="Workflow input as JSON.")] = NO_INPUT,
    as_user: Annotated[
        str, typer.Option("--as", help="The person starting the task.")
    ] = "user:cli",
    workflow_id: Annotated[str | None, typer.Option("--id", help="Workflow id.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result.")] = True,
    tenant: Annotated[
        str, typer.Option(help="The tenant the task runs for (kill switches may stop one).")
    ] = "default",
) -> None:
    """Start a governed workflow."""
    from tether.runtime.client import connect, start_task

    settings = _settings()
    inputs = workflow_inputs(settings)
    if workflow not in inputs:
        raise TetherError(
            f"unknown workflow {workflow!r}; known workflows: {', '.join(sorted(inputs))} "
            "(declare yours in [app] workflows of tether.toml, or pass --app)"
        )
    arg = _argument(workflow, inputs[workflow], input)
    wid = workflow_id or f"{workflow}-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import WorkflowAlreadyStartedError

        client = await connect(settings)
        try:
            handle = await start_task(
                client,
                workflow,
                arg,
                workflow_id=wid,
                task_queue=settings.task_queue,
                started_by=as_user,
                result_type=dict,
                tenant=tenant,
            )
        except WorkflowAlreadyStartedError:
            raise TetherError(
                f"a workflow with id {wid!r} already exists; pick another --id, or see it "
                f"with 'tether audit show {wid}'"
            ) from None
        out.print(f"started {workflow} as {handle.id}")
        if wait:
            try:
                out.print_json(data=await handle.result())
            except WorkflowFailureError as exc:
                cause = exc.cause
                raise TetherError(
                    f"workflow {wid!r} failed: {getattr(cause, 'message', None) or cause}"
                ) from None

    _run(go())


@friendly
def status(
    workflow_id: Annotated[str, typer.Argument(help="The run's workflow id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show a run: Temporal's state, its step, usage, what it waits for (an approval, or an
    outage it rides out: 'waiting for model endpoint since …')."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from tether.runtime.client import connect
    from tether.workflows.agent import AgentStatus

    settings = _settings()

    async def go() -> None:
        client = await connect(settings)
        handle = client.get_workflow_handle(workflow_id)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise TetherError(
                    f"no run {workflow_id!r} in namespace {settings.namespace!r}; list runs "
                    "with 'tether audit search' or check the id"
                ) from None
            raise
        state = described.status.name.lower() if described.status else "unknown"
        found: AgentStatus | None = None
        if described.status is WorkflowExecutionStatus.RUNNING:
            try:
                found = await handle.query("status", result_type=AgentStatus)
            except RPCError:
                found = None  # not a Tether agent workflow, or no worker answers now
        if as_json:
            doc: dict[str, Any] = {"workflow_id": workflow_id, "state": state}
            if found is not None:
                doc.update(found.model_dump(mode="json"))
            out.print_json(data=doc)
            return
        out.print(f"{workflow_id}: {state} ({described.workflow_type})")
        if found is None:
            return
        out.print(f"agent {found.agent}, step {found.step}")
        usage = found.usage
        out.print(
            f"usage: {usage.model_calls} model call(s), "
            f"{usage.input_tokens + usage.output_tokens} tokens, ${usage.cost_usd:.4f}"
        )
        if found.waiting:
            out.print(found.waiting)
        elif found.paused:
            out.print("paused: the agent is over its cap of open approval requests")
        if found.pending is not None:
            p = found.pending
            out.print(
                f"waiting for approval {p.request_id}: {p.action} on {p.resource} "
                f"(role {p.approver_role}, rule {p.rule})"
            )

    _run(go())
