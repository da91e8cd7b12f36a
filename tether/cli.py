"""`tether`: the command line. Thin: every command calls the library the tests call.

Errors Tether raises on purpose print as one line naming the value and what to do, and
exit 2; a check that fails (audit verify) exits 1.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, get_type_hints

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table
from temporalio import workflow as temporal_workflow

from console.cli import console_app
from governance.errors import TetherError
from governance.policy import PolicyEngine
from governance.types import DecisionRequest
from tether.cli_audit import audit_app
from tether.cli_common import _run, _settings, _stores, err, friendly, out
from tether.cli_kill import budget_app, kill_app
from tether.cli_policy import add_policy_commands, configured_engine
from tether.cli_review import review_app

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

# -- stack ------------------------------------------------------------------------------


@app.command()
@friendly
def dev() -> None:
    """Start the Temporal dev server (state under .tether/), a worker and the console."""
    from tether.dev import run_dev

    raise typer.Exit(run_dev(_settings(), out))


@app.command()
@friendly
def worker() -> None:
    """Run a worker in the foreground (the same as `python worker.py`)."""
    import worker as worker_module

    _run(worker_module.main())


@app.command()
@friendly
def demo() -> None:
    """Run the accounts-payable scenario on embedded defaults and verify the ledger."""
    from tether.demo import run_demo

    raise typer.Exit(_run(run_demo(_settings(), out)))


def _workflow_inputs() -> dict[str, type[BaseModel]]:
    from workflows import ALL_WORKFLOWS

    found: dict[str, type[BaseModel]] = {}
    for cls in ALL_WORKFLOWS:
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
    from tether.client import connect, start_task

    inputs = _workflow_inputs()
    if workflow not in inputs:
        raise TetherError(
            f"unknown workflow {workflow!r}; known workflows: {', '.join(sorted(inputs))}"
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
    settings = _settings()

    async def go() -> None:
        client = await connect(settings)
        handle = await start_task(
            client,
            workflow,
            arg,
            workflow_id=workflow_id or f"{workflow}-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            started_by=as_user,
            result_type=dict,
            tenant=tenant,
        )
        out.print(f"started {workflow} as {handle.id}")
        if wait:
            out.print_json(data=await handle.result())

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
    table = Table(title=f"{len(pending)} open approval request(s)", title_justify="left")
    for col in (
        "id",
        "action",
        "resource",
        "arguments",
        "why",
        "asked by",
        "approvers",
        "deadline",
    ):
        table.add_column(col)
    for p in pending:
        table.add_row(
            p.request_id,
            p.action,
            p.resource,
            p.args_summary[:60],
            p.rule,
            f"{p.agent} for {p.requested_by}",
            p.approver_role,
            p.deadline.isoformat(timespec="seconds") if p.deadline else "-",
        )
    out.print(table)


def _decide(request_id: str, as_user: str, approve: bool, comment: str) -> None:
    from tether.approvals import decide_request, signing_key
    from tether.client import connect

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
        out.print(f"{outcome.request_id}: {outcome.status.value} by {outcome.approver}")

    _run(go())


@approvals_app.command("key")
@friendly
def approvals_key() -> None:
    """Print the approving service's public key (hex), for workers' approval_trusted_keys."""
    from governance.signing import key_id_of, public_hex
    from tether.approvals import signing_key

    public = public_hex(signing_key(_settings()))
    out.print(public)
    err.print(f"key id {key_id_of(public)}; workers trust it via TETHER_APPROVAL_TRUSTED_KEYS")


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
        highlight=False,
    )


@policy_app.command("check")
@friendly
def policy_check(path: Path) -> None:
    """Load a policy file and report its rules and version, or the first error."""
    settings = _settings()
    engine = PolicyEngine.from_files(settings.policy_model, path)
    out.print(f"{path}: {len(engine.document.rules)} rules, version {engine.version}")


if __name__ == "__main__":
    app()
