"""The approving service: the one path by which a person's decision reaches a workflow.

The CLI, the demo and (later) the console call `decide_request`. The workflow's update
validator is the authority; a refused attempt is recorded in the ledger here, because
Temporal keeps no trace of a rejected update.
"""

from __future__ import annotations

import uuid

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.governance import approval_event
from governance.approvals import ApprovalDecision, ApprovalOutcome, PendingApproval
from governance.errors import ApprovalError
from governance.store import ApprovalStore
from verification.ledger import Ledger, LedgerEvent


def _refusal(pending: PendingApproval, decision: ApprovalDecision, why: str) -> LedgerEvent:
    return approval_event(
        pending,
        "approval.refused",
        "refused",
        decision.approver,
        {"why": why, "via": "update"},
        key_suffix=f".{uuid.uuid4().hex}",
    )


async def decide_request(
    client: Client,
    store: ApprovalStore,
    ledger: Ledger,
    request_id: str,
    *,
    approver: str,
    approve: bool,
    comment: str = "",
) -> ApprovalOutcome:
    """Send one approval decision; raise ApprovalError (recorded) when it is refused."""
    pending = store.get(request_id)
    decision = ApprovalDecision(
        request_id=request_id, approver=approver, approve=approve, comment=comment
    )
    handle = client.get_workflow_handle(pending.workflow_id, run_id=pending.run_id)
    try:
        outcome: ApprovalOutcome = await handle.execute_update(
            "decide", decision, result_type=ApprovalOutcome
        )
        return outcome
    except WorkflowUpdateFailedError as exc:
        why = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
    except RPCError as exc:
        why = (
            f"workflow {pending.workflow_id!r} no longer accepts decisions ({exc.message}); "
            f"request {request_id!r} is {pending.status.value}"
        )
    ledger.append(_refusal(pending, decision, why))
    raise ApprovalError(why)
