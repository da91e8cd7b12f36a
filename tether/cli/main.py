"""`tether`: the command line. Thin: every command calls the library the tests call.

Errors Tether raises on purpose print as one line naming the value and what to do, and
exit 2; a check that fails (audit verify) exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, get_type_hints

import typer
from pydantic import BaseModel, ValidationError
from temporalio import workflow as temporal_workflow

from tether.cli.audit import audit_app
from tether.cli.common import (
    APP_REF,
    _app,
    _run,
    _settings,
    _stores,
    emit_table,
    err,
    friendly,
    out,
)
from tether.cli.kill import budget_app, kill_app
from tether.cli.policy import add_policy_commands
from tether.cli.review import review_app
from tether.console.cli import console_app
from tether.core.config import Settings
from tether.errors import TetherError
from tether.governance.policy import PolicyEngine
from tether.governance.reload import configured_engine
from tether.governance.types import DecisionRequest

app = typer.Typer(
    help="Tether: governed, durable, evidenced AI agents on Temporal.", no_args_is_help=True
)
approvals_app = typer.Typer(help="Decide pending approval requests.", no_args_is_help=True)
policy_app = typer.Typer(help="Inspect, lint, test and change the policy.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
app.add_typer(policy_app, name="policy")
add_policy_commands(policy_app)
app.add_typer(audit_app, name="audit")
app.add_typer(review_app, name="review")
app.add_typer(kill_app, name="kill")
app.add_typer(budget_app, name="budget")
app.add_typer(console_app, name="console")


@app.callback()
def _options(
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="The app to serve: 'module:attribute' naming a tether.App (default: "
            "the app section of tether.toml).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The configuration file (default: ./tether.toml)."),
    ] = None,
) -> None:
    """Tether: governed, durable, evidenced AI agents on Temporal."""
    if config is not None:
        if not config.is_file():
            err.print(
                f"error: --config {str(config)!r} is not a file", markup=False, highlight=False
            )
            raise typer.Exit(2)
        os.environ["TETHER_CONFIG"] = str(config)
    APP_REF.clear()
    if app_ref:
        APP_REF.append(app_ref)


# -- stack ------------------------------------------------------------------------------


@app.command()
@friendly
def init(
    directory: Annotated[Path, typer.Argument(help="The new project's folder.")],
    force: Annotated[bool, typer.Option(help="Write into a folder that is not empty.")] = False,
) -> None:
    """Create a new project: a refund agent, its policy, model script and tests."""
    from tether.cli.init import scaffold

    files = scaffold(directory, force=force)
    out.print(
        f"created {len(files)} files in {directory}; next: cd {directory} && pytest",
        markup=False,
        highlight=False,
    )


@app.command()
@friendly
def dev() -> None:
    """Start the Temporal dev server (state under .tether/), a worker and the console."""
    from tether.cli.dev import run_dev

    app_args = ["--app", APP_REF[0]] if APP_REF else []
    raise typer.Exit(run_dev(_settings(), out, app_args))


@app.command()
@friendly
def worker() -> None:
    """Run a worker for the app in the foreground (Ctrl-C or SIGTERM drains and stops)."""
    from tether.worker import run_worker

    settings = _settings()
    _run(run_worker(settings, _app(settings)))


@app.command()
@friendly
def demo() -> None:
    """Run the app's demo scenario (`[app] demo`) on embedded defaults."""
    from tether.runtime.app import import_ref

    settings = _settings()
    if not settings.app.demo:
        raise TetherError(
            "this app declares no demo; set demo = 'module:function' in the app section of "
            "tether.toml (an async function taking settings, app and a Rich console)"
        )
    run_demo = import_ref(settings.app.demo, "demo", [str(p) for p in settings.app.path])
    raise typer.Exit(_run(run_demo(settings, _app(settings), out)))


def _workflow_inputs(settings: Settings) -> dict[str, type[BaseModel]]:
    from tether.workflows import TETHER_WORKFLOWS

    found: dict[str, type[BaseModel]] = {}
    for cls in [*TETHER_WORKFLOWS, *_app(settings).workflows]:
        defn = temporal_workflow._Definition.must_from_class(cls)
        hints = get_type_hints(cls.run)  # type: ignore[attr-defined]
        inputs = [t for k, t in hints.items() if k != "return"]
        if defn.name and inputs:
            found[defn.name] = inputs[0]
    return found


@app.command()
@friendly
def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, e.g. PayInvoice.")],
    input: Annotated[str, typer.Option("--input", "-i", help="Workflow input as JSON.")] = "{}",
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
    inputs = _workflow_inputs(settings)
    if workflow not in inputs:
        raise TetherError(
            f"unknown workflow {workflow!r}; known workflows: {', '.join(sorted(inputs))} "
            "(declare yours in [app] workflows of tether.toml, or pass --app)"
        )
    try:
        raw = json.loads(input)
    except json.JSONDecodeError as exc:
        raise TetherError(
            f"--input {input!r} is not valid JSON ({exc.msg} at {exc.pos}); quote it for your shell"
        ) from None
    try:
        arg = inputs[workflow].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TetherError(
            f"--input does not fit {inputs[workflow].__name__}: {first['msg']} at "
            f"{'.'.join(str(p) for p in first['loc']) or 'top level'}"
        ) from None
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
        out.print(f"started {workflow} as {handle.id}", markup=False, highlight=False)
        if wait:
            try:
                out.print_json(data=await handle.result())
            except WorkflowFailureError as exc:
                cause = exc.cause
                raise TetherError(
                    f"workflow {wid!r} failed: {getattr(cause, 'message', None) or cause}"
                ) from None

    _run(go())


# -- approvals --------------------------------------------------------------------------


@approvals_app.command("list")
@friendly
def approvals_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List open approval requests."""
    _, store = _stores(_settings())
    pending = store.list()
    if as_json:
        out.print_json(data=[p.model_dump(mode="json") for p in pending])
        return
    emit_table(
        f"{len(pending)} open approval request(s)",
        (
            "id",
            "workflow",
            "action",
            "resource",
            "arguments",
            "why",
            "asked by",
            "approvers",
            "deadline",
        ),
        [
            (
                p.request_id,
                p.workflow_id,
                p.action,
                p.resource,
                p.args_summary,
                p.rule,
                f"{p.agent} for {p.requested_by}",
                p.approver_role,
                p.deadline.isoformat(timespec="seconds") if p.deadline else "-",
            )
            for p in pending
        ],
        ids=("id", "workflow"),
    )


def _decide(request_id: str, as_user: str, approve: bool, comment: str) -> None:
    from tether.runtime.approvals import decide_request, signing_key
    from tether.runtime.client import connect

    settings = _settings()
    ledger, store = _stores(settings)
    store.get(request_id)  # an unknown id fails here, before any connection

    async def go() -> None:
        client = await connect(settings)
        outcome = await decide_request(
            client,
            store,
            ledger,
            request_id,
            approver=as_user,
            approve=approve,
            comment=comment,
            key=signing_key(settings),
        )
        out.print(
            f"{outcome.request_id}: {outcome.status.value} by {outcome.approver}",
            markup=False,
            highlight=False,
        )

    _run(go())


@approvals_app.command("key")
@friendly
def approvals_key() -> None:
    """Print the approving service's public key (hex), for workers' approval_trusted_keys."""
    from tether.governance.signing import key_id_of, public_hex
    from tether.runtime.approvals import signing_key

    public = public_hex(signing_key(_settings()))
    out.print(public, markup=False, highlight=False, soft_wrap=True)
    err.print(
        f"key id {key_id_of(public)}; workers trust it via TETHER_APPROVAL_TRUSTED_KEYS",
        markup=False,
        highlight=False,
    )


@approvals_app.command("approve")
@friendly
def approvals_approve(
    request_id: str,
    as_user: Annotated[str, typer.Option("--as", help="The approver, e.g. user:alice.")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Approve a pending request."""
    _decide(request_id, as_user, True, comment)


@approvals_app.command("reject")
@friendly
def approvals_reject(
    request_id: str,
    as_user: Annotated[str, typer.Option("--as", help="The approver, e.g. user:alice.")],
    reason: Annotated[str, typer.Option(help="Why; the agent is told.")] = "",
) -> None:
    """Reject a pending request."""
    _decide(request_id, as_user, False, reason)


# -- policy -----------------------------------------------------------------------------


@policy_app.command("explain")
@friendly
def policy_explain(
    agent: Annotated[str, typer.Option(help="e.g. agent:ap-clerk")],
    action: Annotated[str, typer.Option(help="e.g. payments.pay")],
    resource: Annotated[str, typer.Option(help="e.g. vendor/acme")],
    context: Annotated[str, typer.Option(help="Request context as JSON.")] = "{}",
    policy: Annotated[Path | None, typer.Option(help="Policy CSV (default: configured).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the tier, the deciding rule and the policy version for one request."""
    settings = _settings()
    engine = configured_engine(settings, policy)
    try:
        ctx = json.loads(context)
    except json.JSONDecodeError as exc:
        raise TetherError(f"--context {context!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(ctx, dict):
        raise TetherError(f"--context {context!r} must be a JSON object, like '{{\"amount\": 10}}'")
    decision = engine.decide(
        DecisionRequest(agent=agent, action=action, resource=resource, context=ctx)
    )
    if as_json:
        out.print_json(decision.model_dump_json())
        return
    out.print(
        f"tier: {decision.tier.value}\nrule: {decision.rule}\n"
        f"policy: {decision.policy_version}\nwhy: {decision.reason}",
        markup=False,
        highlight=False,
    )


@policy_app.command("check")
@friendly
def policy_check(path: Path) -> None:
    """Load a policy file and report its rules and version, or the first error."""
    settings = _settings()
    engine = PolicyEngine.from_files(settings.policy_model, path)
    out.print(
        f"{path}: {len(engine.document.rules)} rules, version {engine.version}",
        markup=False,
        highlight=False,
    )


def main() -> None:
    """The `tether` command: run it, then leave without the interpreter's finalisation.

    The Temporal SDK's native threads may still call into Python while the interpreter
    shuts down, which now and then aborts an exiting process (rc 134) after its work was
    done. So, like the worker, the command flushes its output and ends the process itself
    with the command's own exit code.
    """
    code = 0
    try:
        app()  # standalone: usage errors print their own message and raise SystemExit
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
