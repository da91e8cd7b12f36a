"""`tether approvals list | key | approve | reject`: the approving service on the command line.

A decision goes through `decide_request`, the same path as the console's: the store
checks who may decide, the decision is signed with `approval_key` and sent to the
workflow, and the ledger records it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli.common import _run, _settings, _stores, emit_table, err, friendly, out
from tether.core.config import Settings
from tether.errors import ConnectError
from tether.governance.store import ApprovalStore
from tether.verification.ledger import Ledger

approvals_app = typer.Typer(help="Decide pending approval requests.", no_args_is_help=True)


@approvals_app.command("list")
@friendly
def approvals_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List open approval requests (closing those whose run has ended)."""
    settings = _settings()
    ledger, store = _stores(settings)
    _run(_close_ended(settings, store, ledger))
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


async def _close_ended(settings: Settings, store: ApprovalStore, ledger: Ledger) -> None:
    from tether.runtime.client import connect
    from tether.runtime.sweep import close_ended

    try:
        client = await connect(settings)
    except ConnectError:  # no Temporal here: the index is still worth reading
        return
    for closed in await close_ended(client, store, ledger):
        err.print(f"{closed.request_id}: closed, its run {closed.workflow_id!r} has ended")


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
        out.print(f"{outcome.request_id}: {outcome.status.value} by {outcome.approver}")

    _run(go())


@approvals_app.command("key")
@friendly
def approvals_key() -> None:
    """Print the approving service's public key (hex), for workers' approval_trusted_keys."""
    from tether.governance.signing import key_id_of, public_hex
    from tether.runtime.approvals import signing_key

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
