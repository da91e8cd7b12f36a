"""The approving service: the one path by which a person's decision reaches a workflow.

The CLI, the demo and the console call `decide_request`. It signs the decision with the
service's Ed25519 key (`approval_key`), bound to the request's step, argument digest and
policy version, and sends it as the `decide` update. The workflow is the authority: it
verifies the signature and every rule, and records each refused attempt in the ledger
itself. This side records only what the workflow cannot: a decision that never reached
it (the run has ended).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import JsonValue
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from tether.activities.governance import approval_event
from tether.core.config import Settings
from tether.errors import ApprovalError, InvalidNameError
from tether.governance.approvals import ApprovalDecision, ApprovalOutcome, ApprovalStatus
from tether.governance.names import canonical_identity
from tether.governance.signing import public_hex, sign_decision
from tether.governance.store import ApprovalStore
from tether.runtime.sweep import close_one, run_status
from tether.verification.checkpoint import load_or_create_key
from tether.verification.events import digest
from tether.verification.ledger import Ledger


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The approving service's key (created on first use, mode 0600)."""
    return load_or_create_key(settings.approval_key)


def trusted_keys(settings: Settings) -> list[str]:
    """Public keys whose approvals workers accept: configured, else our own key's."""
    if settings.approval_trusted_keys:
        return list(settings.approval_trusted_keys)
    return [public_hex(signing_key(settings))]


async def decide_request(
    client: Client,
    store: ApprovalStore,
    ledger: Ledger,
    request_id: str,
    *,
    approver: str,
    approve: bool,
    key: Ed25519PrivateKey,
    comment: str = "",
    edits: dict[str, JsonValue] | None = None,
) -> ApprovalOutcome:
    """Sign and send one decision; raise ApprovalError naming why when it is refused.

    `edits` (approve only) changes arguments the tool marks editable; the signed decision
    binds the digest of the edited arguments, and the workflow decides them anew.
    """
    try:  # `user:Bob` is `user:bob`: one person, one name (`governance.names`)
        approver = canonical_identity(approver, "approver")
    except InvalidNameError as exc:
        raise ApprovalError(f"{exc}; decide as e.g. --as user:alice") from None
    pending = store.get(request_id)
    edited = digest({**pending.args, **edits}) if edits else ""
    decision = sign_decision(
        ApprovalDecision.for_request(
            pending,
            approver,
            approve,
            comment,
            nonce=uuid.uuid4().hex,
            edits=edits,
            edited_digest=edited,
        ).model_copy(update={"issued_at": datetime.now(UTC).isoformat(timespec="seconds")}),
        key,
    )
    handle = client.get_workflow_handle(pending.workflow_id, run_id=pending.run_id)
    try:
        outcome: ApprovalOutcome = await handle.execute_update(
            "decide", decision, result_type=ApprovalOutcome
        )
        return outcome
    except WorkflowUpdateFailedError as exc:
        # The workflow recorded this refusal itself.
        cause = exc.cause
        raise ApprovalError(str(getattr(cause, "message", cause))) from None
    except RPCError as exc:
        status = pending.status.value
        with contextlib.suppress(RPCError):
            ended = await run_status(client, pending)
            if ended != "RUNNING" and pending.status is ApprovalStatus.PENDING:
                close_one(store, ledger, pending, ended)  # its run will never decide it
                status = ApprovalStatus.CLOSED.value
        why = (
            f"workflow {pending.workflow_id!r} no longer accepts decisions ({exc.message}); "
            f"request {request_id!r} is {status}"
        )
    ledger.append(
        approval_event(
            pending,
            "approval.refused",
            "refused",
            approver,
            {"request_id": request_id, "why": why, "via": "update"},
            key_suffix=f".{uuid.uuid4().hex}",
        )
    )
    raise ApprovalError(why)
